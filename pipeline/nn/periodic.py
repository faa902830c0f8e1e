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
        z = bk.elementwise("multiply", xp.reshape(x, (n, f, 1)), xp.reshape(c, (1, f, k)),
                           out=ctx.buffer("z", (n, f, k), x))
        z = bk.elementwise("multiply", z, 2 * math.pi, out=ctx.buffer("z", (n, f, k), x))
        s = bk.elementwise("sin", z, out=ctx.buffer("sin", (n, f, k), x))
        co = bk.elementwise("cos", z, out=ctx.buffer("cos", (n, f, k), x))
        out = ctx.buffer("y", (n, f, 2 * k), x)
        if out is None:
            out = xp.concat([s, co], axis=2)
        else:
            out[:, :, :k] = s
            out[:, :, k:] = co
        return xp.reshape(out, (n, f * 2 * k)), (x, s, co)

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        xp = namespace(dy)
        (c,) = params
        x, s, co = cache
        n, f = x.shape
        k = self.n_frequencies
        d = xp.reshape(dy, (n, f, 2 * k))
        a = bk.elementwise("multiply", d[:, :, :k], co, out=ctx.buffer("dz", (n, f, k), dy))
        t = ctx.buffer("t", (n, f, k), dy)
        dz = bk.elementwise("subtract", a, bk.elementwise("multiply", d[:, :, k:], s, out=t),
                            out=a)
        t = bk.elementwise("multiply", dz, xp.reshape(x, (n, f, 1)), out=t)
        grads[0][...] = (2 * math.pi) * xp.sum(t, axis=0)
        if not ctx.need_input_grad:
            return None
        t = bk.elementwise("multiply", dz, xp.reshape(c, (1, f, k)), out=t)
        return (2 * math.pi) * xp.sum(t, axis=2)
