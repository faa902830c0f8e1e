"""Synchronisation strategies: how the blocks' work becomes one model, behind one interface.

``GradientSync`` (``sync="gradient"``)
    One synchronous optimizer step per round. Block ``p`` computes the loss and gradient *sum*
    over its share of the global mini-batch (proportional to its rows); the sums are folded by
    position and the optimizer runs once on their mean. Exact: full batch gives the same
    parameters, to float rounding, for any number of blocks, workers or ``split_every``. Rounds
    are submitted ahead (the optimizer update is a task) with the same bits.
``LocalSGD`` (``sync="average"``)
    Each block starts from the global parameters, runs ``local_steps`` inner optimizer steps on
    local mini-batches (the largest block takes ``batch_size`` rows per step, smaller blocks
    proportionally fewer, so all finish an epoch together) and returns its rows-weighted
    parameter change; the outer update applies the weighted average, optionally as a Nesterov
    momentum step (DiLoCo). With one block it equals ``GradientSync``.

Both implement ``steps_per_epoch``, ``init`` and ``run_epoch``; the loop in
:mod:`pipeline.train.core` does not know which one it drives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import optim
from .mesh_epoch import GradientBeyond, MeshBroken, mesh_usable, note_broken, run_mesh_gradient
from .mesh_local import Beyond, Outer, apply_average, run_mesh_local
from .order import span
from .recovery import DISRUPTIONS
from .rounds import Rounds
from .run_ahead import EpochsAhead, RunAhead, add_mean, add_round
from .schedule import epoch_plan, round_schedules
from .tasks import Partial, Rate, StepState, check_finite, gradient_step

__all__ = ["Balancer", "EpochOutcome", "GradientSync", "LocalSGD", "SyncState"]

OnRound = Callable[[Partial, float, float, bool], None]  # (partial, seconds, loss, last)


def steps_for(n_rows: int, batch_size: int | None) -> int:
    if batch_size is None or batch_size >= n_rows:
        return 1
    return math.ceil(n_rows / batch_size)


@dataclass
class SyncState:
    """A strategy's optimizer state(s), host arrays, checkpointed with the run."""

    opt_state: Any = None  # global optimizer state (GradientSync)
    local_states: list[Any] | None = None  # per-block inner states (LocalSGD)
    outer_state: Any = None  # outer optimizer state (LocalSGD with momentum)
    cursors: list[int] | None = None  # LocalSGD: local steps each block has taken


@dataclass
class EpochOutcome:
    params: np.ndarray
    state: SyncState
    loss_sum: float  # Σ round loss x rows
    rows: int
    round_seconds: list[float]
    local_steps: list[int] | None = None  # LocalSGD: per block, next round
    seconds: float | None = None  # the epoch's own time, when the call did more than the epoch
    score: float | None = None  # the validation score, when the mesh's ranks computed it


@dataclass
class GradientSync:
    """Exact synchronous mini-batch training; ``rounds_ahead`` rounds in flight."""

    optimizer: optim.GradientTransformation
    alpha: float
    batch_size: int | None
    rounds_ahead: int = 4
    name: str = "gradient"

    def steps_per_epoch(self, rows: Sequence[int]) -> int:
        # batch_size is the global mini-batch; each block contributes its proportional share
        return steps_for(int(sum(rows)), self.batch_size)

    def init(self, params: np.ndarray, n_blocks: int) -> SyncState:
        return SyncState(opt_state=optim.state_to_host(self.optimizer.init(params)))

    def __post_init__(self) -> None:
        self.ahead = EpochsAhead()  # end_state: the optimizer state

    def ran_ahead(self, epoch: int) -> bool:
        """Whether a mesh segment already ran ``epoch`` (or its first rounds)."""
        return self.ahead.ran(epoch)

    def run_epoch(self, rounds: Rounds, params: np.ndarray, state: SyncState, lr: Rate,
                  epoch: int, round_no: int, seed: int, shuffle: bool,
                  on_round: OnRound, ahead: RunAhead | None = None) -> EpochOutcome:
        """One epoch from ``params``; with ``ahead`` (nothing needs the client between epochs)
        a mesh segment may run on into the next epochs, kept for the next calls."""
        began = time.perf_counter()
        steps = self.steps_per_epoch(rounds.blocks.rows)
        opt_state = state.opt_state
        loss_sum, rows, times = 0.0, 0, []
        step_args = (self.optimizer, self.alpha, lr)

        def record(part: Partial, seconds: float, loss: float, last: bool) -> None:
            nonlocal loss_sum, rows
            times.append(seconds)
            loss_sum, rows = add_mean((loss_sum, rows), loss, part.n)
            on_round(part, seconds, loss, last)

        first = 0  # the epoch's rounds done
        later_seconds = 0.0  # of the rounds a segment ran past this epoch
        score = None  # the validation score, from the ranks of the segment that ended the epoch
        if self.ahead.epochs:  # the last segment ran this epoch, or its first rounds
            done = self.ahead.take(epoch)
            for part, seconds in done.rounds:
                first += 1
                record(part, seconds, part.loss, first == steps)
            params = done.params
            if not self.ahead.epochs:
                opt_state = self.ahead.end_state
            if done.complete:
                return EpochOutcome(params, SyncState(opt_state=opt_state), loss_sum, rows,
                                    times, seconds=sum(times), score=done.score)
        pipelined = self.rounds_ahead > 1 and steps > 1
        if pipelined and mesh_usable(rounds.groups_and_workers(rounds.block_keys)[1], rounds):
            # segments of rounds on the workers' mesh (:mod:`.mesh_epoch`); a broken one
            # leaves the rest of the epoch to the rounds below, from the last segment's end
            at = StepState(params, opt_state, 0.0, 0, ())
            try:
                while first < steps:
                    beyond = None if ahead is None else GradientBeyond(ahead, (loss_sum, rows))
                    at, parts, ends = run_mesh_gradient(rounds, at, step_args, first, epoch,
                                                        steps, round_no, seed, shuffle, beyond)
                    mine = ends[0][0] if ends else len(parts)
                    for part, seconds in parts[:mine]:
                        first += 1
                        record(part, seconds, part.loss, first == steps)
                    if ends:
                        later_seconds = self.ahead.keep(epoch, parts, ends, at.params,
                                                        at.opt_state)
                        at, score = at._replace(params=ends[0][1]), ends[0][2]
            except (*DISRUPTIONS, MeshBroken) as exc:
                note_broken(rounds, exc, f"rounds from {round_no + first + 1} redone one at a "
                                         "time")
            params, opt_state = at.params, at.opt_state
        elif pipelined and first == 0:
            try:
                params, opt_state, parts = rounds.pipelined_epoch(
                    params, opt_state, step_args, epoch, steps, round_no, self.rounds_ahead,
                    seed, shuffle)
            except DISRUPTIONS as exc:
                rounds.note_fallback(exc)  # redo this epoch one round at a time (same bits)
            else:
                for k, (part, seconds) in enumerate(parts):
                    record(part, seconds, part.loss, k == len(parts) - 1)
                first = steps
        for step in range(first, steps):
            r0 = time.perf_counter()
            part = rounds.gradient(params, epoch, step, steps, seed, shuffle)
            check_finite(part, round_no + step, "loss or gradient")
            params, opt_state, loss = gradient_step(part, params, opt_state, rounds.model,
                                                    self.optimizer, self.alpha, lr)
            record(part, time.perf_counter() - r0, loss, step == steps - 1)
        return EpochOutcome(params, SyncState(opt_state=opt_state), loss_sum, rows, times,
                            seconds=time.perf_counter() - began - later_seconds
                            if later_seconds else None, score=score)


class Balancer:
    """Local steps per block from measured speed (``balance="throughput"``).

    A worker runs its blocks one after another, so its time per local step is the sum of its
    blocks' measured per-step times. The worker with the smallest sum takes ``local_steps``;
    slower ones proportionally fewer (at least one), so a round ends when the fastest worker has
    done its share instead of waiting for the slowest. Deltas are weighted by the rows each
    block processed, so the average stays unbiased. Re-estimated every round (exponential
    average), so it follows a device that speeds up, slows down or disappears.
    """

    def __init__(self, n_blocks: int, *, enabled: bool, smoothing: float = 0.5):
        self.enabled = enabled
        self.smoothing = smoothing
        self.step_seconds: list[float | None] = [None] * n_blocks
        self.worker: list[str] = [""] * n_blocks

    def observe(self, timings: Sequence[tuple[int, float, str, float, int]],
                steps_taken: Sequence[int]) -> None:
        for index, seconds, worker, _, _ in timings:
            if steps_taken[index] <= 0:
                continue
            per_step = seconds / steps_taken[index]
            old = self.step_seconds[index]
            self.step_seconds[index] = per_step if old is None else (
                self.smoothing * per_step + (1 - self.smoothing) * old)
            self.worker[index] = worker

    def counts(self, local_steps: int) -> list[int]:
        n = len(self.step_seconds)
        if not self.enabled or any(s is None for s in self.step_seconds):
            return [local_steps] * n
        per_worker: dict[str, float] = {}
        for w, s in zip(self.worker, self.step_seconds, strict=True):
            per_worker[w] = per_worker.get(w, 0.0) + float(s or 0.0)
        fastest = min(per_worker.values())
        return [max(1, round(local_steps * fastest / per_worker[w])) if per_worker[w] > 0
                else local_steps for w in self.worker]


def replica_groups(rows: Sequence[int], replicas: int) -> list[list[int]]:
    """Blocks cut into ``replicas`` contiguous runs of about equal rows (by block position
    only, so the grouping does not depend on the cluster). Fewer runs when there are fewer
    blocks than replicas."""
    total = sum(rows)
    r = max(1, min(int(replicas), len(rows)))
    groups: list[list[int]] = [[] for _ in range(r)]
    before = 0
    for i, n in enumerate(rows):
        mid = before + n / 2  # a block goes to the replica its middle row falls in
        groups[min(r - 1, int(mid * r / total)) if total else i % r].append(i)
        before += n
    return [g for g in groups if g]


@dataclass
class LocalSGD:
    """Local SGD with model averaging; ``outer`` (e.g. Nesterov SGD) applies the average.

    ``replicas=None``: every block is a replica (its own optimizer state, its own local steps).
    ``replicas=R``: the blocks are cut into R contiguous runs (:func:`replica_groups`); each run
    is one replica, colocated on one worker, trained as one stream whose mini-batches take
    every block's share of the step (as exact-gradient mode does), so the model depends on R,
    not on how many blocks hold the rows. With R=1 it is sequential mini-batch training.
    """

    optimizer: optim.GradientTransformation
    alpha: float
    batch_size: int | None
    local_steps: int | None = None  # None: one local epoch per round
    outer_learning_rate: float = 1.0
    outer_momentum: float = 0.0
    balance: str = "none"
    replicas: int | None = None
    name: str = "average"

    def __post_init__(self) -> None:
        self.outer = optim.sgd(self.outer_learning_rate, momentum=self.outer_momentum,
                               nesterov=True)
        self.outer_rule = Outer(self.outer, self.outer_learning_rate)
        self.balancer: Balancer | None = None
        self.ahead = EpochsAhead()  # end_state: (local states, outer state)

    def ran_ahead(self, epoch: int) -> bool:
        """Whether a mesh segment already ran ``epoch`` (or its first rounds)."""
        return self.ahead.ran(epoch)

    def units(self, rows: Sequence[int]) -> list[list[int]]:
        """The replicas, as lists of block indices."""
        if self.replicas is None:
            return [[i] for i in range(len(rows))]
        return replica_groups(rows, self.replicas)

    def steps_per_epoch(self, rows: Sequence[int]) -> int:
        # batch_size is each replica's local mini-batch (as in DDP / local SGD): the largest
        # replica takes batch_size rows per step, the others proportionally fewer, so every
        # replica sees each of its rows once per epoch in the same number of steps.
        return steps_for(max(sum(rows[i] for i in u) for u in self.units(rows)),
                         self.batch_size)

    def init(self, params: np.ndarray, n_blocks: int) -> SyncState:
        outer = optim.state_to_host(self.outer.init(params)) if self.outer_momentum else None
        n_units = n_blocks if self.replicas is None else min(n_blocks, self.replicas)
        return SyncState(local_states=[None] * n_units, outer_state=outer)

    def run_epoch(self, rounds: Rounds, params: np.ndarray, state: SyncState, lr: Rate,
                  epoch: int, round_no: int, seed: int, shuffle: bool,
                  on_round: OnRound, ahead: RunAhead | None = None) -> EpochOutcome:
        """One epoch from ``params``; with ``ahead`` (nothing needs the client between epochs)
        a mesh segment may run on into the next epochs, kept for the next calls."""
        began = time.perf_counter()
        rows_per_block = rounds.blocks.rows
        n_total = int(sum(rows_per_block))
        units = self.units(rows_per_block)
        n_units = len(units)
        if self.replicas is not None and not getattr(rounds, "colocated", False):
            rounds.colocate(units)  # once per fit: each replica's blocks on one worker
        steps = self.steps_per_epoch(rows_per_block)
        per_round = steps if self.local_steps is None else min(self.local_steps, steps)
        if self.replicas is not None:
            # linear scaling rule (Goyal et al. 2017): averaging R replicas' changes moves the
            # model like one replica with an R-times larger batch, so each steps R times larger
            lr = lr.times(n_units)
        if self.balancer is None:
            self.balancer = Balancer(n_units, enabled=self.balance == "throughput")
        cursors = list(state.cursors) if state.cursors is not None else [epoch * steps] * n_units
        local_states, outer_state = state.local_states, state.outer_state
        if local_states is None or len(local_states) != n_units:
            local_states = [None] * n_units
        step_rows = [sum(span(n, s, steps) for n in rows_per_block) for s in range(steps)]
        end = (epoch + 1) * steps
        loss_sum, rows, times = 0.0, 0, []
        k = 0  # the epoch's rounds done
        later_seconds = 0.0  # of the rounds a segment ran past this epoch
        score = None  # the validation score, from the ranks of the segment that ended the epoch

        def record(part: Partial, seconds: float, schedules: list[Any]) -> None:
            nonlocal loss_sum, rows, k
            self.balancer.observe(part.timings, [len(sch) for sch in schedules])
            times.append(seconds)
            loss_sum, rows = add_round((loss_sum, rows), part)  # includes each step's penalty
            k += 1
            on_round(part, seconds, part.loss / max(part.n, 1), rows >= n_total)

        if self.replicas is not None and self.balance == "none" and \
                cursors == [epoch * steps] * n_units:
            plan, after = epoch_plan(epoch, n_units, per_round, steps, step_rows)
            if self.ahead.epochs:  # the last segment ran this epoch, or its first rounds
                done = self.ahead.take(epoch)
                for part, seconds in done.rounds:
                    record(part, seconds, plan[k])
                params = done.params
                if not self.ahead.epochs:
                    local_states, outer_state = self.ahead.end_state
                if done.complete:
                    return EpochOutcome(params, SyncState(None, local_states, outer_state,
                                                          after[-1]),
                                        loss_sum, rows, times, self.balancer.counts(per_round),
                                        seconds=sum(times), score=done.score)
            further = ahead is not None and epoch + 1 < ahead.max_epochs
            if (len(plan) > 1 or further) and mesh_usable(
                    rounds.groups_and_workers(rounds.block_keys)[1], rounds):
                # segments of rounds on the workers' mesh (:mod:`.mesh_local`); a broken one
                # leaves the rest of the epoch to the rounds below, from the last segment's end
                try:
                    while k < len(plan):
                        beyond = None if ahead is None else Beyond(
                            ahead, epoch, (loss_sum, rows), n_units, per_round, steps,
                            step_rows)
                        params, local_states, outer_state, parts, ends = run_mesh_local(
                            rounds, params, local_states, outer_state,
                            (self.optimizer, self.alpha, lr), self.outer_rule, units, plan[k:],
                            epoch, steps, round_no + k, seed, shuffle, beyond)
                        mine = ends[0][0] if ends else len(parts)
                        for part, seconds in parts[:mine]:
                            record(part, seconds, plan[k])
                        if ends:
                            later_seconds = self.ahead.keep(epoch, parts, ends, params,
                                                            (local_states, outer_state))
                            params, score = ends[0][1], ends[0][2]
                except (*DISRUPTIONS, MeshBroken) as exc:
                    note_broken(rounds, exc, f"rounds from {round_no + k + 1} redone through "
                                             "Dask")
            if k:
                cursors = after[k - 1]
        while rows < n_total:
            r0 = time.perf_counter()
            schedules = round_schedules(cursors, self.balancer.counts(per_round), end, steps,
                                        step_rows, across_epochs=self.balance == "throughput")
            if self.replicas is None:
                part, local_states = rounds.local_steps(
                    params, local_states, (self.optimizer, self.alpha, lr), schedules, steps,
                    seed, shuffle)
            else:
                part, local_states = rounds.replica_steps(
                    params, local_states, (self.optimizer, self.alpha, lr), units, schedules,
                    steps, seed, shuffle)
            if part.n == 0:
                raise RuntimeError(f"round {round_no + k + 1} trained on no rows: the blocks "
                                   f"hold fewer rows than their BlockSet says ({n_total})")
            check_finite(part, round_no + k, "loss or parameter update")
            params, outer_state = apply_average(part, params, outer_state, self.outer_rule)
            record(part, time.perf_counter() - r0, schedules)
        return EpochOutcome(params, SyncState(None, local_states, outer_state, cursors),
                            loss_sum, rows, times, self.balancer.counts(per_round),
                            seconds=time.perf_counter() - began - later_seconds
                            if later_seconds else None, score=score)
