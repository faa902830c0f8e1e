"""Worker tasks: pure functions on the blocks a worker holds.

Each block computes a partial result with the array namespace of its data (NumPy or CuPy). A
partial holds *sums* (loss, gradient, rows-weighted parameter change), so partials add
associatively and :func:`pipeline.reduce.tree_fold` combines them in a fixed order of block
positions, never in completion order. One task per worker computes the partials of every block it
holds and returns them apart, keyed by block position, for that fold.

A block's rows are visited in the epoch order of :mod:`pipeline.train.order`, so the mini-batches
do not depend on the cluster, nor on where the block is stored (:mod:`pipeline.stores`). This
module holds what every task shares (partials, workspaces, the rows of a step) and the exact
gradient's tasks; local SGD's are in :mod:`~pipeline.train.local_steps`, scoring's in
:mod:`~pipeline.train.scores`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import optim
from ..backend import device, namespace, to_host
from ..blocks import Block
from ..nn import Context, Workspace
from ..nn.layers import make_context
from ..reduce import tree_fold, tree_fold_nodes, tree_fold_owned
from .order import epoch_order, step_rows

__all__ = [
    "Partial",
    "Rate",
    "StepState",
    "combine_grads",
    "fold_partials",
    "gradient_step",
    "partition_grad",
    "partition_grads",
    "workspace_for",
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


_WORKSPACES: OrderedDict[tuple[int, tuple[int, ...], type, Any, int], Workspace] = OrderedDict()
_WORKSPACES_MAX = 256  # blocks' workspaces a worker keeps (least recently used first out)


def workspace_for(index: int, X: Any) -> Workspace:
    """The buffers block ``index`` reuses from one step (and one round) to the next, on this
    worker thread: the gathered batch, activations, deltas and the flat gradient (see
    :mod:`pipeline.nn.workspace`). Without them a nanny-started worker faults every page of
    every step's arrays in again (its ``MALLOC_TRIM_THRESHOLD_`` pins the mmap threshold)."""
    # the array type before the dtype: dtypes of two libraries are never compared (and
    # str(dtype), the former key, is Python code in NumPy: a few µs per call). Per thread:
    # tasks that run at once on one worker (several threads, or mesh tasks that left the
    # thread pool) must not write into each other's buffers.
    key = (index, tuple(X.shape), type(X), X.dtype, threading.get_ident())
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
    return make_context(True, (seed, index, epoch, step), ws, False)


def _finite_or_nan(loss: float, vector: Any) -> float:
    """``loss`` if the loss and ``vector`` are finite, else NaN: marks the block that diverged."""
    if type(vector) is np.ndarray:  # once per block and step: skip np.all's wrapper
        ok = math.isfinite(loss) and bool(np.logical_and.reduce(np.isfinite(vector), axis=None))
        return loss if ok else math.nan
    xp = namespace(vector)
    ok = math.isfinite(loss) and bool(xp.all(xp.isfinite(vector)))
    return loss if ok else math.nan


class Rate(NamedTuple):
    """The epoch-level learning rate handed to the optimizer state: the rate itself
    (scikit-learn's constant/invscaling/adaptive rules), or, for an optimizer that follows its
    own schedule (warm-up, cosine), a multiplier of that schedule."""

    value: float
    as_scale: bool = False

    def times(self, k: float) -> Rate:
        """This rate ``k`` times larger (the linear scaling rule)."""
        return Rate(self.value * k, self.as_scale)

    def apply(self, state: Any) -> Any:
        if self.as_scale:
            return optim.set_learning_rate_scale(state, self.value)
        return optim.set_learning_rate(state, self.value)


# ------------------------------------------------------------------ exact gradient -------------


def partition_grad(block: Block, params: np.ndarray, model: Any, index: int, epoch: int,
                   step: int, steps: int, seed: int, shuffle: bool, *,
                   worker: str | None = None, copy: bool = True) -> Partial:
    """Loss and gradient sums of block ``index`` over its share of global step ``step``.

    ``worker``: this worker's address for the timings (asked per call when ``None``).
    ``copy=False``: the gradient may be the block's workspace buffer, overwritten by the
    block's next step on this worker; only for a caller that copies or sums it first."""
    start = time.perf_counter()
    X = _like(block)
    n = X.shape[0]
    lo, hi = step_rows(n, step, steps)
    ws = workspace_for(index, X)
    Xb, Yb = _rows(block, seed, index, epoch, shuffle, lo, hi, ws)
    loss, grad = model.loss_and_grad(params, Xb, Yb,
                                     ctx=_step_context(ws, seed, index, epoch, step))
    if copy:
        grad = namespace(grad).asarray(grad, copy=True)  # leaves the task: not the workspace's
    seconds = time.perf_counter() - start
    flag = _finite_or_nan(loss, grad)
    where = _worker_address() if worker is None else worker
    return Partial(loss, grad, hi - lo, ((index, seconds, where, flag, hi - lo),))


def partition_grads(blocks: list[Block], indices: list[int], params: Any, model: Any,
                    epoch: int, step: int, steps: int, seed: int, shuffle: bool,
                    n_blocks: int | None = None, split_every: int = 8) -> list[Any]:
    """:func:`partition_grad` for each block a worker holds, kept apart for the fold:
    ``(position, partial)`` pairs.

    With ``n_blocks``: the subtrees of the fold tree (``n_blocks`` leaves, ``split_every``) whose
    blocks are all here come back folded, as ``(level, index, partial)`` nodes
    (:func:`pipeline.reduce.tree_fold_owned`; a run of consecutive blocks ships a few vectors,
    not one per block); :func:`fold_partials` with ``n_blocks`` finishes the fold, same bits.
    """
    where = _worker_address()
    parts = [(i, partition_grad(b, params, model, i, epoch, step, steps, seed, shuffle,
                                worker=where))
             for b, i in zip(blocks, indices, strict=True)]
    if n_blocks is None:
        return parts
    return tree_fold_owned(parts, n_blocks, combine_grads, split_every=split_every)


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


def fold_partials(groups: list[list[Any]], split_every: int,
                  n_blocks: int | None = None) -> Partial:
    """All blocks' partials summed by the fixed tree of block positions; host result.

    ``groups``: each worker's :func:`partition_grads` result; with ``n_blocks``, its folded
    nodes (:func:`partition_grads` given the same ``n_blocks`` and ``split_every``)."""
    if n_blocks is not None:
        return _host_partial(tree_fold_nodes([n for g in groups for n in g], n_blocks,
                                             combine_grads, split_every=split_every))
    return _host_partial(tree_fold(_in_block_order(groups), combine_grads,
                                   split_every=split_every))


def gradient_step(part: Partial, params: np.ndarray, opt_state: Any, model: Any,
                  optimizer: optim.GradientTransformation, alpha: float,
                  learning_rate: Rate) -> tuple[np.ndarray, Any, float]:
    """One synchronous optimizer step on a combined gradient (host arrays).

    The same function runs on the client (one round at a time) and inside the cluster
    (:mod:`pipeline.train.ahead`, rounds submitted ahead), so both give the same bits.
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
