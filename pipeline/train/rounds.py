"""The round runner: one graph per round, one task per worker, folded by block position.

A worker's task computes the partials of every block it holds (in block order) and returns them
apart; the root folds all partials with the fixed tree of block positions
(:func:`pipeline.reduce.tree_fold`). The numbers are those of a task-per-block tree, bit for
bit, whatever the placement, while a round costs W + 1 tasks. Parameters ship inside the tasks.
Keys read like the algorithm on the dashboard: ``partition_grads-<token>``,
``step_and_partition_grads-<token>`` (pipelined rounds), ``partition_local_steps-<token>``,
``combine_scores-...``.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from dask.base import tokenize

from .. import events
from ..cluster import workers_info
from ..placement import cluster_look, colocate, device_groups, first_holders, rebalance
from .ahead import StepArgs, last_step, round_metrics, step_and_partition_grads
from .local_steps import LocalResult, fold_local, partitions_local_steps, replica_local_steps
from .recovery import DISRUPTIONS, Watchdog, renamed
from .scores import ScorePartial, fold_scores, partition_scores
from .tasks import Partial, StepState, fold_partials, partition_grads

__all__ = ["Rounds"]


def _literal(value: Any) -> Any:
    """``value`` as a literal argument of each worker's task: shipped with the task itself (one
    message per worker) instead of as a key that one worker computes and the others fetch."""
    from dask._task_spec import DataNode

    return DataNode(None, value)


def submit(client: Any, dsk: dict[Any, Any], keys: list[Any],
           workers: list[str] | None = None) -> list[Any]:
    """Futures of ``keys`` of the low-level graph ``dsk`` (``client.get(..., sync=False)``),
    without tokenising the graph.

    ``client.get`` wraps a dict in an expression named by a deterministic token of its whole
    content, which normalises every task argument, cloudpickling each function and closure
    (the optimizer's, the model's) every time: ~1 ms per optimizer, 10-40 ms per graph here,
    in the client process, where a LocalCluster's scheduler shares the GIL. Our keys already
    name the graph, so the expression gets a random name instead (dask's ``_determ_token``;
    with a dask that has no such expression, the dict goes in as is). ``workers``: where the
    graph's tasks should run, a preference (``allow_other_workers``: a lost worker's tasks
    still run elsewhere)."""
    try:
        from dask._expr import LLGExpr

        graph: Any = LLGExpr(dsk, _determ_token=uuid.uuid4().hex)
    except (ImportError, TypeError):  # pragma: no cover - another dask: tokenise as usual
        graph = dsk
    if workers:
        return client.get(graph, keys, sync=False, workers=list(workers),
                          allow_other_workers=True)
    return client.get(graph, keys, sync=False)


class Rounds:
    """Builds and runs one graph per round over ``blocks``, surviving faults."""

    def __init__(self, client: Any, blocks: Any, model: Any, *, split_every: int, run_id: str):
        self.client = client
        self.blocks = blocks
        self.model = model
        self.split_every = split_every
        self.run_id = run_id
        self.block_keys = list(blocks.futures)  # futures in the graph become dependencies
        self.watchdog = Watchdog(client)
        self.retries = 0  # disrupted rounds recovered (one "retry" event each)
        # where this run's rounds should go, by preference (a one-block run of several
        # concurrent ones, :mod:`pipeline.train.members`); None: where the scheduler puts them
        self.workers: list[str] | None = None
        self.recovery_seconds = 0.0  # time those rounds took beyond a typical round
        self.round = 0  # training rounds submitted so far
        self._graphs = itertools.count()  # makes every graph's keys new (see _token)
        self._where: dict[int, str] = {}  # block index -> worker that computed its last partial
        # (block keys, block indices grouped by holder, each group's holder)
        self._placement: tuple[tuple[Any, ...], list[list[int]], list[str]] | None = None
        self._healthy: list[float] = []  # recent undisrupted round times, seconds
        self._lost: set[str] = set()  # workers already reported lost
        self.colocated = False  # units' blocks moved together (LocalSGD with replicas)
        self._units: list[list[int]] | None = None
        self._workers_seen: frozenset[str] | None = None
        self.mesh_off = False  # a mesh of this fit broke without a worker lost
        self._look: tuple[tuple[Any, ...], dict[str, Any], dict[Any, Any]] | None = None

    # ------------------------------------------------------------ placement ---------------------

    def groups(self, futures: list[Any]) -> list[list[int]]:
        """Block indices grouped by the worker holding them (one scheduler round trip, made
        once per epoch and after a disruption; a stale grouping only costs a data copy)."""
        key = tuple(f.key for f in futures)
        if self._placement is not None and self._placement[0] == key:
            return self._placement[1]
        return self._group(futures, self.client.who_has(futures))

    def _group(self, futures: list[Any], who: Any) -> list[list[int]]:
        key = tuple(f.key for f in futures)
        by_worker: dict[str, list[int]] = {}
        for i, f in enumerate(futures):
            holders = sorted(who.get(f.key, ()))
            by_worker.setdefault(holders[0] if holders else "", []).append(i)
        holders = sorted(by_worker)
        groups = [by_worker[w] for w in holders]
        self._placement = (key, groups, holders)
        return groups

    def groups_and_workers(self, futures: list[Any]) -> tuple[list[list[int]], list[str]]:
        """:meth:`groups` and the worker holding each group ("" for blocks held nowhere)."""
        groups = self.groups(futures)
        assert self._placement is not None
        return groups, list(self._placement[2])

    def refresh_placement(self) -> None:
        self._placement = None

    def keep_spread(self) -> None:
        """At an epoch boundary: when workers were lost or joined since the last look, spread
        the blocks again (replicas: colocate again), so no worker idles while another holds
        most of the rows. One scheduler round trip per epoch; moves nothing otherwise."""
        info, who = cluster_look(self.client, self.block_keys)
        self._look = (tuple(f.key for f in self.block_keys), info, who)
        workers = frozenset(info)
        seen, self._workers_seen = self._workers_seen, workers
        if seen is None or seen == workers or not workers:
            self._group(self.block_keys, who)  # the epoch's grouping, same round trip
            return
        if self.colocated and self._units is not None:
            self.colocate(self._units)
            return
        moved = rebalance(self.client, self.blocks._replace(futures=self.block_keys))
        self.block_keys = list(moved.futures)
        self._placement = None

    def colocate(self, units: list[list[int]]) -> None:
        """Move blocks once so every unit's blocks (a local-SGD replica's) share a worker.
        Placement never changes the numbers: tasks are keyed to block positions."""
        look = None
        keys = tuple(f.key for f in self.block_keys)
        if self._look is not None and self._look[0] == keys:  # keep_spread has just asked
            _, info, who = self._look
            look = (first_holders(who, keys), device_groups(info))
        self._look = None
        moved = colocate(self.client, self.blocks._replace(futures=self.block_keys), units,
                         look=look)
        self.colocated = True
        self._units = units
        if [f.key for f in moved.futures] != list(keys):  # blocks moved: ask again when needed
            self.block_keys = list(moved.futures)
            self._placement = None

    def per_worker_graph(self, name: str, token: str, futures: list[Any],
                         task: Callable[[list[Any], list[int]], tuple[Any, ...]],
                         ) -> tuple[dict[Any, Any], list[Any]]:
        """The one graph builder: a ``name`` task per worker, ``task(its block futures, their
        indices)`` giving the task tuple for the blocks that worker holds."""
        dsk: dict[Any, Any] = {}
        leaves = []
        for j, idx in enumerate(self.groups(futures)):
            key = (f"{name}-{token}", j)
            dsk[key] = task([futures[i] for i in idx], idx)
            leaves.append(key)
        return dsk, leaves

    # ------------------------------------------------------------ running -----------------------

    def _token(self, *parts: Any) -> str:
        """A token for one graph's keys, never given twice by this object: a graph whose keys
        the scheduler still holds from an earlier graph (its futures released by the client but
        not yet forgotten) would be answered with the earlier values. L-BFGS evaluates the same
        ``(epoch, step)`` at new parameters many times; a redone epoch submits its rounds again."""
        return tokenize(self.run_id, next(self._graphs), *parts)

    def run(self, dsk: dict, keys: list, label: str,
            workers: list[str] | None = None) -> list[Any]:
        """Compute ``keys`` of the round graph ``dsk`` and return their values, surviving faults
        (see :mod:`pipeline.train.recovery`); ``workers``: where to run them, by preference
        (default: the run's, :attr:`workers`)."""
        workers = workers if workers is not None else self.workers
        if label != "score":
            self.round += 1
        start = time.perf_counter()
        recovered_before = self.recovery_seconds
        reasons: list[str] = []
        graph, want = dsk, keys
        while True:
            futures = submit(self.client, graph, want, workers)
            try:
                results = self.watchdog.gather(futures, f"round {self.round} ({label})")
                break
            except DISRUPTIONS as exc:
                self.client.cancel(futures)
                reason = f"{type(exc).__name__}: {exc}"
                if len(reasons) >= self.watchdog.max_retries:
                    raise RuntimeError(
                        f"round {self.round} ({label}) failed {len(reasons) + 1} times, "
                        f"last: {reason}"
                    ) from exc
                reasons.append(reason)
                self._retried(reason, "resubmitted", start, attempt=len(reasons))
                graph, want = renamed(dsk, keys, f"retry{len(reasons)}")
            finally:
                del futures
        seconds = time.perf_counter() - start
        lost, moved = self._moved(results)
        if reasons or moved:
            self._placement = None  # blocks were rebuilt elsewhere: regroup next round
        extra = max(0.0, seconds - self._typical())
        if reasons:  # reported once per resubmission; the successful attempt's time counts too
            self.recovery_seconds = recovered_before + extra
        elif lost - self._lost:  # a new loss: one retry event per incident
            self._retried(moved, "recomputed", start)
        elif lost:  # a later round rebuilding blocks of a worker already reported lost
            self.recovery_seconds += extra
        else:
            self._healthy = [*self._healthy[-19:], seconds]
        self._lost |= lost
        return results

    def _moved(self, results: list[Any]) -> tuple[set[str], str]:
        """Workers lost since the last round, and what happened to their blocks.

        A block whose partial now comes from another worker was rebuilt from lineage after its
        worker died, or copied by the scheduler for load balance: only the first is a disruption,
        told apart with one scheduler round trip, made only when a block moved.
        """
        partials = [r.partial if isinstance(r, LocalResult) else r for r in results]
        where = {t[0]: t[2] for r in partials if isinstance(r, Partial) for t in r.timings}
        moved = {i: self._where[i] for i, w in where.items() if self._where.get(i, w) != w}
        self._where.update(where)
        if not moved:
            return set(), ""
        alive = set(workers_info(self.client))
        lost = {w for w in moved.values() if w not in alive}
        blocks = sorted(i for i, w in moved.items() if w in lost)
        return lost, (f"worker(s) {', '.join(sorted(lost))} lost; blocks {blocks} recomputed "
                      f"from lineage on {', '.join(sorted({where[i] for i in blocks}))}")

    def observe_epoch(self, partials: list[Partial], start: float) -> None:
        """After an epoch that ran outside :meth:`run` (a mesh epoch): the same look for lost
        workers, from a round's partials (one "retry" event per new loss)."""
        lost, moved = self._moved(partials)
        if moved:
            self._placement = None
        if lost - self._lost:
            self._retried(moved, "recomputed", start)
        self._lost |= lost

    def _typical(self) -> float:
        return float(np.median(self._healthy)) if self._healthy else 0.0

    def _retried(self, reason: str, action: str, start: float, attempt: int = 0) -> None:
        extra = max(0.0, time.perf_counter() - start - self._typical())
        self.retries += 1
        self.recovery_seconds += extra
        events.emit_retry(self.client, self.run_id, round=self.round, reason=reason,
                     action=action, attempt=attempt, recovery_seconds=extra)

    def note_fallback(self, exc: BaseException, action: str = "epoch redone round by round",
                      ) -> None:
        """An epoch run ahead was disrupted: count it; the caller redoes the epoch. Workers the
        failure found lost (a broken mesh's ``lost``) are reported here, not again when the
        redone rounds find their blocks rebuilt elsewhere."""
        self._placement = None
        self._lost |= set(getattr(exc, "lost", ()))
        self._retried(f"{type(exc).__name__}: {exc}", action, time.perf_counter())

    # ------------------------------------------------------------ the round kinds ---------------

    def _grad_graph(self, params: Any, token: str, epoch: int, step: int, steps: int,
                    seed: int, shuffle: bool) -> tuple[dict[Any, Any], list[Any]]:
        return self.per_worker_graph(
            "partition_grads", token, self.block_keys,
            lambda futs, idx: (partition_grads, futs, idx, params, self.model, epoch, step,
                               steps, seed, shuffle, len(self.block_keys), self.split_every))

    def gradient(self, params: np.ndarray, epoch: int, step: int, steps: int, seed: int,
                 shuffle: bool) -> Partial:
        """Loss and gradient sums of every block over global step ``step`` (one round)."""
        token = self._token("grad", epoch, step)
        dsk, leaves = self._grad_graph(_literal(params), token, epoch, step, steps, seed,
                                       shuffle)
        root = f"combine_grads-{token}"
        dsk[root] = (fold_partials, leaves, self.split_every, len(self.block_keys))
        (out,) = self.run(dsk, [root], "gradient")
        return out

    def pipelined_epoch(self, params: np.ndarray, opt_state: Any, step_args: tuple[Any, ...],
                        epoch: int, steps: int, round_no: int, ahead: int, seed: int,
                        shuffle: bool) -> tuple[np.ndarray, Any, list[tuple[Partial, float]]]:
        """All rounds of one exact-gradient epoch, up to ``ahead`` of them in flight.

        A round is one ``step_and_partition_grads`` task per worker (:mod:`.ahead`): it folds
        the previous round's partials of every worker and applies the optimizer update
        (``step_args = (optimizer, alpha, learning_rate)``) to its own replica of the
        parameters, then computes its blocks' partials; every replica has the same bits. So the
        cluster never waits for the client, and a round is one hop between workers instead of
        two (no step task in between). The client waits for each graph's rounds and fetches
        every round's loss, row count and timings with the parameters once, at the end
        (``last_step``). The chain starts from
        literal values every epoch, so lineage (and recomputation after a worker loss) never
        reaches back further than the epoch. Raises a disruption for the caller to redo the
        epoch one round at a time, which gives the same bits.
        """
        args = StepArgs(self.model, *step_args, len(self.block_keys), self.split_every)
        futures = self.block_keys
        groups = self.groups(futures)
        prev: Any = _literal(StepState(params, opt_state, 0.0, 0, ()))
        # (metrics future, rounds it reports) of the rounds submitted and not yet finished
        window: deque[tuple[Any, int]] = deque()
        reports: list[tuple[Any, float]] = []  # (metrics future, seconds per round it reports)
        last_done = time.perf_counter()

        def consume() -> None:
            # wait only: the metrics are fetched once, with the final state (one gather per
            # epoch instead of one per graph, each a scheduler and a worker round trip beside
            # the rounds)
            nonlocal last_done
            future, n_rounds = window.popleft()
            self.watchdog.wait([future], "a gradient round")
            now = time.perf_counter()
            reports.append((future, (now - last_done) / n_rounds))
            last_done = now

        # Rounds go to the scheduler in chunks (one graph per chunk: fewer submissions and
        # update-graph calls for the client and scheduler to run beside the workers), at most
        # ``ahead`` rounds submitted and not yet finished.
        chunk = max(1, ahead // 2)
        token = self._token("grad-ahead", epoch)
        for first in range(0, steps + 1, chunk):
            while window and sum(n for _, n in window) + chunk > ahead:
                consume()
            dsk: dict[Any, Any] = {}
            done: list[Any] = []  # tasks whose state closes a round: they hold its metrics
            for step in range(first, min(first + chunk, steps + 1)):
                if step < steps:
                    keys: list[Any] = [(f"step_and_partition_grads-{token}-{step}", j)
                                       for j in range(len(groups))]
                    for j, idx in enumerate(groups):
                        dsk[keys[j]] = (step_and_partition_grads, prev, j, args,
                                        round_no + step, [futures[i] for i in idx], idx, epoch,
                                        step, steps, seed, shuffle)
                else:  # the last round's update: only the parameters are needed
                    keys = [f"combine_grads_and_step-{token}-{step}"]
                    dsk[keys[0]] = (last_step, prev, args, round_no + step - 1)
                if step > 0:
                    done.append(keys[0])
                prev = keys
            if done:
                mkey = f"round_metrics-{token}-{first}"
                dsk[mkey] = (round_metrics, done)
                metrics, *prev = submit(self.client, dsk, [mkey, *prev])
                window.append((metrics, len(done)))
            else:
                prev = submit(self.client, dsk, prev)
        while window:
            consume()
        *values, final = self.watchdog.gather([f for f, _ in reports] + prev,
                                              "the epoch's last step")
        out: list[tuple[Partial, float]] = []
        for metrics, (_, seconds) in zip(values, reports, strict=True):
            out.extend((Partial(loss, None, n, timings), seconds)
                       for loss, n, timings in metrics)
        self.round += steps
        return final.params, final.opt_state, out

    def local_steps(self, params: np.ndarray, states: list[Any], step_args: tuple[Any, ...],
                    schedules: list[tuple[tuple[int, int, int], ...]], steps: int, seed: int,
                    shuffle: bool) -> tuple[Partial, list[Any]]:
        """One local-SGD round: every block runs its ``schedule`` of inner steps
        (``step_args = (optimizer, alpha, learning_rate)``), deltas folded by position."""
        token = self._token("local", schedules)
        literal = _literal(params)
        dsk, leaves = self.per_worker_graph(
            "partition_local_steps", token, self.block_keys,
            lambda futs, idx: (partitions_local_steps, futs, idx, literal,
                               [states[i] for i in idx], self.model, *step_args,
                               [schedules[i] for i in idx], steps, seed, shuffle))
        root = f"combine_deltas-{token}"
        dsk[root] = (fold_local, leaves, self.split_every)
        (out,) = self.run(dsk, [root], "average")
        return out.partial, list(out.states)

    def replica_steps(self, params: np.ndarray, states: list[Any], step_args: tuple[Any, ...],
                      units: list[list[int]],
                      schedules: list[tuple[tuple[int, int, int], ...]], steps: int, seed: int,
                      shuffle: bool) -> tuple[Partial, list[Any]]:
        """One local-SGD round over replicas: a ``replica_local_steps`` task per replica (its
        blocks colocated on one worker), changes folded by replica position."""
        token = self._token("replicas", schedules)
        literal = _literal(params)
        dsk: dict[Any, Any] = {}
        leaves = []
        for r, idx in enumerate(units):
            key = (f"replica_local_steps-{token}", r)
            dsk[key] = (replica_local_steps, [self.block_keys[i] for i in idx], idx, r,
                        literal, states[r], self.model, *step_args, schedules[r], steps, seed,
                        shuffle)
            leaves.append(key)
        root = f"combine_deltas-{token}"
        dsk[root] = (fold_local, leaves, self.split_every)
        (out,) = self.run(dsk, [root], "average")
        return out.partial, list(out.states)

    def score(self, blocks: Any, params: np.ndarray, tag: Any,
              with_loss: bool = True) -> ScorePartial:
        """The blocks' score sums, folded in block order (``with_loss=False``: loss 0.0, and
        no forward-and-backward pass for it; the other sums are the same bits)."""
        token = self._token("score", tag)
        futures = list(blocks.futures)
        literal = _literal(params)
        dsk, leaves = self.per_worker_graph(
            "partition_scores", token, futures,
            lambda futs, idx: (partition_scores, futs, idx, literal, self.model, with_loss))
        root = f"combine_scores-{token}"
        dsk[root] = (fold_scores, leaves, self.split_every)
        (out,) = self.run(dsk, [root], "score")
        return out
