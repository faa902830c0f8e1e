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

:func:`run_mesh_local` is the client's side of a segment (see :mod:`.mesh_epoch`); the round
schedules are fixed in advance (``balance="none"``: every replica takes ``local_steps`` per round
until the epoch ends).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from .local_steps import fold_local, replica_local_steps
from .mesh_epoch import MeshSpec, run_segment, segment_rounds
from .tasks import Partial, check_finite

__all__ = ["Outer", "apply_average", "mesh_local_epoch", "run_mesh_local"]

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
    """A rank's end of a segment: its replicas' states; rank 0 also the parameters, the outer
    state and each round's (loss sum, rows, timings, seconds)."""

    states: dict[int, Any]
    params: Any
    outer_state: Any
    metrics: list[tuple[float, int, tuple[Any, ...], float]] | None


def mesh_local_epoch(spec: MeshSpec, replicas: list[tuple[int, list[Any], list[int]]],
                     step_args: tuple[Any, ...], outer: Outer, params: Any,
                     states: dict[int, Any], outer_state: Any,
                     schedules: list[dict[int, Schedule]], steps: int, seed: int, shuffle: bool,
                     split_every: int, round_no: int) -> LocalEpoch:
    """Rounds of a local-SGD epoch for this worker's ``replicas`` (``(replica, blocks, block
    indices)``), until the segment ends or ``schedules`` do; ``schedules[k][r]``: replica
    ``r``'s inner steps in round ``k``."""
    model, optimizer, alpha, learning_rate = step_args
    states = dict(states)
    metrics = []
    began = time.perf_counter()
    with spec.open() as mesh:
        for k, schedule in enumerate(schedules):
            t0 = time.perf_counter()
            mine = []
            for r, blocks, indices in replicas:
                ((_, (part, state)),) = replica_local_steps(
                    blocks, indices, r, params, states.get(r), model, optimizer, alpha,
                    learning_rate, schedule[r], steps, seed, shuffle)
                states[r] = state
                mine.append((r, (part, None)))
            gathered, stop = spec.exchange(mesh, mine, began)
            part = fold_local(gathered, split_every).partial
            if part.n == 0:
                raise RuntimeError(f"round {round_no + k + 1} trained on no rows")
            check_finite(part, round_no + k, "loss or parameter update")
            params, outer_state = apply_average(part, params, outer_state, outer)
            metrics.append((part.loss, part.n, part.timings, time.perf_counter() - t0))
            if stop:
                break
    if spec.rank:
        return LocalEpoch(states, None, None, None)
    return LocalEpoch(states, params, outer_state, metrics)


def run_mesh_local(rounds: Any, params: Any, local_states: list[Any], outer_state: Any,
                   step_args: tuple[Any, ...], outer: Outer, units: list[list[int]],
                   schedules: list[list[Schedule]], epoch: int, steps: int, round_no: int,
                   seed: int, shuffle: bool
                   ) -> tuple[Any, list[Any], Any, list[tuple[Partial, float]]]:
    """One segment from the first of the rounds ``schedules`` (per round, per replica):
    ``(params, local_states, outer_state, [(round partial without its vector, seconds),
    ...])`` after its last round."""
    started = time.perf_counter()
    futures = rounds.block_keys
    groups, workers = rounds.groups_and_workers(futures)
    holder = {i: w for g, w in zip(groups, workers, strict=True) for i in g}
    ranks = sorted({holder[u[0]] for u in units})  # a replica trains where its first block is
    mine = [[r for r, u in enumerate(units) if holder[u[0]] == w] for w in ranks]
    ends = run_segment(
        rounds, mesh_local_epoch, ranks,
        lambda j: ([(r, [futures[i] for i in units[r]], units[r]) for r in mine[j]],
                   (rounds.model, *step_args), outer, params,
                   {r: local_states[r] for r in mine[j]}, outer_state,
                   [{r: s[r] for r in mine[j]} for s in schedules], steps, seed, shuffle,
                   rounds.split_every, round_no),
        f"epoch {epoch}, rounds from {round_no + 1} (mesh)")
    out = segment_rounds(rounds, ends[0].metrics, started)
    states = list(local_states)
    for end in ends:
        for r, state in end.states.items():
            states[r] = state
    return ends[0].params, states, ends[0].outer_state, out
