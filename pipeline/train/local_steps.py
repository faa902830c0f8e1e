"""Local SGD on the workers: the inner optimizer run over a block's (or a replica's run of
blocks') mini-batches from the global parameters, returning rows-weighted parameter changes that
:func:`fold_local` averages in block order (:class:`pipeline.train.strategies.LocalSGD`)."""

from __future__ import annotations

import inspect
import time
from typing import Any, NamedTuple

import numpy as np

from .. import backend as bk
from .. import optim
from ..array_ops import take_rows
from ..backend import namespace, to_device_of
from ..blocks import Block
from ..nn import Context, Workspace
from ..reduce import tree_fold
from .order import epoch_order, step_rows
from .tasks import (
    Partial,
    Rate,
    _finite_or_nan,
    _host_partial,
    _in_block_order,
    _like,
    _rows,
    _step_context,
    _worker_address,
    combine_grads,
    workspace_for,
)

__all__ = ["LocalResult", "fold_local", "partition_local_steps", "partitions_local_steps",
           "replica_local_steps"]



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
    # alpha = 0 (the tabular estimators: AdamW's decoupled decay instead): no penalty and no
    # pass adding its gradient, W * 0 (the same values, up to the sign of a zero gradient)
    pen, pen_grad = (0.0, None) if alpha == 0 else _l2_penalty(model, w, alpha, global_rows,
                                                                 ctx)
    step = getattr(optimizer, "step_into", None)
    if step is not None and pen_grad is None:
        # a fused step (pipeline.optim.fused_adamw): grad / m folded into its factors, w
        # updated in place
        done = step(grad, 1.0 / m, state, w, ctx.workspace.child("optimizer"))
        if done is not None:
            return done[0], done[1], loss + pen * m
    into = getattr(optimizer, "update_into", None)
    if into is not None:
        # the optimizer keeps nothing of its input: the scaled gradient may be a buffer too
        opt_ws = ctx.workspace.child("optimizer")
        buf = opt_ws.get("g", tuple(grad.shape), grad)
        g = grad / float(m) if buf is None else bk.elementwise("divide", grad, float(m), out=buf)
        if pen_grad is not None:
            g = bk.elementwise("add", g, pen_grad, out=_same_dtype(g, pen_grad))
        updates, state = into(g, state, w, opt_ws)
    else:
        g = grad / float(m)  # fresh: the optimizer may keep it
        if pen_grad is not None:
            g = bk.elementwise("add", g, pen_grad, out=_same_dtype(g, pen_grad))
        updates, state = optimizer.update(g, state, w)
    return bk.elementwise("add", w, updates, out=_same_dtype(w, updates)), state, loss + pen * m


def _own(optimizer: optim.GradientTransformation, state: Any) -> Any:
    """The state after a task's last step, out of the workspace the next task overwrites
    (when the steps ran ``update_into``)."""
    return (state if getattr(optimizer, "update_into", None) is None
            else optim.state_copy(state))


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
    state = _own(optimizer, state)
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
    ydtype = blocks[0].Y.dtype if isinstance(blocks[0], Block) else X0.dtype
    w0 = to_device_of(params, X0, dtype=ydtype)
    state = optimizer.init(w0) if state is None else optim.state_to_device(state, X0)
    state = learning_rate.apply(state)
    spaces = [workspace_for(i, _like(b)) for b, i in zip(blocks, indices, strict=True)]
    w = _working_copy(w0, spaces[0])
    loss_total, rows_total = 0.0, 0
    if all(_host_block(b) for b in blocks):
        batches = _gathered_batches(blocks, indices, schedule, steps, seed, shuffle, spaces[0])
    else:
        batches = _step_batches(blocks, indices, schedule, steps, seed, shuffle, spaces)
    for epoch, step, global_rows, Xb, Yb in batches:
        w, state, loss = _local_step(model, optimizer, alpha, w, state, Xb, Yb, global_rows,
                                     _step_context(spaces[0], seed, indices[0], epoch, step))
        loss_total += loss
        rows_total += int(Xb.shape[0])
    delta = (w - w0) * float(rows_total)
    state = _own(optimizer, state)
    seconds = time.perf_counter() - start
    timing = ((replica, seconds, _worker_address(), _finite_or_nan(loss_total, delta),
               rows_total),)
    return [(replica, (Partial(loss_total, delta, rows_total, timing),
                       optim.state_to_host(state)))]


def _step_batches(blocks: list[Any], indices: list[int], schedule: Any, steps: int, seed: int,
                  shuffle: bool, spaces: list[Workspace]) -> Any:
    """``(epoch, step, global_rows, X, Y)`` per step of ``schedule``: every block's rows of the
    step (:func:`_rows`), joined in block order; steps no block has rows for are skipped."""
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
        if len(xs) == 1:
            yield epoch, step, global_rows, xs[0], ys[0]
        else:
            yield (epoch, step, global_rows, _concat(xs, spaces[0], "replica_X"),
                   _concat(ys, spaces[0], "replica_Y"))


# Rows of consecutive steps gathered at once by :func:`_gathered_batches`: bounded, so that a
# round of a whole local epoch does not copy the replica's data.
GATHER_ROWS = 1 << 16


def _host_block(b: Any) -> bool:
    return isinstance(b, Block) and type(b.X) is np.ndarray and type(b.Y) is np.ndarray


def _gathered_batches(blocks: list[Block], indices: list[int], schedule: Any, steps: int,
                      seed: int, shuffle: bool, ws: Workspace) -> Any:
    """What :func:`_step_batches` yields, for blocks of host arrays in memory: the same rows in
    the same order, gathered for a run of consecutive steps of one epoch at a time (up to
    :data:`GATHER_ROWS` rows) into one buffer laid out step after step, each step's rows in
    block order. A step's batch is then a slice of that buffer: one gather per block per run
    instead of two per block per step (each ~10 µs of Python and a NumPy call, most of a small
    step's cost with several blocks per replica). A step's batch is valid until the next."""
    run: list[tuple[int, int, int]] = []
    per_step = max(1, -(-sum(int(b.X.shape[0]) for b in blocks) // steps))
    for item in schedule:
        if run and (item[0] != run[-1][0] or item[1] != run[-1][1] + 1
                    or len(run) * per_step >= GATHER_ROWS):
            yield from _gather_run(blocks, indices, run, steps, seed, shuffle, ws)
            run = []
        run.append(item)
    if run:
        yield from _gather_run(blocks, indices, run, steps, seed, shuffle, ws)


def _gather_run(blocks: list[Block], indices: list[int], run: list[tuple[int, int, int]],
                steps: int, seed: int, shuffle: bool, ws: Workspace) -> Any:
    """The batches of ``run`` (consecutive steps of one epoch) from one gather per block."""
    epoch = run[0][0]
    s = np.arange(run[0][1], run[-1][1] + 2, dtype=np.int64)  # step boundaries
    ns = np.array([int(b.X.shape[0]) for b in blocks], dtype=np.int64)
    bounds = (s[:, None] * ns[None, :]) // steps  # (steps + 1, blocks): step_rows, vectorised
    sizes = np.diff(bounds, axis=0)  # rows of each step from each block
    per_step = sizes.sum(axis=1)
    total = int(per_step.sum())
    X0, Y0 = blocks[0]
    if len(blocks) == 1 and not shuffle:  # storage order: the block's own rows, as _rows gives
        Xw, Yw = X0[bounds[0, 0]:bounds[-1, 0]], Y0[bounds[0, 0]:bounds[-1, 0]]
    else:
        Xw = ws.get("run_X", (total, *X0.shape[1:]), X0)
        Yw = ws.get("run_Y", (total, *Y0.shape[1:]), Y0)
        # where block j's rows of step k start in the buffer: steps one after the other, each
        # step's rows in block order
        starts = (np.concatenate([[0], np.cumsum(sizes.ravel())[:-1]])
                  .reshape(sizes.shape).astype(np.int64))
        for j, ((X, Y), i) in enumerate(zip(blocks, indices, strict=True)):
            lo, hi = int(bounds[0, j]), int(bounds[-1, j])
            if hi == lo:
                continue
            order = epoch_order(int(ns[j]), seed, i, epoch, shuffle)
            src = np.arange(lo, hi) if order is None else order[lo:hi]
            if len(blocks) == 1:
                take_rows(X, src, out=Xw, in_range=True)
                take_rows(Y, src, out=Yw, in_range=True)
                continue
            # the block's rows of the run, in step order, then each step's to its place
            dst = np.arange(hi - lo) + np.repeat(starts[:, j] - (bounds[:-1, j] - lo),
                                                 sizes[:, j])
            Xw[dst] = take_rows(X, src, out=ws.get("run_gather_X", (hi - lo, *X.shape[1:]), X),
                                in_range=True)
            Yw[dst] = take_rows(Y, src, out=ws.get("run_gather_Y", (hi - lo, *Y.shape[1:]), Y),
                                in_range=True)
    at = 0
    for (ep, step, global_rows), m in zip(run, per_step.tolist(), strict=True):
        if m:
            yield ep, step, global_rows, Xw[at:at + m], Yw[at:at + m]
        at += m


def _concat(parts: list[Any], ws: Workspace, name: str) -> Any:
    """``xp.concat(parts, axis=0)``, into workspace buffer ``name`` on NumPy (a copy either
    way: the same values; one step's batch, valid until the next)."""
    first = parts[0]
    if all(type(p) is np.ndarray and p.dtype == first.dtype for p in parts):
        rows = sum(int(p.shape[0]) for p in parts)
        out = ws.get(name, (rows, *first.shape[1:]), first)
        return np.concatenate(parts, axis=0, out=out)
    return namespace(first).concat(parts, axis=0)


class LocalResult(NamedTuple):
    partial: Partial
    states: tuple[Any, ...]  # per block, in block order, host arrays


def fold_local(groups: list[list[tuple[int, tuple[Partial, Any]]]],
               split_every: int) -> LocalResult:
    ordered = _in_block_order(groups)
    partial = tree_fold([p for p, _ in ordered], combine_grads, split_every=split_every)
    return LocalResult(_host_partial(partial), tuple(s for _, s in ordered))
