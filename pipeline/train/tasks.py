"""Worker tasks: pure functions on the blocks a worker holds.

Each block computes a partial result with the array namespace of its data (NumPy or CuPy). A
partial holds *sums* (loss, gradient, rows-weighted parameter change), so partials add
associatively and :func:`pipeline.reduce.tree_fold` combines them in a fixed order of block
positions, never in completion order. One task per worker computes the partials of every block it
holds and returns them apart, keyed by block position, for that fold.

A block's rows are visited in an order drawn from ``(seed, block, epoch)`` (chunks of contiguous
rows in a shuffled order, rows shuffled inside each chunk: :func:`epoch_order`); global step ``s``
of ``steps`` takes rows ``[s n / steps, (s + 1) n / steps)`` of that order, so the mini-batches do
not depend on the cluster, nor on where the block is stored (:mod:`pipeline.stores`).
"""

from __future__ import annotations

import inspect
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import backend as bk
from .. import optim
from ..backend import device, namespace, to_device_of, to_host
from ..blocks import Block
from ..nn import Context, Workspace
from ..reduce import tree_fold

__all__ = [
    "EPOCH_CHUNK_ROWS",
    "Partial",
    "ScorePartial",
    "StepState",
    "chunk_bounds",
    "chunk_permutation",
    "chunk_sequence",
    "combine_grads",
    "combine_scores",
    "epoch_order",
    "fold_and_step",
    "fold_local",
    "fold_partials",
    "fold_scores",
    "gradient_step",
    "partition_grad",
    "partition_grads",
    "partition_local_steps",
    "partition_score",
    "partition_scores",
    "partitions_local_steps",
    "replica_local_steps",
    "round_metrics",
    "step_rows",
]

Timing = tuple[int, float, str, float, int]  # (block, seconds, worker, loss or NaN, rows)


class Partial(NamedTuple):
    """What a block sends back: sums, so partials add associatively."""

    loss: float  # sum of per-row data loss
    vector: Any  # gradient sum (gradient mode) or rows * parameter delta (average mode)
    n: int  # rows behind the sums
    timings: tuple[Timing, ...]


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:
        return "local"


# ------------------------------------------------------------------ which rows, in which order --

EPOCH_CHUNK_ROWS = 32_768  # rows of one contiguous chunk of the epoch order (see epoch_order)
_SEQUENCE_KEY = 2**32 - 1  # last seed word of the chunks' visiting order

_ORDERS: OrderedDict[tuple[int, int, int], tuple[int, np.ndarray]] = OrderedDict()
_ORDERS_MAX_BYTES = 256 * 2**20  # a worker keeps at most this much of permutations


def n_chunks(n: int) -> int:
    """How many chunks of :data:`EPOCH_CHUNK_ROWS` rows (the last may be shorter) ``n`` rows
    make."""
    return -(-n // EPOCH_CHUNK_ROWS)


def chunk_bounds(n: int, chunk: int) -> tuple[int, int]:
    """Rows ``[a, b)`` of a block of ``n`` rows that chunk ``chunk`` holds (contiguous)."""
    return chunk * EPOCH_CHUNK_ROWS, min((chunk + 1) * EPOCH_CHUNK_ROWS, n)


def chunk_sequence(n: int, seed: int, block: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The order in which block ``block``'s chunks are visited in ``epoch``: a permutation
    drawn from ``(seed, block, epoch, 2**32 - 1)``, a key no chunk's rows use (``0, 1, ...``
    without ``shuffle``)."""
    if not shuffle:
        return np.arange(n_chunks(n))
    return np.random.default_rng([seed, block, epoch, _SEQUENCE_KEY]).permutation(n_chunks(n))


def chunk_permutation(n: int, seed: int, block: int, epoch: int, chunk: int) -> np.ndarray:
    """The order of the rows inside chunk ``chunk`` in ``epoch`` (offsets from the chunk's
    first row): a permutation drawn from ``(seed, block, epoch, chunk)``. (NumPy's seed
    sequences ignore trailing zero words, so chunk 0 draws what ``(seed, block, epoch)`` drew
    before chunks existed: a block of at most one chunk keeps its former order, bit for bit.)"""
    a, b = chunk_bounds(n, chunk)
    order = np.random.default_rng([seed, block, epoch, chunk]).permutation(b - a)
    return order.astype(np.int32)  # a chunk is far below 2**31 rows


def epoch_order(n: int, seed: int, block: int, epoch: int, shuffle: bool) -> np.ndarray | None:
    """Block ``block``'s row order in ``epoch`` (``None``: rows in storage order).

    The order is two-level, so that a block stored on disk or re-read from its source is read
    in large contiguous pieces: the block's rows are cut into chunks of :data:`EPOCH_CHUNK_ROWS`
    contiguous rows, the chunks are visited in the order :func:`chunk_sequence` draws from
    ``(seed, block, epoch)``, and the rows inside each chunk in the order
    :func:`chunk_permutation` draws from ``(seed, block, epoch, chunk)``. Every block store
    (memory, disk, stream; :mod:`pipeline.stores`) visits the same rows in the same order, so
    they give the same bits. A block of at most one chunk gets a full permutation.

    Kept for the current epoch only, one per block and seed (int32 where it fits: 4 bytes per
    row), in a cache bounded by bytes (least recently used first out), so a worker computes it
    once per epoch, not once per round.
    """
    if not shuffle:
        return None
    key = (seed, block, n)
    hit = _ORDERS.get(key)
    if hit is not None and hit[0] == epoch:
        _ORDERS.move_to_end(key)
        return hit[1]
    order = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    pos = 0
    for chunk in chunk_sequence(n, seed, block, epoch, shuffle):
        a, b = chunk_bounds(n, int(chunk))
        order[pos:pos + b - a] = chunk_permutation(n, seed, block, epoch, int(chunk))
        order[pos:pos + b - a] += a
        pos += b - a
    _ORDERS[key] = (epoch, order)
    _ORDERS.move_to_end(key)
    while len(_ORDERS) > 1 and sum(o.nbytes for _, o in _ORDERS.values()) > _ORDERS_MAX_BYTES:
        _ORDERS.popitem(last=False)
    return order


def step_rows(n: int, step: int, steps: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a block's epoch order that belong to global step ``step``."""
    return (step * n) // steps, ((step + 1) * n) // steps


def span(n: int, step: int, steps: int) -> int:
    lo, hi = step_rows(n, step, steps)
    return hi - lo


_WORKSPACES: OrderedDict[tuple[int, tuple[int, ...], str], Workspace] = OrderedDict()
_WORKSPACES_MAX = 256  # blocks' workspaces a worker keeps (least recently used first out)


def workspace_for(index: int, X: Any) -> Workspace:
    """The buffers block ``index`` reuses from one step (and one round) to the next, on this
    worker: the gathered batch, activations, deltas and the flat gradient (see
    :mod:`pipeline.nn.workspace`). Without them a nanny-started worker faults every page of
    every step's arrays in again (its ``MALLOC_TRIM_THRESHOLD_`` pins the mmap threshold)."""
    key = (index, tuple(X.shape), str(X.dtype))
    ws = _WORKSPACES.get(key)
    if ws is None:
        ws = _WORKSPACES[key] = Workspace()
        while len(_WORKSPACES) > _WORKSPACES_MAX:
            _WORKSPACES.popitem(last=False)
    _WORKSPACES.move_to_end(key)
    return ws


def _rows(block: Any, seed: int, index: int, epoch: int, shuffle: bool, lo: int, hi: int,
          ws: Workspace) -> tuple[Any, Any]:
    """Rows ``[lo, hi)`` of block ``index``'s epoch order (:func:`epoch_order`) as ``(X, Y)``.

    A :class:`Block` in memory gathers them into ``ws``'s buffers; a store handle
    (:mod:`pipeline.stores`: a file on the worker's disk, a partition re-read every epoch) reads
    the chunks that hold them, the next chunk prefetched while this one trains. The same rows in
    the same order either way, so every store gives the same bits.
    """
    if not isinstance(block, Block):
        return block.take_epoch_rows(seed, index, epoch, shuffle, lo, hi, ws)
    X, Y = block
    order = epoch_order(X.shape[0], seed, index, epoch, shuffle)
    if order is None:
        return X[lo:hi, ...], Y[lo:hi, ...]
    if type(X) is np.ndarray:
        idx = order[lo:hi]  # what asarray gives for host data: the slice itself
    else:
        idx = namespace(X).asarray(order[lo:hi], device=device(X))
    # rows of a permutation of range(n): in range by construction
    return ws.take_rows("X", X, idx, in_range=True), ws.take_rows("Y", Y, idx, in_range=True)


# scoring: no dropout or augmentation (training=False), no input gradient
_EVALUATION = Context(training=False, key=None, workspace=None, need_input_grad=False)


def _like(block: Any) -> Any:
    """An array with ``block``'s namespace, device, dtype and shape (a store handle: a
    zero-stride host array that owns no rows)."""
    return block.X if isinstance(block, Block) else block.like


def _as_block(block: Any) -> Block:
    """The whole block in memory (a store handle loads it: scoring reads every row once)."""
    return block if isinstance(block, Block) else block.load()


def _step_context(ws: Workspace, seed: int, index: int, epoch: int, step: int) -> Context:
    return Context(training=True, key=(seed, index, epoch, step), workspace=ws,
                   need_input_grad=False)


def _finite_or_nan(loss: float, vector: Any) -> float:
    """``loss`` if the loss and ``vector`` are finite, else NaN: marks the block that diverged."""
    xp = namespace(vector)
    ok = math.isfinite(loss) and bool(xp.all(xp.isfinite(vector)))
    return loss if ok else math.nan


class Rate(NamedTuple):
    """The epoch-level learning rate handed to the optimizer state: the rate itself
    (scikit-learn's constant/invscaling/adaptive rules), or, for an optimizer that follows its
    own schedule (warm-up, cosine), a multiplier of that schedule."""

    value: float
    as_scale: bool = False

    def apply(self, state: Any) -> Any:
        if self.as_scale:
            return optim.set_learning_rate_scale(state, self.value)
        return optim.set_learning_rate(state, self.value)


# ------------------------------------------------------------------ exact gradient -------------


def partition_grad(block: Block, params: np.ndarray, model: Any, index: int, epoch: int,
                   step: int, steps: int, seed: int, shuffle: bool) -> Partial:
    """Loss and gradient sums of block ``index`` over its share of global step ``step``."""
    start = time.perf_counter()
    X = _like(block)
    n = X.shape[0]
    lo, hi = step_rows(n, step, steps)
    ws = workspace_for(index, X)
    Xb, Yb = _rows(block, seed, index, epoch, shuffle, lo, hi, ws)
    loss, grad = model.loss_and_grad(params, Xb, Yb,
                                     ctx=_step_context(ws, seed, index, epoch, step))
    grad = namespace(grad).asarray(grad, copy=True)  # leaves the task: not the workspace's
    seconds = time.perf_counter() - start
    flag = _finite_or_nan(loss, grad)
    return Partial(loss, grad, hi - lo, ((index, seconds, _worker_address(), flag, hi - lo),))


def partition_grads(blocks: list[Block], indices: list[int], params: Any, model: Any,
                    epoch: int, step: int, steps: int, seed: int,
                    shuffle: bool) -> list[tuple[int, Partial]]:
    """:func:`partition_grad` for each block a worker holds, kept apart for the fold.

    ``params`` may be the previous round's :class:`StepState` (pipelined rounds)."""
    params = getattr(params, "params", params)
    return [(i, partition_grad(b, params, model, i, epoch, step, steps, seed, shuffle))
            for b, i in zip(blocks, indices, strict=True)]


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


def _in_block_order(groups: list[list[tuple[int, Any]]]) -> list[Any]:
    return [p for _, p in sorted((pair for g in groups for pair in g), key=lambda t: t[0])]


def _host_partial(p: Partial) -> Partial:
    return p._replace(vector=to_host(p.vector))


def fold_partials(groups: list[list[tuple[int, Partial]]], split_every: int) -> Partial:
    """All blocks' partials summed by the fixed tree of block positions; host result."""
    return _host_partial(tree_fold(_in_block_order(groups), combine_grads,
                                   split_every=split_every))


def gradient_step(part: Partial, params: np.ndarray, opt_state: Any, model: Any,
                  optimizer: optim.GradientTransformation, alpha: float,
                  learning_rate: Rate) -> tuple[np.ndarray, Any, float]:
    """One synchronous optimizer step on a combined gradient (host arrays).

    The same function runs on the client (one round at a time) and inside the cluster
    (:func:`fold_and_step`, rounds submitted ahead), so both give the same bits.
    """
    grad = to_host(part.vector)
    m = max(part.n, 1)
    pen, pen_grad = model.l2_penalty(params, alpha, m)
    g = grad / float(m) + pen_grad
    opt_state = learning_rate.apply(opt_state)
    updates, opt_state = optimizer.update(g, opt_state, params)
    return optim.apply_updates(params, updates), opt_state, part.loss / m + pen


class StepState(NamedTuple):
    """What a pipelined round leaves on the cluster for the next one."""

    params: np.ndarray
    opt_state: Any
    round_loss: float
    n: int
    timings: tuple[Timing, ...]


def check_finite(part: Partial, round_no: int, what: str) -> None:
    """Raise a FloatingPointError naming the round and the block when ``part`` diverged."""
    if math.isfinite(part.loss) and np.all(np.isfinite(to_host(part.vector))):
        return
    bad = [t for t in part.timings if not math.isfinite(t[3])]
    where = f" in block {bad[0][0]} (worker {bad[0][2]})" if bad else ""
    raise FloatingPointError(
        f"training diverged at round {round_no}: non-finite {what}{where}. Lower "
        "learning_rate_init, check the inputs for inf/NaN, or scale the features."
    )


def fold_and_step(groups: list[list[tuple[int, Partial]]], split_every: int, prev: StepState,
                  model: Any, optimizer: optim.GradientTransformation, alpha: float,
                  learning_rate: Rate, round_no: int) -> StepState:
    """Fold the partials, then the optimizer update, as one task: round r+1's gradients depend
    on it, not on the client."""
    part = fold_partials(groups, split_every)
    check_finite(part, round_no, "loss or gradient")
    params, opt_state, loss = gradient_step(part, prev.params, prev.opt_state, model,
                                            optimizer, alpha, learning_rate)
    return StepState(params, opt_state, loss, part.n, part.timings)


def round_metrics(state: StepState) -> tuple[float, int, tuple[Any, ...]]:
    """The few numbers the client gathers per pipelined round."""
    return state.round_loss, state.n, state.timings


# ------------------------------------------------------------------ local SGD ------------------


def _local_step(model: Any, optimizer: optim.GradientTransformation, alpha: float, w: Any,
                state: Any, Xb: Any, Yb: Any, global_rows: int,
                ctx: Context) -> tuple[Any, Any, float]:
    """One inner optimizer step on a mini-batch; returns the new parameters and state and the
    batch's loss sum including its share of the penalty. The penalty is scaled by the *global*
    step's rows, so that with local_steps=1 and plain SGD the rows-weighted average of the
    blocks' steps is the synchronous step.

    ``w`` is the caller's own working copy (:func:`_working_copy`): it is updated in place (and
    returned), so the model's views of it carry over from one step to the next; an optimizer
    that wanted to keep ``params`` itself in its state would have to copy it. The arithmetic is
    that of ``w + update(grad / m + pen_grad)``, operation for operation."""
    m = int(Xb.shape[0])
    loss, grad = model.loss_and_grad(w, Xb, Yb, ctx=ctx)
    pen, pen_grad = _l2_penalty(model, w, alpha, global_rows, ctx)
    g = grad / float(m)  # fresh: the optimizer may keep it
    g = bk.elementwise("add", g, pen_grad, out=_same_dtype(g, pen_grad))
    updates, state = optimizer.update(g, state, w)
    return bk.elementwise("add", w, updates, out=_same_dtype(w, updates)), state, loss + pen * m


def _same_dtype(a: Any, b: Any) -> Any:
    """``a`` as the ``out=`` of ``a + b`` when the sum keeps a's dtype, else ``None`` (a fresh,
    promoted result, as ``a + b`` gives when parameters and data differ in precision)."""
    return a if a.dtype == b.dtype else None


def _l2_penalty(model: Any, w: Any, alpha: float, rows: int, ctx: Context) -> tuple[float, Any]:
    """``model.l2_penalty``, into the step's workspace when the model takes a context."""
    if _penalty_takes_context(type(model)):
        return model.l2_penalty(w, alpha, rows, ctx=ctx)
    return model.l2_penalty(w, alpha, rows)


_TAKES_CONTEXT: dict[Any, bool] = {}


def _penalty_takes_context(kind: Any) -> bool:
    """Whether ``kind.l2_penalty`` has a ``ctx`` parameter (the model protocol's older form
    has none), looked up once per model class."""
    known = _TAKES_CONTEXT.get(kind)
    if known is None:
        try:
            known = "ctx" in inspect.signature(kind.l2_penalty).parameters
        except (TypeError, ValueError, AttributeError):
            known = False
        _TAKES_CONTEXT[kind] = known
    return known


def _working_copy(w0: Any, ws: Workspace) -> Any:
    """A copy of ``w0`` that the local steps update in place (``w0`` may be the caller's): a
    buffer of the block's workspace where the namespace writes into buffers (nothing returned
    from the task refers to it), else a fresh copy."""
    w = ws.child("local_steps").get("w", tuple(w0.shape), w0)
    if w is None:
        return namespace(w0).asarray(w0, copy=True)
    w[...] = w0
    return w


def partition_local_steps(block: Block, params: np.ndarray, state: Any, model: Any,
                          optimizer: optim.GradientTransformation, alpha: float,
                          learning_rate: Rate, index: int,
                          schedule: tuple[tuple[int, int, int], ...], steps: int, seed: int,
                          shuffle: bool) -> tuple[Partial, Any]:
    """Run the inner optimizer over ``schedule`` (``(epoch, step, rows of the global step)``)
    on block ``index``, starting from the global ``params``.

    Returns the rows-weighted parameter change and the block's new inner optimizer state.
    """
    start = time.perf_counter()
    X = _like(block)
    ydtype = block.Y.dtype if isinstance(block, Block) else X.dtype
    n = X.shape[0]
    w0 = to_device_of(params, X, dtype=ydtype)  # host or any device -> X's (X may hold pixels)
    if state is None:
        state = optimizer.init(w0)
    else:
        state = optim.state_to_device(state, X)
    state = learning_rate.apply(state)
    loss_total, rows_total = 0.0, 0
    ws = workspace_for(index, X)
    w = _working_copy(w0, ws)
    for epoch, step, global_rows in schedule:
        lo, hi = step_rows(n, step, steps)
        if hi <= lo:
            continue
        Xb, Yb = _rows(block, seed, index, epoch, shuffle, lo, hi, ws)
        w, state, loss = _local_step(model, optimizer, alpha, w, state, Xb, Yb, global_rows,
                                     _step_context(ws, seed, index, epoch, step))
        loss_total += loss
        rows_total += hi - lo
    delta = (w - w0) * float(rows_total)
    seconds = time.perf_counter() - start
    timing = ((index, seconds, _worker_address(), _finite_or_nan(loss_total, delta),
               rows_total),)
    return Partial(loss_total, delta, rows_total, timing), state


def partitions_local_steps(blocks: list[Block], indices: list[int], params: np.ndarray,
                           states: list[Any], model: Any,
                           optimizer: optim.GradientTransformation, alpha: float,
                           learning_rate: Rate,
                           schedules: list[tuple[tuple[int, int, int], ...]], steps: int,
                           seed: int, shuffle: bool) -> list[tuple[int, tuple[Partial, Any]]]:
    """:func:`partition_local_steps` for each block a worker holds (each its own schedule).

    Inner states come back as host arrays (parameter-sized), so a round's graph never depends
    on an earlier round and recovery recomputes one round."""
    out = []
    for b, i, state, schedule in zip(blocks, indices, states, schedules, strict=True):
        part, new_state = partition_local_steps(b, params, state, model, optimizer, alpha,
                                                learning_rate, i, schedule, steps, seed,
                                                shuffle)
        out.append((i, (part, optim.state_to_host(new_state))))
    return out


def replica_local_steps(blocks: list[Block], indices: list[int], replica: int, params: Any,
                        state: Any, model: Any, optimizer: optim.GradientTransformation,
                        alpha: float, learning_rate: Rate,
                        schedule: tuple[tuple[int, int, int], ...], steps: int, seed: int,
                        shuffle: bool) -> list[tuple[int, tuple[Partial, Any]]]:
    """Local SGD of one replica: a contiguous run of blocks trained as one stream.

    Step ``s`` takes, from every block of the replica, the rows that block contributes to
    global step ``s`` (its share of its own epoch order, as in exact-gradient mode), so a
    replica's mini-batches are stratified over its blocks and the model it trains does not
    depend on how its rows are cut into blocks. Returns ``[(replica, (partial, state))]``.
    """
    start = time.perf_counter()
    X0 = _like(blocks[0])
    xp = namespace(X0)
    ydtype = blocks[0].Y.dtype if isinstance(blocks[0], Block) else X0.dtype
    w0 = to_device_of(params, X0, dtype=ydtype)
    state = optimizer.init(w0) if state is None else optim.state_to_device(state, X0)
    state = learning_rate.apply(state)
    spaces = [workspace_for(i, _like(b)) for b, i in zip(blocks, indices, strict=True)]
    w = _working_copy(w0, spaces[0])
    loss_total, rows_total = 0.0, 0
    for epoch, step, global_rows in schedule:
        xs, ys = [], []
        for b, i, ws in zip(blocks, indices, spaces, strict=True):
            lo, hi = step_rows(_like(b).shape[0], step, steps)
            if hi > lo:
                Xi, Yi = _rows(b, seed, i, epoch, shuffle, lo, hi, ws)
                xs.append(Xi)
                ys.append(Yi)
        if not xs:
            continue
        Xb, Yb = (xs[0], ys[0]) if len(xs) == 1 else (xp.concat(xs, axis=0), xp.concat(ys, axis=0))
        w, state, loss = _local_step(model, optimizer, alpha, w, state, Xb, Yb, global_rows,
                                     _step_context(spaces[0], seed, indices[0], epoch, step))
        loss_total += loss
        rows_total += int(Xb.shape[0])
    delta = (w - w0) * float(rows_total)
    seconds = time.perf_counter() - start
    timing = ((replica, seconds, _worker_address(), _finite_or_nan(loss_total, delta),
               rows_total),)
    return [(replica, (Partial(loss_total, delta, rows_total, timing),
                       optim.state_to_host(state)))]


class LocalResult(NamedTuple):
    partial: Partial
    states: tuple[Any, ...]  # per block, in block order, host arrays


def fold_local(groups: list[list[tuple[int, tuple[Partial, Any]]]],
               split_every: int) -> LocalResult:
    ordered = _in_block_order(groups)
    partial = tree_fold([p for p, _ in ordered], combine_grads, split_every=split_every)
    return LocalResult(_host_partial(partial), tuple(s for _, s in ordered))


# ------------------------------------------------------------------ scoring --------------------


class ScorePartial(NamedTuple):
    n: int
    loss: float
    correct: float  # classification
    sse: np.ndarray  # regression, per output
    sum_y: np.ndarray
    sum_y2: np.ndarray


def partition_score(block: Block, params: np.ndarray, model: Any) -> ScorePartial:
    """Sums behind accuracy / R² and the mean loss on a validation block."""
    X, Y = _as_block(block)
    xp = namespace(X)
    n = int(X.shape[0])
    k = int(Y.shape[1]) if Y.ndim == 2 else 1
    zeros = np.zeros(k)
    if n == 0:
        return ScorePartial(0, 0.0, 0.0, zeros, zeros, zeros)
    rows = getattr(model, "score_rows", None)
    if rows and n > rows:  # a model with large activations (images) scores in slices
        return combine_scores([partition_score(Block(X[a:a + rows], Y[a:a + rows]), params,
                                               model) for a in range(0, n, rows)])
    loss, _ = model.loss_and_grad(params, X, Y, ctx=_EVALUATION)
    out = model.forward(params, X)
    if model.loss == "squared_error":
        r = out - Y
        return ScorePartial(
            n, float(loss), 0.0,
            to_host(xp.sum(r * r, axis=0)).astype(np.float64),
            to_host(xp.sum(Y, axis=0)).astype(np.float64),
            to_host(xp.sum(Y * Y, axis=0)).astype(np.float64),
        )
    if model.loss == "binary_log_loss":
        pred = xp.astype(out[:, 0] > 0.5, Y.dtype)
        correct = xp.sum(xp.astype(pred == Y[:, 0], xp.float64))
    else:
        correct = xp.sum(xp.astype(xp.argmax(out, axis=1) == xp.argmax(Y, axis=1), xp.float64))
    return ScorePartial(n, float(loss), float(to_host(correct)), zeros, zeros, zeros)


def partition_scores(blocks: list[Block], indices: list[int], params: np.ndarray,
                     model: Any) -> list[tuple[int, ScorePartial]]:
    return [(i, partition_score(b, params, model)) for b, i in zip(blocks, indices, strict=True)]


def combine_scores(parts: list[ScorePartial]) -> ScorePartial:
    return ScorePartial(
        sum(p.n for p in parts),
        sum(p.loss for p in parts),
        sum(p.correct for p in parts),
        sum((p.sse for p in parts), np.zeros_like(parts[0].sse)),
        sum((p.sum_y for p in parts), np.zeros_like(parts[0].sum_y)),
        sum((p.sum_y2 for p in parts), np.zeros_like(parts[0].sum_y2)),
    )


def fold_scores(groups: list[list[tuple[int, ScorePartial]]], split_every: int) -> ScorePartial:
    return tree_fold(_in_block_order(groups), combine_scores, split_every=split_every)


def score_value(s: ScorePartial, loss: str) -> float:
    """Accuracy (classification) or mean R² over outputs (regression) from the summed counts."""
    if s.n == 0:
        return float("nan")
    if loss == "squared_error":
        ss_tot = s.sum_y2 - s.sum_y**2 / s.n
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - s.sse / ss_tot, np.where(s.sse == 0, 1.0, 0.0))
        return float(np.mean(r2))
    return float(s.correct / s.n)
