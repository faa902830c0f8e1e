"""Periodic embeddings of numeric features (Gorishniy, Rubachev and Babenko, "On Embeddings for
Numerical Features in Tabular Deep Learning", NeurIPS 2022).

Feature ``j`` of ``(batch, features)`` gets ``2k`` values, ``sin(2π c_j1 x_j), …, sin(2π c_jk
x_j)`` and ``cos(2π c_j1 x_j), …, cos(2π c_jk x_j)``, with the frequencies ``c`` learned and drawn
at init from ``normal(0, sigma)``. A following dense layer then sees smooth, high-frequency
functions of each feature that a ReLU network on the raw value fits poorly; ``sigma`` sets the
scale of those functions on standardized inputs (the paper tunes it in ``[0.01, 100]``; 0.1 to
1 suits quantile-normal inputs). The output holds every feature's sines, then every feature's
cosines (``(batch, 2, features, k)`` flattened): the order is immaterial to the dense layer that
follows, and each half is one contiguous run per row, which the sine and cosine write straight
into (an order per feature, sines then cosines, cost two copies forward and two backward).

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
    """``(batch, features)`` -> ``(batch, 2 * features * n_frequencies)``: every feature's
    sines, then every feature's cosines (see the module docstring). One parameter: the frequencies,
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
        xp = namespace(x)
        (c,) = params
        n, f = x.shape
        k = self.n_frequencies
        z = ctx.buffer("z", (n, f, k), x)
        out = ctx.buffer("y", (n, 2, f, k), x)
        if type(z) is np.ndarray and type(x) is np.ndarray and type(c) is np.ndarray and \
                type(out) is np.ndarray:
            # x repeated k times along its features first: the products x_j c_ji, each as
            # the broadcast makes it, in one long loop instead of n f loops of k (the repeat
            # is the cache: the backward's dz x_j reads it the same way); the sines and
            # cosines straight into their halves of the output (runs of f k values a row)
            xs = ctx.buffer("xs", (n, f, k), x)
            np.copyto(xs, np.reshape(x, (n, f, 1)))
            z = np.multiply(xs, np.reshape(c, (1, f, k)), out=z)
            z = np.multiply(z, 2 * math.pi, out=z)
            s, co = np.sin(z, out=out[:, 0]), np.cos(z, out=out[:, 1])
            return np.reshape(out, (n, 2 * f * k)), (x, s, co, xs)
        z = bk.elementwise("multiply", xp.reshape(x, (n, f, 1)), xp.reshape(c, (1, f, k)),
                           out=z)
        z = bk.elementwise("multiply", z, 2 * math.pi, out=z)
        s = bk.elementwise("sin", z, out=ctx.buffer("sin", (n, f, k), x))
        co = bk.elementwise("cos", z, out=ctx.buffer("cos", (n, f, k), x))
        return xp.reshape(xp.concat([s, co], axis=1), (n, 2 * f * k)), (x, s, co, None)

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        xp = namespace(dy)
        (c,) = params
        x, s, co, xs = cache
        n, f = x.shape
        k = self.n_frequencies
        d = xp.reshape(dy, (n, 2, f, k))  # (a view where dy's rows are runs: a column slice)
        dz = ctx.buffer("dz", (n, f, k), dy)
        t = ctx.buffer("t", (n, f, k), dy)
        if xs is not None and type(dz) is np.ndarray and type(dy) is np.ndarray:
            # the products and difference in long loops (each half of dy a run per row);
            # dz x_j from the repeated x
            a = np.multiply(d[:, 0], co, out=dz)
            dz = np.subtract(a, np.multiply(d[:, 1], s, out=t), out=a)
            t = np.multiply(dz, xs, out=t)
            # (2π) Σ_rows, the sum reduced into a buffer and scaled into the gradient
            total = np.add.reduce(t, axis=0, out=ctx.buffer("dc", (f, k), dy))
            np.multiply(2 * math.pi, total, out=grads[0])
        else:
            a = bk.elementwise("multiply", d[:, 0, ...], co, out=dz)
            dz = bk.elementwise("subtract", a,
                                bk.elementwise("multiply", d[:, 1, ...], s, out=t), out=a)
            t = bk.elementwise("multiply", dz, xp.reshape(x, (n, f, 1)), out=t)
            grads[0][...] = (2 * math.pi) * xp.sum(t, axis=0)
        if not ctx.need_input_grad:
            return None
        t = bk.elementwise("multiply", dz, xp.reshape(c, (1, f, k)), out=t)
        return (2 * math.pi) * xp.sum(t, axis=2)
