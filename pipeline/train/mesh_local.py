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
until the epoch ends). Given a :class:`Beyond`, a segment goes on past its epoch's end when the
stopping rule lets it (:mod:`.run_ahead`), each rank building the next epoch's schedules itself.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from .local_steps import fold_local, replica_local_steps
from .mesh_epoch import MeshSpec, run_segment, segment_rounds, validation_shares
from .run_ahead import RankEpochs, RunAhead, add_round
from .schedule import Schedule, epoch_plan
from .tasks import Partial, check_finite

__all__ = ["Beyond", "Outer", "apply_average", "mesh_local_epoch", "run_mesh_local"]


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


class Beyond(NamedTuple):
    """What a segment needs to run past its epoch's end (:mod:`.run_ahead`)."""

    run: RunAhead
    epoch: int  # the epoch the segment starts in
    so_far: tuple[float, int]  # (Σ round loss x rows, rows) of that epoch's earlier rounds
    n_replicas: int
    per_round: int  # inner steps per replica per round
    steps: int  # steps per epoch
    step_rows: list[int]  # global rows of each step


class LocalEpoch(NamedTuple):
    """A rank's end of a segment: its replicas' states; rank 0 also the parameters, the outer
    state, each round's (loss sum, rows, timings, seconds), and for every epoch that ended in
    the segment, (rounds of the segment done by then, the parameters and validation score
    then)."""

    states: dict[int, Any]
    params: Any
    outer_state: Any
    metrics: list[tuple[float, int, tuple[Any, ...], float]] | None
    ends: list[tuple[int, Any, float | None]] | None = None


def mesh_local_epoch(spec: MeshSpec, replicas: list[tuple[int, list[Any], list[int]]],
                     scoring: list[tuple[int, Any]], step_args: tuple[Any, ...], outer: Outer,
                     params: Any,
                     states: dict[int, Any], outer_state: Any,
                     schedules: list[dict[int, Schedule]], steps: int, seed: int, shuffle: bool,
                     split_every: int, round_no: int, beyond: Beyond | None = None
                     ) -> LocalEpoch:
    """Rounds of a local-SGD epoch for this worker's ``replicas`` (``(replica, blocks, block
    indices)``), until the segment ends or ``schedules`` do; ``schedules[k][r]``: replica
    ``r``'s inner steps in round ``k``. With ``beyond``, the next epochs' rounds follow until
    the segment ends, the stopping rule stops the run or its epochs are done; ``scoring``: this
    rank's validation blocks, ``(position, block)``, scored at each epoch's end."""
    model, optimizer, alpha, learning_rate = step_args
    states = dict(states)
    mine = [r for r, _, _ in replicas]
    metrics: list[tuple[float, int, tuple[Any, ...], float]] = []
    at = RankEpochs(beyond and beyond.run, beyond.epoch if beyond else 0,
                    beyond.so_far if beyond else (0.0, 0))
    began = time.perf_counter()
    with spec.open() as mesh:
        while True:
            done, stop = 0, False
            for schedule in schedules:
                t0 = time.perf_counter()
                mine_parts = []
                for r, blocks, indices in replicas:
                    ((_, (part, state)),) = replica_local_steps(
                        blocks, indices, r, params, states.get(r), model, optimizer, alpha,
                        learning_rate, schedule[r], steps, seed, shuffle)
                    states[r] = state
                    mine_parts.append((r, (part, None)))
                gathered, stop = spec.exchange(mesh, mine_parts, began)
                part = fold_local(gathered, split_every).partial
                number = round_no + len(metrics)
                if part.n == 0:
                    raise RuntimeError(f"round {number + 1} trained on no rows")
                check_finite(part, number, "loss or parameter update")
                params, outer_state = apply_average(part, params, outer_state, outer)
                metrics.append((part.loss, part.n, part.timings, time.perf_counter() - t0))
                at.total = add_round(at.total, part)
                done += 1
                if stop:
                    break
            if beyond is None or done < len(schedules):
                break
            if not at.end_epoch(mesh, scoring, len(metrics), params, model, split_every, stop):
                break
            learning_rate = at.rate().times(beyond.n_replicas)
            plan, _ = epoch_plan(at.epoch, beyond.n_replicas, beyond.per_round, beyond.steps,
                                 beyond.step_rows)
            schedules = [{r: s[r] for r in mine} for s in plan]
    if spec.rank:
        return LocalEpoch(states, None, None, None)
    return LocalEpoch(states, params, outer_state, metrics, at.ends)


def run_mesh_local(rounds: Any, params: Any, local_states: list[Any], outer_state: Any,
                   step_args: tuple[Any, ...], outer: Outer, units: list[list[int]],
                   schedules: list[list[Schedule]], epoch: int, steps: int, round_no: int,
                   seed: int, shuffle: bool, beyond: Beyond | None = None
                   ) -> tuple[Any, list[Any], Any, list[tuple[Partial, float]],
                              list[tuple[int, Any, float | None]]]:
    """One segment from the first of the rounds ``schedules`` (per round, per replica):
    ``(params, local_states, outer_state, [(round partial without its vector, seconds),
    ...], epoch ends)`` after its last round; the epoch ends (with ``beyond``) are ``(rounds
    of the segment done by then, parameters then, validation score)`` for each epoch that
    ended in it (the ranks score the validation blocks when ``beyond`` has them)."""
    started = time.perf_counter()
    futures = rounds.block_keys
    groups, workers = rounds.groups_and_workers(futures)
    holder = {i: w for g, w in zip(groups, workers, strict=True) for i in g}
    ranks = sorted({holder[u[0]] for u in units})  # a replica trains where its first block is
    mine = [[r for r, u in enumerate(units) if holder[u[0]] == w] for w in ranks]
    scoring = validation_shares(rounds, beyond, ranks)
    shipped = beyond and beyond._replace(run=beyond.run.shipped())
    ends = run_segment(
        rounds, mesh_local_epoch, ranks,
        lambda j: ([(r, [futures[i] for i in units[r]], units[r]) for r in mine[j]],
                   scoring[j], (rounds.model, *step_args), outer, params,
                   {r: local_states[r] for r in mine[j]}, outer_state,
                   [{r: s[r] for r in mine[j]} for s in schedules], steps, seed, shuffle,
                   rounds.split_every, round_no, shipped),
        f"epoch {epoch}, rounds from {round_no + 1} (mesh)")
    out = segment_rounds(rounds, ends[0].metrics, started)
    states = list(local_states)
    for end in ends:
        for r, state in end.states.items():
            states[r] = state
    return ends[0].params, states, ends[0].outer_state, out, ends[0].ends or []
