"""A local-SGD epoch over replicas as one task per worker, averaged over a socket mesh.

``mesh_local_epoch`` runs on each worker holding replicas (``LocalSGD`` with ``replicas``, each
replica's blocks colocated) and does, round after round, what a round through Dask does
(:meth:`~pipeline.train.rounds.Rounds.replica_steps`, then the client's outer update): every
replica here runs its inner steps (``replica_local_steps``), the replicas' partials are
all-gathered over the mesh (:mod:`pipeline.train.mesh`) and folded by replica position
(``fold_local``), and every worker applies the same averaged change (:func:`apply_average`, the
function the client runs otherwise) to its own copy of the parameters. So the parameters have
the same bits as round by round; the replicas' optimizer states stay on their workers between
rounds instead of travelling to the client and back, and a round costs its compute plus a direct
exchange instead of a graph submission and two scheduler hops.

:func:`run_mesh_local_epoch` is the client's side; the round schedules are fixed in advance
(``balance="none"``: every replica takes ``local_steps`` per round until the epoch ends).
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import dask
from dask.utils import parse_timedelta

from .local_steps import fold_local, replica_local_steps
from .mesh import Mesh, listen
from .mesh_epoch import cancelled_on_error
from .tasks import Partial, check_finite

__all__ = ["apply_average", "mesh_local_epoch", "run_mesh_local_epoch"]

Schedule = tuple[tuple[int, int, int], ...]


class Outer(NamedTuple):
    """How the averaged change is applied (``LocalSGD``'s outer optimizer)."""

    optimizer: Any
    learning_rate: float


def apply_average(part: Partial, params: Any, outer_state: Any, outer: Outer) -> tuple[Any, Any]:
    """The parameters after the rows-weighted average change of ``part``, and the outer
    optimizer's state (Nesterov momentum, when it has one)."""
    from .. import optim
    from ..backend import to_host

    m = max(part.n, 1)
    avg_delta = (to_host(part.vector) / float(m)).astype(params.dtype)
    if outer_state is None and outer.learning_rate == 1.0:
        return params + avg_delta, None
    if outer_state is None:
        outer_state = optim.state_to_host(outer.optimizer.init(params))
    updates, outer_state = outer.optimizer.update(-avg_delta, outer_state, params)
    return optim.apply_updates(params, updates), outer_state


class LocalEpoch(NamedTuple):
    """A rank's end of the epoch: its replicas' states; rank 0 also the parameters, the outer
    state and each round's (loss sum, rows, timings, seconds)."""

    states: dict[int, Any]
    params: Any
    outer_state: Any
    metrics: list[tuple[float, int, tuple[Any, ...], float]] | None


def mesh_local_epoch(replicas: list[tuple[int, list[Any], list[int]]], rank: int,
                     addresses: list[tuple[str, int] | None], key: str, token: bytes,
                     step_args: tuple[Any, ...], outer: Outer, params: Any, states: dict[int, Any],
                     outer_state: Any, schedules: list[dict[int, Schedule]], steps: int,
                     seed: int, shuffle: bool, split_every: int, round_no: int,
                     timeout: float) -> LocalEpoch:
    """Every round of a local-SGD epoch for this worker's ``replicas`` (``(replica, blocks,
    block indices)``), as rank ``rank`` of the mesh; ``schedules[k][r]``: replica ``r``'s inner
    steps in round ``k``."""
    model, optimizer, alpha, learning_rate = step_args
    states = dict(states)
    metrics = []
    with Mesh(key, rank, addresses, token, timeout) as mesh:
        for k, schedule in enumerate(schedules):
            began = time.perf_counter()
            mine = []
            for r, blocks, indices in replicas:
                ((_, (part, state)),) = replica_local_steps(
                    blocks, indices, r, params, states.get(r), model, optimizer, alpha,
                    learning_rate, schedule[r], steps, seed, shuffle)
                states[r] = state
                mine.append((r, (part, None)))
            part = fold_local(mesh.allgather(mine), split_every).partial
            if part.n == 0:
                raise RuntimeError(f"round {round_no + k + 1} trained on no rows")
            check_finite(part, round_no + k, "loss or parameter update")
            params, outer_state = apply_average(part, params, outer_state, outer)
            metrics.append((part.loss, part.n, part.timings, time.perf_counter() - began))
    if rank:
        return LocalEpoch(states, None, None, None)
    return LocalEpoch(states, params, outer_state, metrics)


def run_mesh_local_epoch(rounds: Any, params: Any, local_states: list[Any], outer_state: Any,
                         step_args: tuple[Any, ...], outer: Outer, units: list[list[int]],
                         schedules: list[list[Schedule]], epoch: int, steps: int,
                         round_no: int, seed: int, shuffle: bool
                         ) -> tuple[Any, list[Any], Any, list[tuple[Partial, float]]]:
    """The client's side: ``(params, local_states, outer_state, [(round partial without its
    vector, seconds), ...])`` after the rounds ``schedules`` (per round, per replica)."""
    client = rounds.client
    started = time.perf_counter()
    futures = rounds.block_keys
    groups, workers = rounds.groups_and_workers(futures)
    holder = {i: w for g, w in zip(groups, workers, strict=True) for i in g}
    ranks = sorted({holder[u[0]] for u in units})  # a replica trains where its first block is
    token = rounds._token("mesh-local", epoch)
    key = f"mesh-{token}"
    secret = os.urandom(16)
    timeout = parse_timedelta(dask.config.get("pipeline.train.mesh-timeout", "300s"))
    listening = [client.submit(listen, key, key=f"mesh_listen-{token}-{j}", workers=[w],
                               allow_other_workers=False, pure=False)
                 for j, w in enumerate(ranks[:-1])]
    with cancelled_on_error(client, listening, key, ranks):
        addresses: list[Any] = [*(rounds.watchdog.gather(listening, "the mesh's listeners",
                                                         needs=ranks)
                                  if listening else []), None]
    tasks = []
    for j, w in enumerate(ranks):
        mine = [r for r, u in enumerate(units) if holder[u[0]] == w]
        tasks.append(client.submit(
            mesh_local_epoch, [(r, [futures[i] for i in units[r]], units[r]) for r in mine], j,
            addresses, key, secret, (rounds.model, *step_args), outer, params,
            {r: local_states[r] for r in mine}, outer_state,
            [{r: s[r] for r in mine} for s in schedules], steps, seed, shuffle,
            rounds.split_every, round_no, timeout, key=f"mesh_local_epoch-{token}-{j}",
            workers=[w], allow_other_workers=False, pure=False))
    with cancelled_on_error(client, tasks + listening, key, ranks):
        rounds.watchdog.wait(tasks, f"epoch {epoch} (mesh)", first_error=True, needs=ranks)
        ends = rounds.watchdog.gather(tasks, f"epoch {epoch} (mesh)")
    rounds.round += len(schedules)
    out = [(Partial(loss, None, n, timings), seconds)
           for loss, n, timings, seconds in ends[0].metrics]
    rounds.observe_epoch([out[0][0]], started)  # blocks rebuilt elsewhere: a worker was lost
    states = list(local_states)
    for end in ends:
        for r, state in end.states.items():
            states[r] = state
    return ends[0].params, states, ends[0].outer_state, out
