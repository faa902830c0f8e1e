"""Layers made of layers: :class:`Chain` (one after another) and :class:`ColumnSplit`
(sub-networks on column subsets, outputs side by side).

A composite's parameters are its parts' parameters, concatenated in order, so the flat buffer
of a network is the same whether its layers are nested or not. Each part runs with its own
child workspace (buffer names stay local) and, in a chain, with its index appended to the
random key (two dropout layers draw different masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import device, namespace
from .layers import Context, Layer, Shape, make_context

__all__ = ["Chain", "ColumnSplit"]

Array = Any


def _part_context(ctx: Context, index: int, need_input_grad: bool) -> Context:
    ws = ctx.workspace
    return make_context(ctx.training, None if ctx.key is None else (*ctx.key, index),
                        None if ws is None else ws.child(index), need_input_grad)


class _Composite(Layer):
    """Bookkeeping shared by composites: which slice of the parameter list each part owns."""

    _parts: list[Layer]

    def _record(self, shapes: list[list[Shape]], in_shapes: list[Shape]) -> None:
        self._in_shapes = in_shapes
        self._spans = []
        start = 0
        for s in shapes:
            self._spans.append((start, start + len(s)))
            start += len(s)

    def _split(self, arrays: list[Array]) -> list[list[Array]]:
        return [arrays[a:b] for a, b in self._spans]

    def init(self, rng: np.random.Generator, in_shape: Shape) -> list[np.ndarray]:
        return [p for part, s in zip(self._parts, self._in_shapes, strict=True)
                for p in part.init(rng, s)]

    def penalized(self, param_shapes: list[Shape]) -> list[bool]:
        return [flag for part, (a, b) in zip(self._parts, self._spans, strict=True)
                for flag in part.penalized(param_shapes[a:b])]


class _ChainCache(NamedTuple):
    caches: list[Any]  # each layer's
    ctx: Context  # the forward's context
    subs: list[Context]  # and the part contexts made from it


class Chain(_Composite):
    """``layers[-1](... layers[0](x))``."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("Chain needs at least one layer")
        self._parts = self.layers

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        shapes, in_shapes, shape = [], [], tuple(in_shape)
        for layer in self.layers:
            in_shapes.append(shape)
            params, shape = layer.build(shape)
            shapes.append([tuple(p) for p in params])
        self._record(shapes, in_shapes)
        for layer, after in zip(self.layers, self.layers[1:], strict=False):
            if isinstance(layer, ColumnSplit):  # (see ColumnSplit: its output's memory order)
                layer._column_major = bool(getattr(after, "reads_column_major", False))
        return [p for s in shapes for p in s], shape

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        caches, subs = [], []
        need = ctx.need_input_grad
        for i, layer in enumerate(self.layers):
            a, b = self._spans[i]
            sub = _part_context(ctx, i, i > 0 or need)
            x, cache = layer.forward(params[a:b], x, sub)
            caches.append(cache)
            subs.append(sub)
        return x, _ChainCache(caches, ctx, subs)

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        # the forward's part contexts, when the backward runs with the same context
        subs = cache.subs if cache.ctx is ctx else None
        for i in range(len(self.layers) - 1, -1, -1):
            a, b = self._spans[i]
            sub = _part_context(ctx, i, i > 0 or ctx.need_input_grad) if subs is None else subs[i]
            dy = self.layers[i].backward(params[a:b], cache.caches[i], dy, sub, grads[a:b])
        return dy


class ColumnSplit(_Composite):
    """Applies ``layer_b`` to the input columns ``columns_b`` for every branch ``b`` and
    concatenates the branches' outputs (in branch order) along the feature axis.

    For tabular data: ``ColumnSplit([(range(0, 8), Identity()), ((8, 9), Embedding((12, 5),
    (4, 3)))])`` passes 8 numeric columns through and embeds 2 categorical code columns, giving
    ``8 + 4 + 3`` features. Columns may repeat across branches or be left out.
    """

    # Column-major output (a NumPy step with a workspace, when the chain's next layer reads
    # either memory order alike: ``reads_column_major``, set by Chain.build): the batch's
    # columns are transposed once into rows, each branch's columns are a row gather, and every
    # branch works on columns that are contiguous runs (Periodic, Embedding), as does the
    # backward on the next layer's input gradient. The same values, element by element.
    _column_major = False

    def __init__(self, branches: Sequence[tuple[Sequence[int], Layer]]) -> None:
        if not branches:
            raise ValueError("ColumnSplit needs at least one branch")
        self.branches = [(tuple(int(c) for c in cols), layer) for cols, layer in branches]
        for b, (cols, _) in enumerate(self.branches):
            if not cols:
                raise ValueError(f"ColumnSplit branch {b} selects no column")
        self._parts = [layer for _, layer in self.branches]

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        if len(in_shape) != 1:
            raise ValueError(f"ColumnSplit needs inputs of shape (columns,), got {in_shape}")
        shapes, in_shapes, widths = [], [], []
        for b, (cols, layer) in enumerate(self.branches):
            if min(cols) < 0 or max(cols) >= in_shape[0]:
                raise ValueError(f"ColumnSplit branch {b} selects columns {cols}, outside the "
                                 f"input's {in_shape[0]} columns")
            in_shapes.append((len(cols),))
            params, out = layer.build((len(cols),))
            if len(out) != 1:
                raise ValueError(f"ColumnSplit branch {b} ({layer!r}) must output (features,), "
                                 f"got {out}")
            shapes.append([tuple(p) for p in params])
            widths.append(int(out[0]))
        self._record(shapes, in_shapes)
        self._widths = widths
        self._n_columns = int(in_shape[0])
        return [p for s in shapes for p in s], (sum(widths),)

    @staticmethod
    def _columns(x: Array, cols: tuple[int, ...]) -> Array:
        if cols == tuple(range(cols[0], cols[0] + len(cols))):
            return x[:, cols[0]:cols[0] + len(cols)]  # a view
        xp = namespace(x)
        return xp.take(x, xp.asarray(cols, dtype=xp.int64, device=device(x)), axis=1)

    def _rows_of(self, xT: np.ndarray, b: int, ctx: Context) -> np.ndarray:
        """Branch ``b``'s columns of the batch whose transpose is ``xT``, column-major: a
        view of ``xT``'s rows (a run of columns) or their gather into a buffer."""
        cols = self.branches[b][0]
        if cols == tuple(range(cols[0], cols[0] + len(cols))):
            return xT[cols[0]:cols[0] + len(cols)].T
        index = self.__dict__.setdefault("_index", {}).get(b)
        if index is None:
            index = self._index[b] = np.asarray(cols, dtype=np.intp)
        rows = ctx.buffer(f"x{b}T", (len(cols), xT.shape[1]), xT)
        return np.take(xT, index, axis=0, out=rows, mode="clip").T

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        xp = namespace(x)
        n = x.shape[0]
        xT = None
        if self._column_major and type(x) is np.ndarray and ctx.workspace is not None:
            xT = ctx.buffer("xT", (x.shape[1], n), x)
            np.copyto(xT, x.T)
            out = ctx.buffer("yT", (sum(self._widths), n), x).T
        else:
            out = ctx.buffer("y", (n, sum(self._widths)), x)
        if out is None:
            out = xp.empty((n, sum(self._widths)), dtype=x.dtype, device=device(x))
        caches, start = [], 0
        for b, ((cols, layer), p) in enumerate(zip(self.branches, self._split(params),
                                                   strict=True)):
            xb = self._columns(x, cols) if xT is None else self._rows_of(xT, b, ctx)
            y, cache = layer.forward(p, xb, _part_context(ctx, b, ctx.need_input_grad))
            out[:, start:start + self._widths[b]] = y
            caches.append(cache)
            start += self._widths[b]
        return out, caches

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        dx = None
        if ctx.need_input_grad:
            xp = namespace(dy)
            dx = ctx.buffer("dx", (dy.shape[0], self._n_columns), dy)
            if dx is None:
                dx = xp.zeros((dy.shape[0], self._n_columns), dtype=dy.dtype,
                              device=device(dy))
            else:
                dx[...] = 0
        start = 0
        for b, ((cols, layer), p, g) in enumerate(zip(
                self.branches, self._split(params), self._split(grads), strict=True)):
            width = self._widths[b]
            dxb = layer.backward(p, cache[b], dy[:, start:start + width],
                                 _part_context(ctx, b, ctx.need_input_grad), g)
            start += width
            if dx is not None:
                for i, c in enumerate(cols):  # columns may repeat: accumulate
                    dx[:, c] = dx[:, c] + dxb[:, i]
        return dx
