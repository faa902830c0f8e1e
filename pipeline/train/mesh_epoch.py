"""Rounds on the mesh: one task per worker runs many rounds, exchanging partials directly.

:func:`run_segment` is the client's side of every mesh run: listeners on the workers (opened
by an earlier segment's ranks, :mod:`.mesh_spares`, or by tasks now), one task per rank pinned
to the worker holding its blocks (the listeners' addresses are its inputs, so the client
submits both at once and waits once), the first error (a peer's
:class:`~.mesh.MeshBroken` when a worker dies) raised at once with the mesh aborted on the
survivors. A run is a *segment* of an epoch: rank 0 ends it after the first round that finishes
past ``pipeline.train.mesh-segment`` (default 2 s; its decision travels in that round's
all-gather, so every rank stops after the same round), and the client publishes the segment's
round events before starting the next one, so the dashboard follows a long epoch; a rendezvous
costs a few tens of ms. A failure redoes the epoch through Dask from the last segment's end.

``mesh_epoch`` is the exact-gradient segment: round after round, what the pipelined rounds of
:mod:`pipeline.train.ahead` do one task at a time (the partials of its blocks at the current
parameters, complete subtrees folded; an all-gather of every worker's partials; the fold of all
of them by the fixed tree of block positions; the optimizer step on its own replica). The
functions and their order are those of ``step_and_partition_grads``, so every replica has the
bits of a pipelined epoch, a one-round-at-a-time epoch, or one process (``tests/test_mesh.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import dask
from dask.utils import parse_timedelta

from .ahead import RoundOut, StepArgs, _step, step_and_partition_grads
from .mesh import (
    Mesh,
    MeshBroken,
    MeshUnreachable,
    abort,
    leave_thread_pool,
    listen,
    mesh_capable,
)
from .mesh_spares import SPARES, Spare, open_spare, spare_key
from .recovery import DISRUPTIONS
from .run_ahead import RankEpochs, RunAhead, add_mean
from .tasks import Partial, StepState

__all__ = ["GradientBeyond", "MeshBroken", "MeshSpec", "mesh_epoch", "mesh_usable",
           "note_broken", "run_mesh_gradient", "run_segment", "segment_rounds",
           "validation_shares"]

Metrics = list[tuple[float, int, tuple[Any, ...], float]]  # per round: loss, rows, timings, s


class MeshSpec(NamedTuple):
    """What a rank needs to join its segment's mesh and to know when the segment ends."""

    rank: int
    addresses: list[tuple[str, int] | None]
    key: str
    token: bytes
    timeout: float  # seconds to wait for a silent peer
    segment: float  # seconds: rank 0 ends the segment after the round that passes it
    connect_timeout: float  # seconds to open a connection to a peer's (open) listener
    listener: str | None = None  # the key of this rank's listener if not ``key`` (a spare)
    spare: str | None = None  # the key of a listener to open at the end for a later segment

    def open(self) -> Mesh:
        """This rank's connections, the task's worker thread slot given up first (see
        :func:`~.mesh.leave_thread_pool`)."""
        leave_thread_pool()
        return Mesh(self.key, self.rank, self.addresses, self.token, self.timeout,
                    self.connect_timeout, listener=self.listener)

    def exchange(self, mesh: Mesh, value: Any, began: float) -> tuple[list[Any], bool]:
        """Every rank's ``value`` and whether this round ends the segment (rank 0's say)."""
        stop = self.rank == 0 and time.perf_counter() - began >= self.segment
        got = mesh.allgather((stop, value))
        return [v for _, v in got], bool(got[0][0])


class MeshResult(NamedTuple):
    """Rank 0's end of a segment (the other ranks hold the same bits and return ``None``s);
    ``ends``: for every epoch that ended in the segment, (its rounds done by then, the
    parameters and the validation score then)."""

    state: StepState | None
    metrics: Metrics | None
    ends: list[tuple[int, Any, float | None]] | None = None


class GradientBeyond(NamedTuple):
    """What an exact-gradient segment needs to run past its epoch's end (:mod:`.run_ahead`)."""

    run: RunAhead
    so_far: tuple[float, int]  # (Σ round loss x rows, rows) of the epoch's earlier rounds


def mesh_epoch(spec: MeshSpec, blocks: list[Any], scoring: list[tuple[int, Any]],
               indices: list[int], args: StepArgs, start: StepState, first: int, round_no: int,
               epoch: int, steps: int, seed: int, shuffle: bool,
               beyond: GradientBeyond | None = None) -> MeshResult:
    """Rounds ``first, first + 1, ...`` of an exact-gradient epoch on this worker's ``blocks``
    (positions ``indices``) from ``start``, until the segment ends or the epoch does; with
    ``beyond``, the next epochs' rounds follow until the segment ends, the stopping rule stops
    the run or its epochs are done (``scoring``: this rank's validation blocks, ``(position,
    block)``, scored at each epoch's end). ``round_no``: the number of the epoch's first
    round."""
    state, metrics = start, []
    at = RankEpochs(beyond and beyond.run, epoch, beyond.so_far if beyond else (0.0, 0))
    began = time.perf_counter()
    with spec.open() as mesh:
        while True:
            finished, stop = False, False
            for step in range(first, steps):
                t0 = time.perf_counter()
                out = step_and_partition_grads(state, spec.rank, args, round_no + step, blocks,
                                               indices, epoch, step, steps, seed, shuffle)
                packs, stop = spec.exchange(mesh, out.packed, began)
                outs = [RoundOut(state, p) if j == spec.rank else RoundOut(None, p)
                        for j, p in enumerate(packs)]
                state = _step(outs, spec.rank, args, round_no + step)
                metrics.append((state.round_loss, state.n, state.timings,
                                time.perf_counter() - t0))
                at.total = add_mean(at.total, state.round_loss, state.n)
                finished = step == steps - 1
                if stop:
                    break
            if beyond is None or not finished:
                break
            if not at.end_epoch(mesh, scoring, len(metrics), state.params, args.model,
                                args.split_every, stop):
                break
            epoch, round_no, first = at.epoch, round_no + steps, 0
            args = args._replace(learning_rate=at.rate())
    return MeshResult(state, metrics, at.ends) if spec.rank == 0 else MeshResult(None, None)


@contextlib.contextmanager
def _cancelled_on_error(client: Any, futures: list[Any], key: str,
                        workers: list[str]) -> Iterator[None]:
    """Cancel a segment's ``futures`` when waiting for them fails, and break the mesh ``key``
    on the workers still there (a rank may be waiting for a peer whose worker died before its
    task started). A disruption is raised as a :class:`MeshBroken` naming the mesh's
    ``workers`` that are gone (a peer's end-of-file is all its rank saw)."""
    try:
        yield
    except BaseException as exc:
        client.cancel(futures)
        from ..cluster import workers_info

        alive = frozenset(workers_info(client))
        with contextlib.suppress(Exception):
            client.run(abort, key, workers=sorted(alive & frozenset(workers)))
        if not isinstance(exc, (MeshBroken, *DISRUPTIONS)):
            raise
        gone = frozenset(workers) - alive
        broken = MeshBroken(f"{type(exc).__name__}: {exc}; worker(s) "
                            f"{', '.join(sorted(gone))} lost" if gone else str(exc))
        broken.lost = gone
        raise broken from exc


def mesh_usable(workers: list[str], rounds: Any = None) -> bool:
    """Whether an epoch over blocks held by ``workers`` may run on a mesh: plain-TCP workers,
    ``pipeline.train.mesh`` (dask config, default True) not turned off, and no mesh of this
    fit (``rounds``) broken without a worker lost (see :func:`note_broken`)."""
    return bool(workers) and bool(dask.config.get("pipeline.train.mesh", True)) and all(
        mesh_capable(w) for w in workers) and not getattr(rounds, "mesh_off", False)


def note_broken(rounds: Any, exc: BaseException, action: str) -> None:
    """A mesh segment failed: the caller redoes its rounds through Dask. When no worker was
    lost (a connection the network would not make, a peer that fell silent), the mesh is off
    for the rest of the fit: its next segments would most likely fail the same way, each after
    a timeout."""
    lost = getattr(exc, "lost", frozenset())
    if not lost:
        rounds.mesh_off = True
        action += "; the mesh is off for the rest of this fit"
    rounds.note_fallback(exc, action=action)


class Ranked(NamedTuple):
    """A rank's result and the listener it opened for a later segment (:mod:`.mesh_spares`)."""

    result: Any
    spare: Spare | None


def _rank(task: Callable[..., Any], spec: MeshSpec, addresses: list[tuple[str, int]],
          *args: Any) -> Ranked:
    """A rank's task: ``task`` with ``spec`` completed by the listeners' addresses (the results
    of the listener tasks, inputs of this one, or spares opened by earlier segments: the ranks
    start without the client in between)."""
    result = task(spec._replace(addresses=[*addresses, None]), *args)
    return Ranked(result, open_spare(spec.spare))


def validation_shares(rounds: Any, beyond: Any, ranks: list[str]) -> list[list[tuple[int, Any]]]:
    """Each rank's validation blocks, ``(position, future)``, when the segment may run past its
    epoch with validation blocks (``beyond.run.validation``): those a rank's worker holds, the
    others dealt out in turn (any split gives the same score: the fold goes by position)."""
    validation = beyond.run.validation if beyond is not None else None
    shares: list[list[tuple[int, Any]]] = [[] for _ in ranks]
    if validation is None:
        return shares
    futures = list(validation.futures)
    who = rounds.client.who_has(futures)
    for i, f in enumerate(futures):
        held = [ranks.index(w) for w in who.get(f.key, ()) if w in ranks]
        shares[held[0] if held else i % len(ranks)].append((i, f))
    return shares


def run_segment(rounds: Any, task: Callable[..., Any], ranks: list[str],
                args_of: Callable[[int], tuple[Any, ...]], what: str) -> list[Any]:
    """Run ``task(spec, *args_of(j))`` as rank ``j`` on worker ``ranks[j]``, all ranks of one
    mesh; every rank's result, in rank order. The first two of ``args_of(j)`` hold the rank's
    block futures (training, validation); the others are plain values, shipped with the task
    as they are. Listeners opened ahead by earlier segments are used where the client holds
    them (:mod:`.mesh_spares`); if one cannot be reached, the segment runs again with
    listener tasks."""
    scheduler = str(rounds.client.scheduler.address)
    spares = SPARES.take(scheduler, ranks[:-1])
    if any(spares):
        try:
            return _segment(rounds, task, ranks, args_of, what, scheduler, spares)
        except MeshBroken as exc:
            if exc.lost or not isinstance(exc.__cause__ or exc, MeshUnreachable):
                raise
            SPARES.drop(scheduler)  # a worker restarted at its address, or a spare expired
    return _segment(rounds, task, ranks, args_of, what, scheduler, [None] * (len(ranks) - 1))


def _segment(rounds: Any, task: Callable[..., Any], ranks: list[str],
             args_of: Callable[[int], tuple[Any, ...]], what: str, scheduler: str,
             spares: list[Spare | None]) -> list[Any]:
    from .rounds import _literal

    client = rounds.client
    token = rounds._token("mesh", what)
    key = f"mesh-{token}"
    timeout = parse_timedelta(dask.config.get("pipeline.train.mesh-timeout", "300s"))
    segment = parse_timedelta(dask.config.get("pipeline.train.mesh-segment", "2s"))
    connect = parse_timedelta(dask.config.get("pipeline.train.mesh-connect-timeout", "10s"))
    secret = os.urandom(16)
    # every rank but the last accepts connections from the ranks above it: on a spare opened
    # by an earlier segment, or on a listener a task opens now
    listening = [spare.address if spare is not None else
                 client.submit(listen, key, key=f"mesh_listen-{token}-{j}", workers=[w],
                               allow_other_workers=False, pure=False)
                 for j, (w, spare) in enumerate(zip(ranks[:-1], spares, strict=True))]
    name = getattr(task, "__name__", "mesh_task")
    tasks = []
    for j, w in enumerate(ranks):
        blocks, scoring, *rest = args_of(j)
        mine = spares[j] if j < len(spares) else None
        # a new spare where this segment uses one up (the listening ranks), and on the last
        # rank's worker if it has none: one listener left open per worker, never more
        wanted = j < len(spares) or not SPARES.holds(scheduler, w)
        spec = MeshSpec(j, [], key, secret, timeout, segment, connect,
                        listener=mine.key if mine is not None else None,
                        spare=spare_key() if wanted else None)
        # literals: dask does not walk the schedules and states looking for keys
        tasks.append(client.submit(_rank, _literal(task), _literal(spec), listening, blocks,
                                   scoring, *[_literal(a) for a in rest],
                                   key=f"{name}-{token}-{j}",
                                   workers=[w], allow_other_workers=False, pure=False))
    own = [f for f in listening if not isinstance(f, tuple)]
    with _cancelled_on_error(client, tasks + own, key, ranks):
        rounds.watchdog.wait(tasks, what, first_error=True, needs=ranks)
        ranked = rounds.watchdog.gather(tasks, what)
    for w, r in zip(ranks, ranked, strict=True):
        SPARES.keep(scheduler, w, r.spare)
    return [r.result for r in ranked]


def run_mesh_gradient(rounds: Any, state: StepState, step_args: tuple[Any, ...], first: int,
                      epoch: int, steps: int, round_no: int, seed: int, shuffle: bool,
                      beyond: GradientBeyond | None = None
                      ) -> tuple[StepState, list[tuple[Partial, float]],
                                 list[tuple[int, Any, float | None]]]:
    """One segment of an exact-gradient epoch over ``rounds``' blocks (a
    :class:`~.rounds.Rounds`) from step ``first`` at ``state``: the state after its last round,
    ``[(round partial without its vector, seconds), ...]`` and, with ``beyond``, the epochs
    that ended in it (:class:`MeshResult`)."""
    started = time.perf_counter()
    futures = rounds.block_keys
    groups, workers = rounds.groups_and_workers(futures)
    args = StepArgs(rounds.model, *step_args, len(futures), rounds.split_every)
    scoring = validation_shares(rounds, beyond, workers)
    shipped = beyond and beyond._replace(run=beyond.run.shipped())
    results = run_segment(
        rounds, mesh_epoch, workers,
        lambda j: ([futures[i] for i in groups[j]], scoring[j], groups[j], args, state, first,
                   round_no, epoch, steps, seed, shuffle, shipped),
        f"epoch {epoch}, rounds from {first + 1} (mesh)")
    return (results[0].state, segment_rounds(rounds, results[0].metrics, started),
            results[0].ends or [])


def segment_rounds(rounds: Any, metrics: Metrics, started: float
                   ) -> list[tuple[Partial, float]]:
    """Rank 0's per-round ``metrics`` of a finished segment as the client's rounds
    ``[(partial without its vector, seconds), ...]``, counted, and looked at for lost workers
    (blocks computed elsewhere than last time) as a round through Dask is."""
    rounds.round += len(metrics)
    out = [(Partial(loss, None, n, timings), seconds) for loss, n, timings, seconds in metrics]
    rounds.observe_epoch([out[0][0]], started)
    return out
