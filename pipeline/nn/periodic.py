"""Periodic embeddings of numeric features (Gorishniy, Rubachev and Babenko, "On Embeddings for
Numerical Features in Tabular Deep Learning", NeurIPS 2022).

Feature ``j`` of ``(batch, features)`` becomes ``2k`` values,
``[sin(2π c_j1 x_j), …, sin(2π c_jk x_j), cos(2π c_j1 x_j), …, cos(2π c_jk x_j)]``, with the
frequencies ``c`` learned and drawn at init from ``normal(0, sigma)``. A following dense layer
then sees smooth, high-frequency functions of each feature that a ReLU network on the raw value
fits poorly; ``sigma`` sets the scale of those functions on standardized inputs (the paper tunes
it in ``[0.01, 100]``; 0.1 to 1 suits quantile-normal inputs).

Backward, with ``z = 2π c x``: ``dz = dsin · cos z − dcos · sin z``, ``dc_ji = 2π Σ_rows dz x_j``
and ``dx_j = 2π Σ_i dz c_ji``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend as bk
from ..backend import namespace
from .layers import Context, Layer, Shape, _flat_input

__all__ = ["Periodic"]

Array = Any


class Periodic(Layer):
    """``(batch, features)`` -> ``(batch, features * 2 * n_frequencies)``: per feature, its
    sines then its cosines (see the module docstring). One parameter: the frequencies,
    ``(features, n_frequencies)``, not covered by the L2 penalty or weight decay (shrinking
    them to 0 would flatten the embedding, not regularise it)."""

    def __init__(self, n_frequencies: int = 8, sigma: float = 0.1) -> None:
        if int(n_frequencies) < 1:
            raise ValueError(f"n_frequencies must be >= 1, got {n_frequencies!r}")
        if not float(sigma) > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.n_frequencies = int(n_frequencies)
        self.sigma = float(sigma)

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        f = _flat_input(self, in_shape)
        return [(f, self.n_frequencies)], (f * 2 * self.n_frequencies,)

    def init(self, rng: np.random.Generator, in_shape: Shape) -> list[np.ndarray]:
        return [rng.normal(0.0, self.sigma, (int(in_shape[0]), self.n_frequencies))]

    def penalized(self, param_shapes: list[Shape]) -> list[bool]:
        return [False]

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        # Arrays in the step's workspace (ctx.buffer; None: fresh), as in EnsembleDense: the
        # same operations as the plain expressions, so the same bits, without page faults.
        # sin and cos write contiguous buffers (their SIMD loops may differ on strided ones).
        xp = namespace(x)
        (c,) = params
        n, f = x.shape
        k = self.n_frequencies
        z = ctx.buffer("z", (n, f, k), x)
        if type(z) is np.ndarray and type(x) is np.ndarray and type(c) is np.ndarray:
            # x repeated k times along its features first: the products x_j c_ji, each as
            # the broadcast makes it, in one long loop instead of n f loops of k (the repeat
            # is the cache: the backward's dz x_j reads it the same way)
            xs = ctx.buffer("xs", (n, f, k), x)
            np.copyto(xs, np.reshape(x, (n, f, 1)))
            z = np.multiply(xs, np.reshape(c, (1, f, k)), out=z)
        else:
            xs = None
            z = bk.elementwise("multiply", xp.reshape(x, (n, f, 1)), xp.reshape(c, (1, f, k)),
                               out=z)
        z = bk.elementwise("multiply", z, 2 * math.pi, out=z)
        s = bk.elementwise("sin", z, out=ctx.buffer("sin", (n, f, k), x))
        co = bk.elementwise("cos", z, out=ctx.buffer("cos", (n, f, k), x))
        out = ctx.buffer("y", (n, f, 2 * k), x)
        if out is None:
            out = xp.concat([s, co], axis=2)
        elif xs is not None:
            _interleave(out, s, co)
        else:
            out[:, :, :k] = s
            out[:, :, k:] = co
        return xp.reshape(out, (n, f * 2 * k)), (x, s, co, xs)

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        xp = namespace(dy)
        (c,) = params
        x, s, co, xs = cache
        n, f = x.shape
        k = self.n_frequencies
        d = xp.reshape(dy, (n, f, 2 * k))
        dz = ctx.buffer("dz", (n, f, k), dy)
        t = ctx.buffer("t", (n, f, k), dy)
        if xs is not None and type(dz) is np.ndarray and type(dy) is np.ndarray:
            # the halves of dy gathered into contiguous buffers first (a copy), then the same
            # products and difference in long loops; dz x_j from the repeated x
            dsin, dcos = ctx.buffer("dsin", (n, f, k), dy), ctx.buffer("dcos", (n, f, k), dy)
            _deinterleave(d, dsin, dcos)
            a = np.multiply(dsin, co, out=dz)
            dz = np.subtract(a, np.multiply(dcos, s, out=t), out=a)
            t = np.multiply(dz, xs, out=t)
            # (2π) Σ_rows, the sum reduced into a buffer and scaled into the gradient
            total = np.add.reduce(t, axis=0, out=ctx.buffer("dc", (f, k), dy))
            np.multiply(2 * math.pi, total, out=grads[0])
        else:
            a = bk.elementwise("multiply", d[:, :, :k], co, out=dz)
            dz = bk.elementwise("subtract", a,
                                bk.elementwise("multiply", d[:, :, k:], s, out=t), out=a)
            t = bk.elementwise("multiply", dz, xp.reshape(x, (n, f, 1)), out=t)
            grads[0][...] = (2 * math.pi) * xp.sum(t, axis=0)
        if not ctx.need_input_grad:
            return None
        t = bk.elementwise("multiply", dz, xp.reshape(c, (1, f, k)), out=t)
        return (2 * math.pi) * xp.sum(t, axis=2)


_ITEMS: dict[int, np.dtype] = {}


def _items(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` ``(n, m k)``, last axis contiguous, as ``(n, m)`` raw items of ``k`` values each
    (a view), so that copies move k values at a time: one loop over n m items, not n m loops
    over k values."""
    size = k * a.dtype.itemsize
    item = _ITEMS.get(size)
    if item is None:
        item = _ITEMS[size] = np.dtype((np.void, size))
    return a.view(item)


def _interleave(out: np.ndarray, s: np.ndarray, co: np.ndarray) -> None:
    """``out[:, :, :k] = s; out[:, :, k:] = co`` for contiguous ``(n, f, k)`` ``s`` and ``co``
    and a contiguous ``out``: the same bytes, copied k values at a time."""
    n, f, k = s.shape
    both = _items(np.reshape(out, (n * f, 2 * k)), k)  # (n f, 2)
    both[:, 0] = _items(np.reshape(s, (n * f, k)), k)[:, 0]
    both[:, 1] = _items(np.reshape(co, (n * f, k)), k)[:, 0]


def _deinterleave(d: np.ndarray, first: np.ndarray, second: np.ndarray) -> None:
    """``first[...] = d[:, :, :k]; second[...] = d[:, :, k:]`` for ``d`` ``(n, f, 2k)`` whose
    rows may be strided (a column slice), as :func:`_interleave` copies."""
    n, f, k = first.shape
    both = _items(np.reshape(d, (n, f * 2 * k)), k)  # (n, 2 f): a view, rows as in d
    _items(np.reshape(first, (n, f * k)), k)[...] = both[:, 0::2]
    _items(np.reshape(second, (n, f * k)), k)[...] = both[:, 1::2]
