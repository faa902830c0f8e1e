"""Periodic embeddings of numeric features (Gorishniy, Rubachev and Babenko, "On Embeddings for
Numerical Features in Tabular Deep Learning", NeurIPS 2022).

Feature ``j`` of ``(batch, features)`` gets ``2k_j`` values, ``sin(2π c_j1 x_j), …, sin(2π c_jk
x_j)`` and ``cos(2π c_j1 x_j), …, cos(2π c_jk x_j)``, with the frequencies ``c`` learned and drawn
at init from ``normal(0, sigma)``. A following dense layer then sees smooth, high-frequency
functions of each feature that a ReLU network on the raw value fits poorly; ``sigma`` sets the
scale of those functions on standardized inputs (the paper tunes it in ``[0.01, 100]``; 0.1 to
1 suits quantile-normal inputs).

Features may have different numbers of frequencies (``n_frequencies``: one count per feature);
consecutive features of one count form a *group*, with one ``(features, k)`` parameter array.
The output holds every feature's sines, then every feature's cosines (feature by feature,
frequency by frequency): the order is immaterial to the dense layer that follows, and each half
is one contiguous run per row, which the sine and cosine write straight into, whatever the
groups. (``order="groups"``, each group's sines then its cosines, is the output of the networks
saved when each group was a layer of its own; it is kept so that they load and predict as
before. It costs a permutation of the columns each way.)

Backward, with ``z = 2π c x``: ``dz = dsin · cos z − dcos · sin z``, ``dc_ji = 2π Σ_rows dz x_j``
and ``dx_j = 2π Σ_i dz c_ji``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend as bk
from ..backend import device, namespace
from .layers import Context, Layer, Shape, _flat_input

__all__ = ["Periodic"]

Array = Any
_ORDERS = ("halves", "groups")


def _columns(a: Array, index: np.ndarray, out: Array) -> Array:
    """The columns ``index`` of ``a`` (a permutation), into ``out`` when given."""
    if type(out) is np.ndarray and type(a) is np.ndarray:
        return np.take(a, index, axis=1, out=out, mode="clip")
    xp = namespace(a)
    return xp.take(a, xp.asarray(index, device=device(a)), axis=1)


def _column_major(a: Array, ctx: Context) -> bool:
    """``a`` column-major (ColumnSplit's input columns, its next layer's input gradient), in a
    step with a workspace."""
    return ctx.workspace is not None and bk.column_major(a)


class Periodic(Layer):
    """``(batch, features)`` -> ``(batch, 2 Σ_j k_j)``: every feature's sines, then every
    feature's cosines (see the module docstring). ``n_frequencies``: one count ``k`` for every
    feature, or one per feature. One parameter per group of consecutive features with the same
    count: its frequencies, ``(features, k)``, not covered by the L2 penalty or weight decay
    (shrinking them to 0 would flatten the embedding, not regularise it)."""

    def __init__(self, n_frequencies: int | Sequence[int] = 8, sigma: float = 0.1,
                 order: str = "halves") -> None:
        single = isinstance(n_frequencies, (int, np.integer))
        ks = (n_frequencies,) if single else tuple(n_frequencies)
        if not ks or any(isinstance(k, bool) or int(k) != k or int(k) < 1 for k in ks):
            raise ValueError(f"n_frequencies must be an int >= 1 or a sequence of them, got "
                             f"{n_frequencies!r}")
        if not float(sigma) > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        if order not in _ORDERS:
            raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
        self.n_frequencies = int(ks[0]) if single else tuple(int(k) for k in ks)
        self.sigma = float(sigma)
        self.order = order

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.order == "halves":  # (the default: configs read as they did before it)
            del config["order"]
        return config

    def _counts(self, f: int) -> tuple[int, ...]:
        if isinstance(self.n_frequencies, int):
            return (self.n_frequencies,) * f
        if len(self.n_frequencies) != f:
            raise ValueError(f"{self!r} has frequency counts for {len(self.n_frequencies)} "
                             f"features; its input has {f}")
        return self.n_frequencies

    def _grouped(self, f: int) -> list[tuple[int, int, int]]:
        """The groups of ``f`` features: (first feature, features, k)."""
        groups, j = [], 0
        counts = self._counts(f)
        while j < f:
            k, m = counts[j], 1
            while j + m < f and counts[j + m] == k:
                m += 1
            groups.append((j, m, k))
            j += m
        return groups

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        f = _flat_input(self, in_shape)
        counts = self._counts(f)
        self._groups = self._grouped(f)
        self._width = w = int(sum(counts))
        # the column of x each frequency multiplies (features repeated k times)
        self._repeat = np.repeat(np.arange(f), counts)
        self._permutation = None  # order="groups": output column i is halves column perm[i]
        if self.order == "groups" and len(self._groups) > 1:
            perm, a = [], 0
            for _, m, k in self._groups:
                perm += list(range(a, a + m * k)) + list(range(w + a, w + a + m * k))
                a += m * k
            self._permutation = np.asarray(perm)
            self._inverse = np.argsort(self._permutation)
        return [(m, k) for _, m, k in self._groups], (2 * w,)

    def init(self, rng: np.random.Generator, in_shape: Shape) -> list[np.ndarray]:
        return [rng.normal(0.0, self.sigma, (m, k))
                for _, m, k in self._grouped(int(in_shape[0]))]

    def penalized(self, param_shapes: list[Shape]) -> list[bool]:
        return [False] * len(param_shapes)

    def _frequencies(self, params: list[Array], ctx: Context) -> Array:
        """Every frequency in one row ``(1, width)``, feature by feature."""
        if len(params) == 1:
            return namespace(params[0]).reshape(params[0], (1, self._width))
        # the groups one after the other in the flat parameters: a view of them, no copy
        span = None if ctx.workspace is None else ctx.workspace.span("c", params)
        if span is not None:
            return span.reshape(1, self._width)
        xp = namespace(params[0])
        flat = [bk.reshape(p, (-1,)) for p in params]
        buf = ctx.buffer("c", (self._width,), params[0])
        if type(buf) is np.ndarray:
            return np.concatenate(flat, out=buf).reshape(1, self._width)
        return bk.reshape(xp.concat(flat), (1, self._width))

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        # Arrays in the step's workspace (ctx.buffer; None: fresh), as in EnsembleDense: the
        # same operations as the plain expressions, so the same bits, without page faults.
        xp = namespace(x)
        n, w = x.shape[0], self._width
        c = self._frequencies(params, ctx)
        # x repeated k times along its features first (the cache: the backward's dz x_j
        # reads it the same way), times every frequency in one long loop
        if _column_major(x, ctx) and self._permutation is None:
            # (a column-major x, ColumnSplit's: every array column-major, each column a run;
            # the repeat is a gather of x's transposed rows)
            xs = np.take(x.T, self._repeat, axis=0, out=ctx.buffer("xsT", (w, n), x),
                         mode="clip").T
            z_out, halves = ctx.buffer("zT", (w, n), x).T, ctx.buffer("yT", (2 * w, n), x).T
        else:
            z_out = ctx.buffer("z", (n, w), x)
            halves = ctx.buffer("y" if self._permutation is None else "halves", (n, 2 * w), x)
            if type(x) is np.ndarray:
                xs = ctx.buffer("xs", (n, w), x)
                xs = x[:, self._repeat] if xs is None else \
                    np.take(x, self._repeat, axis=1, out=xs, mode="clip")
            else:
                xs = xp.take(x, xp.asarray(self._repeat, device=device(x)), axis=1)
        z = bk.elementwise("multiply", xs, c, out=z_out)
        z = bk.elementwise("multiply", z, 2 * math.pi, out=z)
        if halves is not None and type(halves) is np.ndarray:
            # the sines and cosines straight into their halves of the output
            s, co = np.sin(z, out=halves[:, :w]), np.cos(z, out=halves[:, w:])
        else:
            s, co = bk.elementwise("sin", z), bk.elementwise("cos", z)
            halves = xp.concat([s, co], axis=1)
        y = halves
        if self._permutation is not None:
            y = _columns(halves, self._permutation, out=ctx.buffer("y", (n, 2 * w), x))
        return y, (s, co, xs)

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        xp = namespace(dy)
        s, co, xs = cache
        n, w = dy.shape[0], self._width
        if self._permutation is not None:
            dy = _columns(dy, self._inverse, out=ctx.buffer("dhalves", (n, 2 * w), dy))
        # dz over every frequency at once (each half of dy a run a row), dz x_j from the
        # repeated x, and (2π) Σ_rows in one reduction, handed out group by group
        if _column_major(dy, ctx) and _column_major(co, ctx):
            t, dz_out = ctx.buffer("tT", (w, n), dy).T, ctx.buffer("dzT", (w, n), dy).T
        else:
            t, dz_out = ctx.buffer("t", (n, w), dy), ctx.buffer("dz", (n, w), dy)
        dz = bk.elementwise("multiply", dy[:, :w], co, out=dz_out)
        dz = bk.elementwise("subtract", dz,
                            bk.elementwise("multiply", dy[:, w:], s, out=t), out=dz)
        t = bk.elementwise("multiply", dz, xs, out=t)
        total = bk.reduce("sum", t, axis=0, out=ctx.buffer("dc", (w,), dy))
        span = None if ctx.workspace is None or len(grads) < 2 else \
            ctx.workspace.span("dc", grads)
        if span is not None:  # the groups' gradients one after the other: one product
            bk.elementwise("multiply", 2 * math.pi, total, out=span)
        else:
            a = 0
            for (_, m, k), g in zip(self._groups, grads, strict=True):
                bk.elementwise("multiply", 2 * math.pi,
                               bk.reshape(total[a:a + m * k], (m, k)), out=g)
                a += m * k
        if not ctx.need_input_grad:
            return None
        dxs, a = [], 0
        for (_, m, k), c in zip(self._groups, params, strict=True):
            tt = bk.elementwise("multiply", bk.reshape(dz[:, a:a + m * k], (n, m, k)),
                                bk.reshape(c, (1, m, k)))
            dxs.append((2 * math.pi) * xp.sum(tt, axis=2))
            a += m * k
        return dxs[0] if len(dxs) == 1 else xp.concat(dxs, axis=1)
