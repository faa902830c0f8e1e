"""Convolution and pooling layers for images in NHWC layout, forward and backward side by side.

Every layer follows the layer-library interface (``build``, ``init``, ``forward``, ``backward``):
shapes exclude the batch axis, parameters are a list of arrays in ``build()`` order, and
``backward`` writes parameter gradients into the views it is given (``grads[i][...] = ...``) and
returns the gradient w.r.t. its input (``None`` when ``ctx.need_input_grad`` is False).

The code is namespace-clean: the input's namespace and device do the work (NumPy, CuPy,
``array_api_strict``). Convolution is im2col + one GEMM: the ``kh * kw`` shifted views of the
padded input are stacked into one contiguous ``(N*OH*OW, kh*kw*C)`` matrix (one copy, built with
slicing and ``xp.stack``), multiplied by the kernel seen as a ``(kh*kw*C, filters)`` matrix. Its
backward is two GEMMs and the transpose of the stacking (col2im: ``kh * kw`` strided adds).
Pools reuse the same window stacking (:mod:`pipeline.nn.windows` holds the geometry). Padding follows TensorFlow/Keras: ``"valid"`` uses no
padding; ``"same"`` gives ``ceil(size / stride)`` outputs, padding ``total // 2`` before and the
rest after.

Normalisation: :class:`pipeline.nn.GroupNorm` (per-sample statistics, so results do not
depend on how a batch is split over workers), not batch norm; its module docstring says why.

Example
-------
>>> import numpy as np
>>> conv = Conv2D(4, 3)
>>> shapes, out_shape = conv.build((8, 8, 1))
>>> shapes, out_shape
([(3, 3, 1, 4), (4,)], (8, 8, 4))
>>> params = conv.init(np.random.default_rng(0), (8, 8, 1))
>>> y, cache = conv.forward(params, np.ones((2, 8, 8, 1)), Context(training=False))
>>> y.shape
(2, 8, 8, 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend as bk
from ..backend import device, namespace
from .layers import Context, Layer
from .windows import (
    Axis,
    check_input,
    check_padding,
    pad_input,
    pair,
    unwindow,
    window_stack,
    window_views,
)

__all__ = [
    "AvgPool2D",
    "Conv2D",
    "GlobalAvgPool2D",
    "MaxPool2D",
]

Array = Any
INITS = ("glorot_uniform", "he_uniform")


def _uniform(rng: np.random.Generator, bound: float, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-bound, bound, shape).astype(np.float64, copy=False)


# ---------------------------------------------------------------------------------------------
# Layers.


@dataclass(frozen=True)
class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in every deep-learning library), NHWC.

    ``y[n, i, j, f] = b[f] + Σ_{a, b, c} xpad[n, i*sh + a, j*sw + b, c] · W[a, b, c, f]``.

    Parameters are ``W`` of shape ``(kh, kw, in_channels, filters)`` then ``b`` of shape
    ``(filters,)``. ``kernel_init="glorot_uniform"`` (default, Keras' choice) draws ``W`` from
    ``U(-√(6 / (fan_in + fan_out)))`` with ``fan_in = kh·kw·in_channels`` and
    ``fan_out = kh·kw·filters``; ``"he_uniform"`` uses ``U(-√(6 / fan_in))``. Biases start at 0.
    """

    filters: int
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: str = "same"
    kernel_init: str = "glorot_uniform"

    def __post_init__(self) -> None:
        if not isinstance(self.filters, int | np.integer) or self.filters < 1:
            raise ValueError(f"filters must be a positive int, got {self.filters!r}")
        pair(self.kernel_size, "kernel_size")
        pair(self.stride, "stride")
        check_padding(self.padding)
        if self.kernel_init not in INITS:
            raise ValueError(f"kernel_init must be one of {INITS}, got {self.kernel_init!r}")

    def _axes(self, in_shape: tuple[int, ...]) -> tuple[Axis, Axis, int]:
        h, w, c = check_input(in_shape, "Conv2D")
        (kh, kw), (sh, sw) = pair(self.kernel_size, ""), pair(self.stride, "")
        return Axis(h, kh, sh, self.padding, "Conv2D"), Axis(w, kw, sw, self.padding,
                                                                "Conv2D"), c

    def build(self, in_shape):
        rows, cols, c = self._axes(in_shape)
        return [(rows.k, cols.k, c, int(self.filters)), (int(self.filters),)], (
            rows.out, cols.out, int(self.filters))

    def init(self, rng, in_shape):
        rows, cols, c = self._axes(in_shape)
        fan_in, fan_out = rows.k * cols.k * c, rows.k * cols.k * int(self.filters)
        glorot = self.kernel_init == "glorot_uniform"
        bound = math.sqrt(6.0 / (fan_in + fan_out if glorot else fan_in))
        return [_uniform(rng, bound, (rows.k, cols.k, c, int(self.filters))),
                np.zeros(int(self.filters), dtype=np.float64)]

    def forward(self, params, x, ctx):
        xp = namespace(x)
        W, b = params
        rows, cols, c = self._axes(tuple(x.shape[1:]))
        if not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(f"Conv2D needs floating-point input, got {x.dtype}; put Rescale or "
                            "Normalize (pipeline.nn) before it to turn pixels into floats")
        n, f = x.shape[0], int(self.filters)
        m, k = n * rows.out * cols.out, rows.k * cols.k * c
        patches = xp.reshape(window_stack(xp, pad_input(xp, x, rows, cols, 0.0, ctx), rows, cols, ctx),
                             (m, k))
        y = bk.matmul(patches, xp.reshape(W, (k, f)), out=ctx.buffer("y", (m, f), x))
        y = bk.elementwise("add", y, b, out=y)  # y is this layer's own (buffer or fresh)
        return xp.reshape(y, (n, rows.out, cols.out, f)), (patches, rows, cols)

    def backward(self, params, cache, dy, ctx, grads):
        xp = namespace(dy)
        W, _ = params
        patches, rows, cols = cache
        f = int(self.filters)
        dy2 = xp.reshape(dy, (-1, f))
        if bk.supports_out(dy):  # straight into the flat gradient (a contiguous view)
            bk.matmul(patches.T, dy2, out=xp.reshape(grads[0], (patches.shape[1], f)))
        else:
            grads[0][...] = xp.reshape(patches.T @ dy2, tuple(W.shape))
        bk.reduce("sum", dy2, axis=0, out=grads[1])
        if not ctx.need_input_grad:
            return None
        # One GEMM per kernel offset rather than one big one: each result is a contiguous
        # (N*OH*OW, C) block, so col2im adds contiguous pieces (about 2x faster overall on
        # NumPy than slicing the window axis out of a (N, OH, OW, kh*kw, C) product).
        # The pieces share one buffer: unwindow consumes each before asking for the next.
        n, c = dy.shape[0], W.shape[2]
        piece = ctx.buffer("piece", (dy2.shape[0], c), dy)
        pieces = (
            xp.reshape(bk.matmul(dy2, W[a, b, :, :].T, out=piece), (n, rows.out, cols.out, c))
            for a in range(rows.k)
            for b in range(cols.k)
        )
        return unwindow(xp, pieces, rows, cols, c, dy, ctx)


@dataclass(frozen=True)
class _Pool(Layer):
    pool_size: int | tuple[int, int] = 2
    stride: int | tuple[int, int] | None = None  # None: the pool size (non-overlapping windows)
    padding: str = "valid"

    def __post_init__(self) -> None:
        pair(self.pool_size, "pool_size")
        if self.stride is not None:
            pair(self.stride, "stride")
        check_padding(self.padding)

    def _axes(self, in_shape: tuple[int, ...]) -> tuple[Axis, Axis, int]:
        what = type(self).__name__
        h, w, c = check_input(in_shape, what)
        kh, kw = pair(self.pool_size, "pool_size")
        sh, sw = pair(self.stride if self.stride is not None else self.pool_size, "stride")
        return Axis(h, kh, sh, self.padding, what), Axis(w, kw, sw, self.padding, what), c

    def build(self, in_shape):
        rows, cols, c = self._axes(in_shape)
        return [], (rows.out, cols.out, c)

    def init(self, rng, in_shape):
        self._axes(in_shape)
        return []


@dataclass(frozen=True)
class MaxPool2D(_Pool):
    """Maximum over each ``pool_size`` window; ``stride`` defaults to ``pool_size``.

    ``"same"`` pads with the dtype's lowest value, so padding never wins. The gradient goes to
    the first maximum of each window in row-major order (PyTorch's and TensorFlow's rule), so
    ties do not split or duplicate it.
    """

    def forward(self, params, x, ctx):
        xp = namespace(x)
        rows, cols, _ = self._axes(tuple(x.shape[1:]))
        low = (xp.finfo(x.dtype).min if xp.isdtype(x.dtype, "real floating")
               else xp.iinfo(x.dtype).min)
        xpad = pad_input(xp, x, rows, cols, low, ctx)
        # A running maximum over the strided views: no (N, OH, OW, kh*kw, C) copy, no argmax
        # pass; backward finds the winners again by comparing with the output.
        views = window_views(xpad, rows, cols)
        y = ctx.buffer("y", tuple(views[0].shape), x)
        if y is None:
            y = xp.asarray(views[0], copy=True)
        else:
            y[...] = views[0]
        for view in views[1:]:
            y = bk.elementwise("maximum", y, view, out=y)
        return y, (xpad, y, rows, cols)

    def backward(self, params, cache, dy, ctx, grads):
        if not ctx.need_input_grad:
            return None
        xp = namespace(dy)
        xpad, y, rows, cols = cache

        shape = tuple(y.shape)

        def flags(name: str) -> Array:
            return ctx.buffer(name, shape, y, xp.bool)

        def pieces():
            claimed = None  # outputs whose maximum an earlier window element already holds
            for view in window_views(xpad, rows, cols):
                hit = bk.elementwise("equal", view, y, out=flags("hit"))
                if claimed is None:
                    first, claimed = hit, bk.astype(hit, xp.bool, out=flags("claimed"))
                else:
                    first = bk.elementwise("logical_not", claimed, out=flags("first"))
                    first = bk.elementwise("logical_and", hit, first, out=first)
                    claimed = bk.elementwise("logical_or", claimed, hit, out=claimed)
                # A product, not xp.where: NumPy's where is ~10x slower than a multiply here.
                # The piece's buffer is reused: unwindow consumes each before the next.
                mask = bk.astype(first, dy.dtype, out=ctx.buffer("piece", shape, dy))
                yield bk.elementwise("multiply", dy, mask, out=mask)

        return unwindow(xp, pieces(), rows, cols, dy.shape[-1], dy, ctx)


@dataclass(frozen=True)
class AvgPool2D(_Pool):
    """Mean over each ``pool_size`` window; ``stride`` defaults to ``pool_size``.

    With ``"same"`` the padding is not counted: an edge window averages only the input values it
    covers (Keras' rule; PyTorch's ``count_include_pad=False``).
    """

    def _sum(self, xp: Any, x: Array, rows: Axis, cols: Axis) -> Array:
        views = window_views(pad_input(xp, x, rows, cols, 0.0, Context()), rows, cols)
        total = xp.asarray(views[0], copy=True)
        for view in views[1:]:
            total = total + view
        return total

    def forward(self, params, x, ctx):
        xp = namespace(x)
        rows, cols, _ = self._axes(tuple(x.shape[1:]))
        if self.padding == "valid":
            counts = float(rows.k * cols.k)
        else:  # how many real input values each window covers, (1, OH, OW, 1)
            ones = xp.ones((1, rows.size, cols.size, 1), dtype=x.dtype, device=device(x))
            counts = self._sum(xp, ones, rows, cols)
        return self._sum(xp, x, rows, cols) / counts, (rows, cols, counts)

    def backward(self, params, cache, dy, ctx, grads):
        if not ctx.need_input_grad:
            return None
        xp = namespace(dy)
        rows, cols, counts = cache
        share = dy / counts
        return unwindow(xp, (share for _ in range(rows.k * cols.k)), rows, cols,
                         dy.shape[-1], dy, ctx)


@dataclass(frozen=True)
class GlobalAvgPool2D(Layer):
    """Mean over height and width: ``(H, W, C) -> (C,)``."""

    def build(self, in_shape):
        _, _, c = check_input(in_shape, "GlobalAvgPool2D")
        return [], (c,)

    def init(self, rng, in_shape):
        check_input(in_shape, "GlobalAvgPool2D")
        return []

    def forward(self, params, x, ctx):
        xp = namespace(x)
        return xp.mean(x, axis=(1, 2)), tuple(x.shape)

    def backward(self, params, cache, dy, ctx, grads):
        if not ctx.need_input_grad:
            return None
        xp = namespace(dy)
        n, h, w, c = cache
        dx = xp.zeros((n, h, w, c), dtype=dy.dtype, device=device(dy))
        return dx + dy[:, None, None, :] / float(h * w)
