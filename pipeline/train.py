"""Data-parallel training on Dask: the functional core behind the estimators.

One round is one Dask graph. Each block (a partition's rows, resident on its worker) computes a
partial result with the array namespace of its data (NumPy or CuPy); the partials are combined by
:func:`pipeline.reduce.tree_graph`, whose pairing is fixed by block position, never by completion
order; only the small combined result reaches the client, where the optimizer step runs.

Two synchronisation modes:

``sync="gradient"``
    One optimizer step per round. Block ``p`` computes the loss and gradient *sum* over its share
    of the global mini-batch (its share proportional to its rows); the sums are tree-reduced and the
    optimizer runs once on their mean. Full batch (``batch_size=None``) gives the same parameters,
    to float rounding, for any number of blocks, workers or ``split_every``.
``sync="average"`` (local SGD / model averaging)
    Each block starts from the global parameters, runs ``local_steps`` steps of the inner optimizer
    on local mini-batches of about ``batch_size`` rows (the largest block takes exactly
    ``batch_size``; smaller blocks proportionally fewer, so all finish an epoch together), and
    returns its parameter change weighted by the rows it processed; the outer update applies the
    weighted average (optionally with Nesterov momentum, as in DiLoCo). With one block it equals
    ``sync="gradient"``; with ``local_steps=1``, plain SGD and P equal blocks it equals
    ``sync="gradient"`` with a global batch of ``P * batch_size``. Far fewer rounds, so far less
    Dask overhead: use it for large data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import dask
import numpy as np
from dask.base import tokenize
from dask.utils import parse_timedelta
from distributed import KilledWorker
from distributed.comm import CommClosedError

from . import nn, optim
from .backend import namespace, to_host
from .blocks import Block, BlockSet
from .reduce import tree_fold

__all__ = [
    "SOLVERS",
    "SYNC_MODES",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "evaluate",
    "train",
]

SYNC_MODES = ("gradient", "average")
SOLVERS = ("sgd", "adam", "lbfgs")
LEARNING_RATES = ("constant", "invscaling", "adaptive")
BALANCE_MODES = ("none", "throughput")
EVENT_TOPIC = "pipeline.train"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (hashed for checkpoints)."""

    solver: str = "adam"
    learning_rate: str = "constant"
    learning_rate_init: float = 1e-3
    power_t: float = 0.5
    momentum: float = 0.9
    nesterovs_momentum: bool = True
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    alpha: float = 1e-4
    batch_size: int | None = 200
    max_iter: int = 200
    max_fun: int = 15000
    shuffle: bool = True
    tol: float = 1e-4
    n_iter_no_change: int = 10
    early_stopping: bool = False
    sync: str = "gradient"
    local_steps: int | None = None
    outer_learning_rate: float = 1.0
    outer_momentum: float = 0.0
    split_every: int = 8
    random_state: int = 0
    balance: str = "none"
    rounds_ahead: int = 4

    def validate(self) -> None:
        checks = [
            (self.solver in SOLVERS, f"solver must be one of {SOLVERS}, got {self.solver!r}"),
            (self.sync in SYNC_MODES, f"sync must be one of {SYNC_MODES}, got {self.sync!r}"),
            (
                self.learning_rate in LEARNING_RATES,
                f"learning_rate must be one of {LEARNING_RATES}, got {self.learning_rate!r}",
            ),
            (self.max_iter >= 1, f"max_iter must be >= 1, got {self.max_iter}"),
            (
                self.batch_size is None or self.batch_size >= 1,
                f"batch_size must be >= 1 or None, got {self.batch_size}",
            ),
            (self.learning_rate_init > 0, "learning_rate_init must be > 0"),
            (self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}"),
            (self.split_every >= 2, f"split_every must be >= 2, got {self.split_every}"),
            (
                self.local_steps is None or self.local_steps >= 1,
                f"local_steps must be >= 1 or None, got {self.local_steps}",
            ),
            (self.n_iter_no_change >= 1, "n_iter_no_change must be >= 1"),
            (self.rounds_ahead >= 1, f"rounds_ahead must be >= 1, got {self.rounds_ahead}"),
            (self.balance in BALANCE_MODES,
             f"balance must be one of {BALANCE_MODES}, got {self.balance!r}"),
            (self.balance == "none" or self.sync == "average",
             "balance='throughput' needs sync='average' (gradient mode is exact by design)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def inner_optimizer(self) -> optim.GradientTransformation:
        if self.solver == "sgd":
            return optim.sgd(
                self.learning_rate_init, momentum=self.momentum, nesterov=self.nesterovs_momentum
            )
        return optim.adam(
            self.learning_rate_init, beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon
        )


class TrainState(NamedTuple):
    """Where a run stands after an epoch: enough to resume it exactly."""

    params: np.ndarray
    opt_state: Any  # global optimizer state (sync="gradient"), host arrays
    local_states: list[Any] | None  # per-block inner optimizer states (sync="average"), host
    outer_state: Any  # outer optimizer state (sync="average" with momentum)
    epoch: int  # epochs completed
    t: int  # samples seen
    learning_rate: float
    loss_curve: list[float]
    validation_scores: list[float]
    best_loss: float
    best_validation_score: float
    no_improvement_count: int
    best_params: np.ndarray | None
    history: list[dict[str, Any]]
    rounds: int
    cursors: list[int] | None = None  # sync="average": local steps each block has taken


@dataclass
class TrainResult:
    params: np.ndarray
    state: TrainState
    n_iter: int
    loss: float
    stopped_early: bool
    run_id: str
    seconds: float
    rounds: int
    retries: int = 0  # disrupted rounds recovered (lost workers, resubmitted rounds)
    history: list[dict[str, Any]] = field(default_factory=list)
    recovery_seconds: float = 0.0  # time the disrupted rounds took beyond a typical round


# ---------------------------------------------------------------- worker side (tasks) ----------


class Partial(NamedTuple):
    """What a block sends back: sums, so partials add associatively."""

    loss: float  # sum of per-row data loss
    vector: Any  # gradient sum (gradient mode) or rows * parameter delta (average mode)
    n: int  # rows behind the sums
    timings: tuple[tuple[int, float, str, float, int], ...]  # (block, seconds, worker, loss, n)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:
        return "local"


_ORDERS: dict[tuple[int, int, int], tuple[int, np.ndarray]] = {}


def _epoch_order(n: int, seed: int, block: int, epoch: int, shuffle: bool) -> np.ndarray | None:
    """Block ``block``'s row order in ``epoch``: a permutation drawn from ``(seed, block, epoch)``.

    Kept for the current epoch only, one per block and seed (int32 where it fits: 4 bytes per
    row), so a worker computes it once per epoch, not once per round, without holding every
    past epoch's permutation.
    """
    if not shuffle:
        return None
    key = (seed, block, n)
    hit = _ORDERS.get(key)
    if hit is not None and hit[0] == epoch:
        return hit[1]
    order = np.random.default_rng([seed, block, epoch]).permutation(n)
    if n < 2**31:
        order = order.astype(np.int32)
    if len(_ORDERS) > 4096:  # many runs in one worker process: forget the oldest
        _ORDERS.pop(next(iter(_ORDERS)))
    _ORDERS[key] = (epoch, order)
    return order


def _step_rows(n: int, step: int, steps: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a block's epoch order that belong to global step ``step``."""
    return (step * n) // steps, ((step + 1) * n) // steps


def _span(n: int, step: int, steps: int) -> int:
    lo, hi = _step_rows(n, step, steps)
    return hi - lo


def _rows(X: Any, Y: Any, order: np.ndarray | None, lo: int, hi: int) -> tuple[Any, Any]:
    if order is None:
        return X[lo:hi, ...], Y[lo:hi, ...]
    xp = namespace(X)
    from .backend import device

    idx = xp.asarray(order[lo:hi], device=device(X))
    return xp.take(X, idx, axis=0), xp.take(Y, idx, axis=0)


def partition_grad(
    block: Block,
    params: np.ndarray,
    spec: nn.MLPSpec,
    index: int,
    epoch: int,
    step: int,
    steps: int,
    seed: int,
    shuffle: bool,
) -> Partial:
    """Loss and gradient sums of block ``index`` over its share of global step ``step``."""
    start = time.perf_counter()
    X, Y = block
    n = X.shape[0]
    lo, hi = _step_rows(n, step, steps)
    Xb, Yb = _rows(X, Y, _epoch_order(n, seed, index, epoch, shuffle), lo, hi)
    loss, grad = nn.loss_and_grad(spec, params, Xb, Yb)
    seconds = time.perf_counter() - start
    flag = _finite_or_nan(loss, grad)
    return Partial(loss, grad, hi - lo, ((index, seconds, _worker_address(), flag, hi - lo),))


def _finite_or_nan(loss: float, vector: Any) -> float:
    """``loss`` if the loss and ``vector`` are finite, else NaN: marks the block that diverged."""
    xp = namespace(vector)
    ok = math.isfinite(loss) and bool(xp.all(xp.isfinite(vector)))
    return loss if ok else math.nan


def partition_local_steps(
    block: Block,
    params: np.ndarray,
    state: Any,
    spec: nn.MLPSpec,
    config: TrainConfig,
    learning_rate: float,
    index: int,
    schedule: tuple[tuple[int, int], ...],
    steps: int,
) -> tuple[Partial, Any]:
    """Run the inner optimizer over ``schedule`` (``(epoch, step, rows of the global step)``)
    on block ``index``.

    Returns the rows-weighted parameter change and the block's new inner optimizer state.
    """
    start = time.perf_counter()
    X, Y = block
    xp = namespace(X)
    from .backend import device

    n = X.shape[0]
    w0 = xp.asarray(params, device=device(X), dtype=X.dtype)
    w = w0
    opt = config.inner_optimizer()
    if state is None:
        state = opt.init(w)
    else:
        state = type(state)(*(xp.asarray(s, device=device(X)) for s in state))
    state = optim.set_learning_rate(state, learning_rate)
    loss_total, rows_total = 0.0, 0
    for epoch, step, step_rows in schedule:
        lo, hi = _step_rows(n, step, steps)
        if hi <= lo:
            continue
        Xb, Yb = _rows(X, Y, _epoch_order(n, config.random_state, index, epoch, config.shuffle),
                       lo, hi)
        loss, grad = nn.loss_and_grad(spec, w, Xb, Yb)
        m = hi - lo
        # The penalty is scaled by the *global* step's rows, so that with local_steps=1 and
        # plain SGD the rows-weighted average of the blocks' steps is the synchronous step.
        pen, pen_grad = nn.l2_penalty(spec, w, config.alpha, step_rows)
        g = grad / float(m) + pen_grad
        updates, state = opt.update(g, state, w)
        w = optim.apply_updates(w, updates)
        loss_total += loss + pen * m
        rows_total += m
    delta = (w - w0) * float(rows_total)
    seconds = time.perf_counter() - start
    timing = ((index, seconds, _worker_address(), _finite_or_nan(loss_total, delta),
               rows_total),)
    return Partial(loss_total, delta, rows_total, timing), state


def _same_namespace(vectors: Sequence[Any]) -> bool:
    try:
        namespace(*vectors)
        return True
    except TypeError:
        return False


def combine_grads(parts: list[Partial]) -> Partial:
    """Sum partials in the given (position) order. Mixed devices meet on the host."""
    vectors = [p.vector for p in parts]
    if not _same_namespace(vectors):
        vectors = [to_host(v) for v in vectors]
    total = vectors[0]
    for v in vectors[1:]:
        total = total + v
    return Partial(
        sum(float(p.loss) for p in parts),
        total,
        sum(int(p.n) for p in parts),
        tuple(t for p in parts for t in p.timings),
    )


class ScorePartial(NamedTuple):
    n: int
    loss: float
    correct: float  # classification
    sse: np.ndarray  # regression, per output
    sum_y: np.ndarray
    sum_y2: np.ndarray


def partition_score(block: Block, params: np.ndarray, spec: nn.MLPSpec) -> ScorePartial:
    """Sums behind accuracy / R² and the mean loss on a validation block."""
    X, Y = block
    xp = namespace(X)
    n = int(X.shape[0])
    k = int(Y.shape[1]) if Y.ndim == 2 else 1
    zeros = np.zeros(k)
    if n == 0:
        return ScorePartial(0, 0.0, 0.0, zeros, zeros, zeros)
    loss = _loss_only(spec, params, X, Y)
    out = nn.forward(spec, params, X)
    if spec.loss == "squared_error":
        r = out - Y
        return ScorePartial(
            n,
            loss,
            0.0,
            to_host(xp.sum(r * r, axis=0)).astype(np.float64),
            to_host(xp.sum(Y, axis=0)).astype(np.float64),
            to_host(xp.sum(Y * Y, axis=0)).astype(np.float64),
        )
    if spec.loss == "binary_log_loss":
        pred = xp.astype(out[:, 0] > 0.5, X.dtype)
        correct = xp.sum(xp.astype(pred == Y[:, 0], xp.float64))
    else:
        correct = xp.sum(xp.astype(xp.argmax(out, axis=1) == xp.argmax(Y, axis=1), xp.float64))
    return ScorePartial(n, loss, float(to_host(correct)), zeros, zeros, zeros)


def _loss_only(spec: nn.MLPSpec, params: np.ndarray, X: Any, Y: Any) -> float:
    loss, _ = nn.loss_and_grad(spec, params, X, Y)
    return float(loss)


def combine_scores(parts: list[ScorePartial]) -> ScorePartial:
    return ScorePartial(
        sum(p.n for p in parts),
        sum(p.loss for p in parts),
        sum(p.correct for p in parts),
        sum((p.sse for p in parts), np.zeros_like(parts[0].sse)),
        sum((p.sum_y for p in parts), np.zeros_like(parts[0].sum_y)),
        sum((p.sum_y2 for p in parts), np.zeros_like(parts[0].sum_y2)),
    )


# ------------------------------------------------- one task per worker, folded by position -----


def partition_grads(blocks: list[Block], indices: list[int], params: np.ndarray,
                    spec: nn.MLPSpec, epoch: int, step: int, steps: int, seed: int,
                    shuffle: bool) -> list[tuple[int, Partial]]:
    """:func:`partition_grad` for each block a worker holds, kept apart for the fold.

    ``params`` may be the previous round's :class:`StepState` (pipelined rounds)."""
    params = getattr(params, "params", params)
    return [(i, partition_grad(b, params, spec, i, epoch, step, steps, seed, shuffle))
            for b, i in zip(blocks, indices, strict=True)]


def partitions_local_steps(blocks: list[Block], indices: list[int], params: np.ndarray,
                           states: list[Any], spec: nn.MLPSpec, config: TrainConfig,
                           learning_rate: float,
                           schedules: list[tuple[tuple[int, int, int], ...]],
                           steps: int) -> list[tuple[int, tuple[Partial, Any]]]:
    """:func:`partition_local_steps` for each block a worker holds (each its own schedule)."""
    out = []
    for b, i, state, schedule in zip(blocks, indices, states, schedules, strict=True):
        part, new_state = partition_local_steps(b, params, state, spec, config, learning_rate,
                                                i, schedule, steps)
        out.append((i, (part, _to_host_state(new_state))))
    return out


def partition_scores(blocks: list[Block], indices: list[int], params: np.ndarray,
                     spec: nn.MLPSpec) -> list[tuple[int, ScorePartial]]:
    return [(i, partition_score(b, params, spec)) for b, i in zip(blocks, indices, strict=True)]


def _in_block_order(groups: list[list[tuple[int, Any]]]) -> list[Any]:
    return [p for _, p in sorted((pair for g in groups for pair in g), key=lambda t: t[0])]


def _host_partial(p: Partial) -> Partial:
    return p._replace(vector=to_host(p.vector))


def fold_partials(groups: list[list[tuple[int, Partial]]], split_every: int) -> Partial:
    """All blocks' partials summed by the fixed tree of block positions; host result."""
    return _host_partial(tree_fold(_in_block_order(groups), combine_grads,
                                   split_every=split_every))


class LocalResult(NamedTuple):
    partial: Partial
    states: tuple[Any, ...]  # per block, in block order, host arrays


def fold_local(groups: list[list[tuple[int, tuple[Partial, Any]]]],
               split_every: int) -> LocalResult:
    ordered = _in_block_order(groups)
    partial = tree_fold([p for p, _ in ordered], combine_grads, split_every=split_every)
    return LocalResult(_host_partial(partial), tuple(s for _, s in ordered))


def fold_scores(groups: list[list[tuple[int, ScorePartial]]], split_every: int) -> ScorePartial:
    return tree_fold(_in_block_order(groups), combine_scores, split_every=split_every)


def gradient_step(part: Partial, params: np.ndarray, opt_state: Any, spec: nn.MLPSpec,
                  config: TrainConfig, learning_rate: float) -> tuple[np.ndarray, Any, float]:
    """One synchronous optimizer step on a combined gradient (host arrays).

    The same function runs on the client (one round at a time) and inside the cluster
    (``optimizer_step``, rounds submitted ahead), so both give the same bits.
    """
    grad = to_host(part.vector)
    m = max(part.n, 1)
    pen, pen_grad = nn.l2_penalty(spec, params, config.alpha, m)
    g = grad / float(m) + pen_grad
    opt = config.inner_optimizer()
    opt_state = optim.set_learning_rate(opt_state, learning_rate)
    updates, opt_state = opt.update(g, opt_state, params)
    return optim.apply_updates(params, updates), opt_state, part.loss / m + pen


class StepState(NamedTuple):
    """What a pipelined round leaves on the cluster for the next one."""

    params: np.ndarray
    opt_state: Any
    round_loss: float
    n: int
    timings: tuple[tuple[int, float, str, float, int], ...]


def optimizer_step(part: Partial, prev: StepState, spec: nn.MLPSpec, config: TrainConfig,
                   learning_rate: float, round_no: int) -> StepState:
    """The optimizer update as a task: round r+1's gradients depend on it, not on the client."""
    _check_finite(part, round_no, "loss or gradient")
    params, opt_state, loss = gradient_step(part, prev.params, prev.opt_state, spec, config,
                                            learning_rate)
    return StepState(params, opt_state, loss, part.n, part.timings)


def fold_and_step(groups: list[list[tuple[int, Partial]]], split_every: int, prev: StepState,
                  spec: nn.MLPSpec, config: TrainConfig, learning_rate: float,
                  round_no: int) -> StepState:
    """:func:`fold_partials` then :func:`optimizer_step`, as one task."""
    return optimizer_step(fold_partials(groups, split_every), prev, spec, config,
                          learning_rate, round_no)


def round_metrics(state: StepState) -> tuple[float, int, tuple[Any, ...]]:
    """The few numbers the client gathers per pipelined round."""
    return state.round_loss, state.n, state.timings


# ---------------------------------------------------------------- client side -----------------


# What a round's futures raise when workers die under them (rather than a bug in a task).
# (distributed's FutureCancelledError and FuturesCancelledError are CancelledErrors.)
_DISRUPTIONS = (KilledWorker, concurrent.futures.CancelledError, CommClosedError)


def _renamed(dsk: dict, keys: list, suffix: str) -> tuple[dict, list]:
    """The same graph under fresh keys (``key-suffix``), so a retry never meets the failed
    round's task states on the client or the scheduler. Block futures keep their keys."""
    names: dict[Any, Any] = {
        k: f"{k}-{suffix}" if isinstance(k, str) else (f"{k[0]}-{suffix}", *k[1:]) for k in dsk
    }

    def sub(x: Any) -> Any:
        if type(x) is str:
            return names.get(x, x)
        if type(x) is tuple:
            try:
                if x in names:
                    return names[x]
            except TypeError:  # holds an unhashable constant: cannot be a key
                pass
            return tuple(sub(v) for v in x)
        if type(x) is list:
            return [sub(v) for v in x]
        return x

    return {names[k]: sub(v) for k, v in dsk.items()}, [names[k] for k in keys]


class _Rounds:
    """Builds and runs one graph per round; keys read like the algorithm on the dashboard."""

    def __init__(self, client: Any, blocks: BlockSet, spec: nn.MLPSpec, config: TrainConfig,
                 run_id: str):
        self.client = client
        self.blocks = blocks
        self.spec = spec
        self.config = config
        self.run_id = run_id
        self.block_keys = list(blocks.futures)  # futures in the graph become dependencies
        self.retries = 0  # disrupted rounds recovered (one "retry" event each)
        self.recovery_seconds = 0.0  # time those rounds took beyond a typical round
        self.round = 0  # training rounds submitted so far (set to the resumed state's count)
        self.max_retries = int(dask.config.get("pipeline.train.retries", 3))
        self.no_workers_timeout = parse_timedelta(
            dask.config.get("pipeline.train.no-workers-timeout", "30s"))
        self.watchdog_interval = parse_timedelta(
            dask.config.get("pipeline.train.watchdog-interval", "1s"))
        self._where: dict[int, str] = {}  # block index -> worker that computed its last partial
        self._placement: tuple[tuple[Any, ...], list[list[int]]] | None = None
        self._healthy: list[float] = []  # recent undisrupted round times, seconds
        self._lost: set[str] = set()  # workers already reported lost

    def _run(self, dsk: dict, keys: list, label: str) -> list[Any]:
        """Compute ``keys`` of the round graph ``dsk`` and return their values, surviving faults.

        A worker lost mid-round is handled by Dask (its blocks are recomputed from lineage on the
        survivors); the round is then reported as recovered. A round whose futures fail because
        workers died (``KilledWorker``, cancelled futures, closed comms) is resubmitted, the same
        graph under fresh keys, up to ``pipeline.train.retries`` times. When no worker is left for
        ``pipeline.train.no-workers-timeout`` the round fails with a RuntimeError instead of
        waiting forever. The happy path costs nothing beyond the fetch of the results: the
        scheduler is asked about workers only when a round is slow or a block has moved.
        """
        if label != "score":
            self.round += 1
        start = time.perf_counter()
        recovered_before = self.recovery_seconds
        reasons: list[str] = []
        graph, want = dsk, keys
        while True:
            futures = self.client.get(graph, want, sync=False)
            try:
                results = self._watch(futures, label)
                break
            except _DISRUPTIONS as exc:
                self.client.cancel(futures)
                reason = f"{type(exc).__name__}: {exc}"
                if len(reasons) >= self.max_retries:
                    raise RuntimeError(
                        f"round {self.round} ({label}) failed {len(reasons) + 1} times, "
                        f"last: {reason}"
                    ) from exc
                reasons.append(reason)
                self._retried(reason, "resubmitted", start, attempt=len(reasons))
                graph, want = _renamed(dsk, keys, f"retry{len(reasons)}")
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

    def _watch(self, futures: list[Any], label: str) -> list[Any]:
        """The values of ``futures``; every ``watchdog_interval`` of waiting, check that the
        cluster still has workers, and give up after ``no_workers_timeout`` without any."""
        from distributed import wait

        alone_since = None
        while True:
            try:
                if len(futures) == 1:  # one hop to the event loop: waits, then fetches
                    return [futures[0].result(timeout=self.watchdog_interval)]
                wait(futures, timeout=self.watchdog_interval)
                return self.client.gather(futures)
            except (TimeoutError, asyncio.TimeoutError):
                pass
            # Slow path only: one scheduler round trip per interval of waiting.
            if self.client.scheduler_info()["workers"]:
                alone_since = None
                continue
            now = time.monotonic()
            alone_since = now if alone_since is None else alone_since
            if now - alone_since >= self.no_workers_timeout:
                self.client.cancel(futures)
                raise RuntimeError(
                    f"no workers left: round {self.round} ({label}) cannot finish; waited "
                    f"{now - alone_since:.0f} s for a worker to join "
                    "(dask config pipeline.train.no-workers-timeout). Restart workers and resume "
                    "from the last checkpoint."
                )

    def _moved(self, results: list[Any]) -> tuple[set[str], str]:
        """Workers lost since the last round, and what happened to their blocks.

        A block whose partial now comes from another worker was rebuilt from lineage after its
        worker died, or copied by the scheduler for load balance: only the first is a disruption,
        told apart with one scheduler round trip, made only when a block moved.
        """
        partials = [r.partial if isinstance(r, LocalResult) else r for r in results]
        where = {t[0]: t[2] for r in partials if isinstance(r, Partial) for t in r.timings}
        moved = {i: self._where[i] for i, w in where.items()
                 if self._where.get(i, w) != w}
        self._where.update(where)
        if not moved:
            return set(), ""
        alive = set(self.client.scheduler_info()["workers"])
        lost = {w for w in moved.values() if w not in alive}
        blocks = sorted(i for i, w in moved.items() if w in lost)
        return lost, (f"worker(s) {', '.join(sorted(lost))} lost; blocks {blocks} recomputed "
                      f"from lineage on {', '.join(sorted({where[i] for i in blocks}))}")

    def _typical(self) -> float:
        return float(np.median(self._healthy)) if self._healthy else 0.0

    def _retried(self, reason: str, action: str, start: float, attempt: int = 0) -> None:
        extra = max(0.0, time.perf_counter() - start - self._typical())
        self.retries += 1
        self.recovery_seconds += extra
        _log(self.client, {"event": "retry", "run": self.run_id, "round": self.round,
                           "reason": reason, "action": action, "attempt": attempt,
                           "recovery_seconds": extra})

    # One task per worker, not per block: a task computes the partials of every block its worker
    # holds (in block order) and returns them separately; the root folds all partials with the
    # fixed tree of block positions (reduce.tree_fold). The numbers are those of a task-per-block
    # tree, bit for bit, whatever the placement, while a round costs W + 1 tasks instead of
    # P + P/split_every + ...: speed that survives many small partitions.

    def _groups(self, futures: list[Any]) -> list[list[int]]:
        """Block indices grouped by the worker holding them (one scheduler round trip, made
        once per epoch and after a disruption; a stale grouping only costs a data copy)."""
        key = tuple(f.key for f in futures)
        if self._placement is not None and self._placement[0] == key:
            return self._placement[1]
        who = self.client.who_has(futures)
        by_worker: dict[str, list[int]] = {}
        for i, f in enumerate(futures):
            holders = sorted(who.get(f.key, ()))
            by_worker.setdefault(holders[0] if holders else "", []).append(i)
        groups = [by_worker[w] for w in sorted(by_worker)]
        self._placement = (key, groups)
        return groups

    @staticmethod
    def _params_node(params: np.ndarray) -> Any:
        """The parameters as a literal argument of each worker's task: shipped with the task
        itself (one message per worker) instead of as a key that one worker computes and the
        others fetch (an extra transfer round trip per round)."""
        from dask._task_spec import DataNode

        return DataNode(None, params)

    def refresh_placement(self) -> None:
        self._placement = None

    def _gradient_graph(self, params: Any, token: str, epoch: int, step: int,
                        steps: int) -> tuple[dict[Any, Any], list[Any]]:
        """One round's gradient: a ``partition_grads`` task per worker, folded by position.
        ``params`` is a literal node or the previous round's ``optimizer_step`` future."""
        dsk: dict[Any, Any] = {}
        leaves = []
        for j, idx in enumerate(self._groups(self.block_keys)):
            key = (f"partition_grads-{token}", j)
            dsk[key] = (partition_grads, [self.block_keys[i] for i in idx], idx, params,
                        self.spec, epoch, step, steps, self.config.random_state,
                        self.config.shuffle)
            leaves.append(key)
        return dsk, leaves

    def gradient(self, params: np.ndarray, epoch: int, step: int, steps: int) -> Partial:
        token = tokenize(self.run_id, "grad", epoch, step)
        dsk, leaves = self._gradient_graph(self._params_node(params), token, epoch, step,
                                           steps)
        root = f"combine_grads-{token}"
        dsk[root] = (fold_partials, leaves, self.config.split_every)
        (out,) = self._run(dsk, [root], "gradient")
        return out

    def pipelined_epoch(self, params: np.ndarray, opt_state: Any, learning_rate: float,
                        epoch: int, steps: int, round_no: int, ahead: int,
                        ) -> tuple[np.ndarray, Any, list[tuple[Partial, float, float]]]:
        """All rounds of one ``sync="gradient"`` epoch, up to ``ahead`` of them in flight.

        The optimizer update is a task (``optimizer_step``) that round r+1's gradient tasks
        depend on, so the cluster never waits for the client; the client only gathers each
        round's loss, row count and timings, and the parameters once at the end. The chain
        starts from literal values every epoch, so lineage (and recomputation after a worker
        loss) never reaches back further than the epoch. Raises a disruption for the caller
        to redo the epoch one round at a time, which gives the same bits.
        """
        from collections import deque

        prev: Any = self._params_node(StepState(params, opt_state, 0.0, 0, ()))
        window: deque[Any] = deque()  # metrics futures of the rounds in flight
        out: list[tuple[Partial, float, float]] = []
        last_done = time.perf_counter()

        def consume() -> None:
            nonlocal last_done
            fut = window.popleft()
            self._watch([fut], "gradient")
            loss, n, timings = fut.result()
            now = time.perf_counter()
            out.append((Partial(loss, None, n, timings), loss, now - last_done))
            last_done = now

        for step in range(steps):
            token = tokenize(self.run_id, "grad-ahead", epoch, step)
            dsk, leaves = self._gradient_graph(prev, token, epoch, step, steps)
            # fold and update in one task: one worker-to-worker hop less per round
            skey = f"combine_grads_and_step-{token}"
            dsk[skey] = (fold_and_step, leaves, self.config.split_every, prev, self.spec,
                         self.config, learning_rate, round_no + step)
            mkey = f"round_metrics-{token}"
            dsk[mkey] = (round_metrics, skey)
            prev, metrics = self.client.get(dsk, [skey, mkey], sync=False)
            window.append(metrics)
            if len(window) >= ahead:
                consume()
        while window:
            consume()
        self._watch([prev], "gradient")
        final: StepState = prev.result()
        self.round += steps
        return final.params, final.opt_state, out

    def note_fallback(self, exc: BaseException) -> None:
        """A pipelined epoch was disrupted: count it; the caller redoes the epoch."""
        self._placement = None
        self._retried(f"{type(exc).__name__}: {exc}", "epoch redone round by round",
                      time.perf_counter())

    def local_steps(
        self,
        params: np.ndarray,
        states: list[Any],
        learning_rate: float,
        schedules: list[tuple[tuple[int, int, int], ...]],
        steps: int,
    ) -> tuple[Partial, list[Any]]:
        token = tokenize(self.run_id, "local", schedules)
        pkey = self._params_node(params)
        dsk: dict[Any, Any] = {}
        leaves = []
        for j, idx in enumerate(self._groups(self.block_keys)):
            key = (f"partition_local_steps-{token}", j)
            dsk[key] = (partitions_local_steps, [self.block_keys[i] for i in idx], idx, pkey,
                        [states[i] for i in idx], self.spec, self.config, learning_rate,
                        [schedules[i] for i in idx], steps)
            leaves.append(key)
        root = f"combine_deltas-{token}"
        dsk[root] = (fold_local, leaves, self.config.split_every)
        (out,) = self._run(dsk, [root], "average")
        return out.partial, list(out.states)

    def score(self, blocks: BlockSet, params: np.ndarray, tag: Any) -> ScorePartial:
        token = tokenize(self.run_id, "score", tag)
        pkey = self._params_node(params)
        dsk: dict[Any, Any] = {}
        leaves = []
        futures = list(blocks.futures)
        for j, idx in enumerate(self._groups(futures)):
            key = (f"partition_scores-{token}", j)
            dsk[key] = (partition_scores, [futures[i] for i in idx], idx, pkey, self.spec)
            leaves.append(key)
        root = f"combine_scores-{token}"
        dsk[root] = (fold_scores, leaves, self.config.split_every)
        (out,) = self._run(dsk, [root], "score")
        return out


def _to_host_state(state: Any) -> Any:
    """Inner optimizer states come back to the client as host arrays (small: parameter-sized),
    so a round's graph never depends on an earlier round and recovery recomputes one round."""
    return type(state)(*(to_host(s) for s in state))


def _check_finite(part: Partial, round_no: int, what: str) -> None:
    if math.isfinite(part.loss) and np.all(np.isfinite(to_host(part.vector))):
        return
    bad = [t for t in part.timings if not math.isfinite(t[3])]
    where = f" in block {bad[0][0]} (worker {bad[0][2]})" if bad else ""
    raise FloatingPointError(
        f"training diverged at round {round_no}: non-finite {what}{where}. Lower "
        "learning_rate_init, check the inputs for inf/NaN, or scale the features."
    )


def _score_value(s: ScorePartial, spec: nn.MLPSpec) -> float:
    if s.n == 0:
        return float("nan")
    if spec.loss == "squared_error":
        ss_tot = s.sum_y2 - s.sum_y**2 / s.n
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - s.sse / ss_tot, np.where(s.sse == 0, 1.0, 0.0))
        return float(np.mean(r2))
    return float(s.correct / s.n)


def evaluate(
    client: Any,
    blocks: BlockSet,
    params: np.ndarray,
    spec: nn.MLPSpec,
    *,
    split_every: int = 8,
) -> dict[str, float]:
    """Mean loss and accuracy (classification) or R² (regression) of ``params`` on ``blocks``."""
    rounds = _Rounds(client, blocks, spec, TrainConfig(split_every=split_every), uuid.uuid4().hex)
    s = rounds.score(blocks, params, "evaluate")
    name = "r2" if spec.loss == "squared_error" else "accuracy"
    return {"loss": s.loss / max(s.n, 1), name: _score_value(s, spec), "n": s.n}


def _log(client: Any, msg: dict[str, Any]) -> None:
    msg.setdefault("time", time.time())
    with contextlib.suppress(Exception):  # monitoring must never break training
        client.log_event(EVENT_TOPIC, msg)


def _steps_per_epoch(n_samples: int, batch_size: int | None) -> int:
    if batch_size is None or batch_size >= n_samples:
        return 1
    return math.ceil(n_samples / batch_size)


def initial_state(params: np.ndarray, config: TrainConfig, n_blocks: int) -> TrainState:
    opt_state = None
    outer = None
    local = None
    if config.solver != "lbfgs":
        if config.sync == "gradient":
            opt_state = _to_host_state(config.inner_optimizer().init(params))
        else:
            local = [None] * n_blocks
            if config.outer_momentum:
                outer = _to_host_state(_outer_optimizer(config).init(params))
    return TrainState(
        params=params,
        opt_state=opt_state,
        local_states=local,
        outer_state=outer,
        epoch=0,
        t=0,
        learning_rate=config.learning_rate_init,
        loss_curve=[],
        validation_scores=[],
        best_loss=math.inf,
        best_validation_score=-math.inf,
        no_improvement_count=0,
        best_params=None,
        history=[],
        rounds=0,
    )


def _outer_optimizer(config: TrainConfig) -> optim.GradientTransformation:
    return optim.sgd(config.outer_learning_rate, momentum=config.outer_momentum, nesterov=True)


def train(
    client: Any,
    blocks: BlockSet,
    *,
    spec: nn.MLPSpec,
    config: TrainConfig,
    params: np.ndarray | None = None,
    validation: BlockSet | None = None,
    state: TrainState | None = None,
    on_epoch_end: Callable[[TrainState], None] | None = None,
    run_name: str = "fit",
    verbose: bool = False,
) -> TrainResult:
    """Train ``spec`` on ``blocks`` data-parallel; returns the final parameters and history.

    Parameters
    ----------
    blocks : BlockSet
        Training blocks (see :func:`pipeline.blocks.to_blocks`), one per partition.
    spec : nn.MLPSpec
        The network.
    config : TrainConfig
        Solver, schedule, batch size (global, in rows), sync mode and stopping rules.
    params : ndarray, optional
        Starting flat parameters (host); Glorot-initialised from ``random_state`` when omitted.
    validation : BlockSet, optional
        Scored after every epoch (accuracy or R²); drives ``early_stopping``.
    state : TrainState, optional
        Resume from a checkpointed state: the run continues exactly where it stopped.
    on_epoch_end : callable, optional
        Called with the :class:`TrainState` after every epoch (checkpointing hook).
    """
    config.validate()
    dtype = np.dtype("float64" if _block_dtype_is_64(blocks) else "float32")
    if state is None:
        if params is None:
            params = nn.init_params(spec, config.random_state, dtype=dtype)
        state = initial_state(np.asarray(params, dtype=dtype), config, len(blocks.futures))
    if config.early_stopping and validation is None:
        raise ValueError("early_stopping=True needs validation data")
    run_id = f"{run_name}-{uuid.uuid4().hex[:8]}"
    rounds = _Rounds(client, blocks, spec, config, run_id)
    rounds.round = state.rounds
    started = time.time()
    _log(client, {
        "event": "start", "run": run_id, "config": asdict(config),
        "n_partitions": len(blocks.futures), "n_samples": blocks.n_samples,
        "n_features": blocks.n_features, "n_params": spec.n_params, "sync": config.sync,
        "estimator": run_name,
    })
    try:
        if config.solver == "lbfgs":
            result = _train_lbfgs(client, rounds, blocks, spec, config, state, validation,
                                  run_id, verbose)
        else:
            result = _train_stochastic(client, rounds, blocks, spec, config, state, validation,
                                       on_epoch_end, run_id, verbose)
    except BaseException as exc:
        _log(client, {"event": "end", "run": run_id, "status": "failed", "n_iter": 0,
                      "rounds": 0, "seconds": time.time() - started, "error": repr(exc)})
        raise
    result.seconds = time.time() - started
    result.recovery_seconds = rounds.recovery_seconds
    _log(client, {"event": "end", "run": run_id,
                  "status": "stopped_early" if result.stopped_early else "finished",
                  "n_iter": result.n_iter, "rounds": result.rounds, "seconds": result.seconds,
                  "error": None})
    return result


def _block_dtype_is_64(blocks: BlockSet) -> bool:
    return np.dtype(blocks.dtype) == np.float64


def _round_event(client: Any, run_id: str, state_round: int, epoch: int, part: Partial,
                 seconds: float, loss: float) -> None:
    timings = sorted(part.timings)
    _log(client, {
        "event": "round", "run": run_id, "round": state_round, "epoch": epoch,
        "loss": loss, "samples": int(part.n), "round_seconds": seconds,
        "samples_per_s": part.n / seconds if seconds > 0 else None,
        "partition_seconds": [t[1] for t in timings],
        "partition_workers": [t[2] for t in timings],
    })


class _Balancer:
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


def _train_stochastic(
    client: Any,
    rounds: _Rounds,
    blocks: BlockSet,
    spec: nn.MLPSpec,
    config: TrainConfig,
    state: TrainState,
    validation: BlockSet | None,
    on_epoch_end: Callable[[TrainState], None] | None,
    run_id: str,
    verbose: bool,
) -> TrainResult:
    n_total = blocks.n_samples
    if config.sync == "gradient":
        # batch_size is the global mini-batch; each block contributes its proportional share
        steps = _steps_per_epoch(n_total, config.batch_size)
        per_round = 1
    else:
        # batch_size is each block's local mini-batch (as in DDP / local SGD): the largest
        # block takes batch_size rows per step, the others proportionally fewer, so every block
        # sees each of its rows once per epoch in the same number of steps.
        steps = _steps_per_epoch(max(blocks.rows), config.batch_size)
        per_round = steps if config.local_steps is None else min(config.local_steps, steps)
    params = state.params
    opt_state = state.opt_state
    local_states = state.local_states
    outer_state = state.outer_state
    lr = state.learning_rate
    loss_curve = list(state.loss_curve)
    val_scores = list(state.validation_scores)
    history = list(state.history)
    best_loss, best_val = state.best_loss, state.best_validation_score
    no_improve = state.no_improvement_count
    best_params = state.best_params
    t = state.t
    round_no = state.rounds
    stopped_early = False
    epoch = state.epoch
    last_event = 0.0
    n_blocks = len(blocks.futures)
    cursors = (list(state.cursors) if state.cursors is not None
               else [epoch * steps] * n_blocks)
    step_rows = [sum(_span(n, s, steps) for n in blocks.rows) for s in range(steps)]
    balancer = _Balancer(n_blocks, enabled=config.balance == "throughput")

    while epoch < config.max_iter:
        epoch_start = time.perf_counter()
        rounds.refresh_placement()
        pipelined = config.sync == "gradient" and config.rounds_ahead > 1 and steps > 1
        epoch_loss, epoch_rows, round_times = 0.0, 0, []
        first = 0
        while (first < steps) if config.sync == "gradient" else (epoch_rows < n_total):
            r0 = time.perf_counter()
            if config.sync == "gradient" and pipelined:
                # rounds submitted ahead: see _Rounds.pipelined_epoch
                try:
                    out = rounds.pipelined_epoch(params, opt_state, lr, epoch, steps, round_no,
                                                 config.rounds_ahead)
                except _DISRUPTIONS as exc:
                    rounds.note_fallback(exc)
                    pipelined = False  # redo this epoch one round at a time (same bits)
                    continue
                params, opt_state, parts = out
                for k, (part, loss_r, seconds) in enumerate(parts):
                    round_times.append(seconds)
                    epoch_loss += loss_r * part.n
                    epoch_rows += part.n
                    round_no += 1
                    now = time.perf_counter()
                    if now - last_event > 0.25 or k == len(parts) - 1:
                        _round_event(client, run_id, round_no, epoch + 1, part, seconds, loss_r)
                        last_event = now
                first = steps
                continue
            if config.sync == "gradient":
                part = rounds.gradient(params, epoch, first, steps)
                _check_finite(part, round_no, "loss or gradient")
                params, opt_state, round_loss = gradient_step(part, params, opt_state, spec,
                                                              config, lr)
            else:
                counts = balancer.counts(per_round)
                end = (epoch + 1) * steps
                schedules = []
                for i, c in enumerate(cursors):
                    # "none": every block stops at the epoch boundary, all in step; "throughput":
                    # blocks run their own streams across epochs, faster workers further.
                    stop = c + counts[i] if config.balance == "throughput" else min(
                        c + counts[i], end)
                    schedules.append(tuple((k // steps, k % steps, step_rows[k % steps])
                                           for k in range(c, stop)))
                    cursors[i] = stop
                part, local_states = rounds.local_steps(params, local_states, lr, schedules,
                                                        steps)
                balancer.observe(part.timings, [len(sch) for sch in schedules])
                _check_finite(part, round_no, "loss or parameter update")
                m = max(part.n, 1)
                avg_delta = (to_host(part.vector) / float(m)).astype(params.dtype)
                if outer_state is None and config.outer_learning_rate == 1.0:
                    params = params + avg_delta
                else:
                    outer = _outer_optimizer(config)
                    if outer_state is None:
                        outer_state = _to_host_state(outer.init(params))
                    updates, outer_state = outer.update(-avg_delta, outer_state, params)
                    params = optim.apply_updates(params, updates)
                round_loss = part.loss / m  # includes each step's penalty
            seconds = time.perf_counter() - r0
            round_times.append(seconds)
            epoch_loss += round_loss * part.n
            epoch_rows += part.n
            round_no += 1
            first += per_round
            now = time.perf_counter()
            last_of_epoch = (first >= steps) if config.sync == "gradient" else (
                epoch_rows >= n_total)
            if now - last_event > 0.25 or last_of_epoch:
                _round_event(client, run_id, round_no, epoch + 1, part, seconds, round_loss)
                last_event = now
        epoch += 1
        t += epoch_rows
        loss = epoch_loss / max(epoch_rows, 1)
        loss_curve.append(loss)
        score = None
        if validation is not None:
            score = _score_value(rounds.score(validation, params, (epoch, "val")), spec)
            val_scores.append(score)
        # scikit-learn's stopping rule (_update_no_improvement_count)
        if config.early_stopping:
            assert score is not None
            no_improve = no_improve + 1 if score < best_val + config.tol else 0
            if score > best_val:
                best_val = score
                best_params = params.copy()
        else:
            no_improve = no_improve + 1 if loss > best_loss - config.tol else 0
        best_loss = min(best_loss, loss)
        epoch_seconds = time.perf_counter() - epoch_start
        record = {
            "epoch": epoch, "loss": loss, "validation_score": score,
            "samples_per_s": epoch_rows / epoch_seconds if epoch_seconds > 0 else None,
            "seconds": epoch_seconds, "learning_rate": lr, "rounds": len(round_times),
            "round_seconds_median": float(np.median(round_times)),
        }
        if config.sync == "average":
            record["local_steps"] = balancer.counts(per_round)  # per block, next round
        history.append(record)
        _log(client, {"event": "epoch", "run": run_id, "round": round_no, **record})
        if verbose:
            print(f"epoch {epoch}: loss {loss:.6f}" + (f", validation {score:.4f}"
                                                      if score is not None else ""))
        if config.learning_rate == "invscaling" and config.solver == "sgd":
            lr = optim.invscaling(config.learning_rate_init, config.power_t, t)
        if no_improve > config.n_iter_no_change:
            if config.solver == "sgd" and config.learning_rate == "adaptive" and lr > 1e-6:
                lr /= 5.0
                no_improve = 0
            else:
                stopped_early = True
        state = TrainState(params, opt_state, local_states, outer_state, epoch, t, lr,
                           loss_curve, val_scores, best_loss, best_val, no_improve, best_params,
                           history, round_no,
                           list(cursors) if config.sync == "average" else None)
        if on_epoch_end is not None:
            on_epoch_end(state)
        if stopped_early:
            break
    final = best_params if (config.early_stopping and best_params is not None) else params
    return TrainResult(final, state, epoch, loss_curve[-1] if loss_curve else math.nan,
                       stopped_early, run_id, 0.0, round_no, rounds.retries, history)


def _train_lbfgs(
    client: Any,
    rounds: _Rounds,
    blocks: BlockSet,
    spec: nn.MLPSpec,
    config: TrainConfig,
    state: TrainState,
    validation: BlockSet | None,
    run_id: str,
    verbose: bool,
) -> TrainResult:
    """Full-batch L-BFGS (scipy) driven by distributed loss-and-gradient rounds, like Spark's
    MLP with treeAggregate."""
    from scipy.optimize import minimize

    dtype = state.params.dtype
    n_total = blocks.n_samples
    counter = {"rounds": state.rounds}
    loss_curve: list[float] = []
    history: list[dict[str, Any]] = []

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        r0 = time.perf_counter()
        p = x.astype(dtype)
        part = rounds.gradient(p, 0, 0, 1)
        _check_finite(part, counter["rounds"], "loss or gradient")
        pen, pen_grad = nn.l2_penalty(spec, p, config.alpha, n_total)
        loss = part.loss / n_total + pen
        grad = to_host(part.vector) / n_total + pen_grad
        counter["rounds"] += 1
        _round_event(client, run_id, counter["rounds"], len(loss_curve) + 1, part,
                     time.perf_counter() - r0, loss)
        return float(loss), np.asarray(grad, dtype=np.float64)

    def callback(intermediate_result: Any) -> None:
        # scipy passes the OptimizeResult when the parameter has this name
        fx = getattr(intermediate_result, "fun", None)
        if fx is not None:
            loss_curve.append(float(fx))
            history.append({"epoch": len(loss_curve), "loss": float(fx),
                            "validation_score": None, "samples_per_s": None,
                            "seconds": None, "learning_rate": None})

    res = minimize(
        fun,
        state.params.astype(np.float64),
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        # ftol as scikit-learn's LogisticRegression sets it: stop on the gradient (gtol=tol),
        # not on a relative loss change that would stop far from the optimum.
        options={"maxfun": config.max_fun, "maxiter": config.max_iter, "gtol": config.tol,
                 "ftol": 64 * np.finfo(float).eps},
    )
    params = res.x.astype(dtype)
    val_scores: list[float] = []
    if validation is not None:
        val_scores.append(_score_value(rounds.score(validation, params, "lbfgs"), spec))
        if history:
            history[-1]["validation_score"] = val_scores[-1]
    new_state = state._replace(params=params, epoch=int(res.nit), t=n_total * int(res.nfev),
                               loss_curve=loss_curve, validation_scores=val_scores,
                               history=history, rounds=counter["rounds"])
    return TrainResult(params, new_state, int(res.nit), float(res.fun), False, run_id, 0.0,
                       counter["rounds"], rounds.retries, history)
