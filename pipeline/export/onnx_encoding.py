"""The numeric encodings of :mod:`pipeline.encoding` written as ONNX nodes.

Each function adds nodes to a :class:`pipeline.export.onnx._Graph` that compute, in float64, the
same operations in the same order as the NumPy function it is named after, so that the graph
agrees with :meth:`pipeline.tabular_prep.TabularPreprocessor.transform_array` to the last bit or
two of a float64 (the elementwise ``log``/``sqrt`` of two libraries may round differently):

* :func:`ndtri`: Wichura's AS241 (ONNX has no normal quantile function nor ``erfinv``), the
  coefficients of :func:`pipeline.encoding.ndtri`;
* :func:`interp`: :func:`pipeline.encoding.interp` for every column at once. ONNX has no
  ``searchsorted``; the segment index is found by a branchless binary search (one ``Gather``
  and one comparison per bit of the table length: 10 steps for 1,000 quantiles), not by
  comparing each value with the whole table (``N x 1000`` comparisons per column);
* :func:`quantile_transform`, :func:`piecewise_linear_encode`: the two quantile encodings
  (uniform or normal output) and PLE.

Inputs hold no NaN here: the tabular graph imputes before encoding, as the NumPy path does.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from .. import encoding
from .onnx import _Graph

__all__ = ["interp", "ndtri", "piecewise_linear_encode", "quantile_transform"]


def _f64(g: _Graph, value: float | np.ndarray, hint: str = "c") -> str:
    return g.const(np.asarray(value, dtype=np.float64), hint)


def _horner(g: _Graph, coefs: tuple[float, ...], r: str) -> str:
    out = g.op("Add", [g.op("Mul", [_f64(g, coefs[0]), r]), _f64(g, coefs[1])])
    for c in coefs[2:]:
        out = g.op("Add", [g.op("Mul", [out, r]), _f64(g, c)])
    return out


def ndtri(g: _Graph, p: str) -> str:
    """The standard normal quantile of each element of the float64 tensor ``p`` (values in
    [0, 1]; ``-inf`` at 0, ``inf`` at 1): :func:`pipeline.encoding.ndtri`, op for op."""
    half = _f64(g, 0.5)
    q = g.op("Sub", [p, half], "q")
    r_central = g.op("Sub", [_f64(g, 0.180625), g.op("Mul", [q, q])])
    central = g.op("Div", [g.op("Mul", [q, _horner(g, encoding._A, r_central)]),
                           _horner(g, encoding._B, r_central)], "central")
    zero = _f64(g, 0.0)
    tail_p = g.op("Where", [g.op("LessOrEqual", [q, zero]), p,
                            g.op("Sub", [_f64(g, 1.0), p])])
    ok = g.op("And", [g.op("Greater", [tail_p, zero]), g.op("LessOrEqual", [tail_p, half])])
    safe = g.op("Where", [ok, tail_p, _f64(g, 0.25)])  # the log's argument stays in (0, 1)
    r = g.op("Sqrt", [g.op("Neg", [g.op("Log", [safe])])], "r")
    r16, r5 = g.op("Sub", [r, _f64(g, 1.6)]), g.op("Sub", [r, _f64(g, 5.0)])
    near = g.op("Div", [_horner(g, encoding._C, r16), _horner(g, encoding._D, r16)])
    far = g.op("Div", [_horner(g, encoding._E, r5), _horner(g, encoding._F, r5)])
    tail = g.op("Where", [g.op("LessOrEqual", [r, _f64(g, 5.0)]), near, far])
    tail = g.op("Where", [g.op("Less", [q, zero]), g.op("Neg", [tail]), tail])
    out = g.op("Where", [g.op("LessOrEqual", [g.op("Abs", [q]), _f64(g, 0.425)]), central,
                         tail])
    out = g.op("Where", [g.op("Equal", [p, zero]), _f64(g, -np.inf), out])
    return g.op("Where", [g.op("Equal", [p, _f64(g, 1.0)]), _f64(g, np.inf), out], "ndtri")


def _padded_table(g: _Graph, table: str, m: int, c: int, width: int, fill: float) -> str:
    """The float64 ``(m, c)`` tensor ``table`` as a flat ``(c * width,)`` tensor, column after
    column, each padded with ``fill`` to ``width``. Built in the graph (onnxruntime folds it
    once when the session starts), so the file stores each table once and unpadded."""
    cols = g.op("Transpose", [table], perm=[1, 0])
    pad = g.op("Expand", [_f64(g, fill), g.const(np.asarray([c, width - m], np.int64), "shape")])
    return g.op("Reshape", [g.op("Concat", [cols, pad], axis=1),
                            g.const(np.asarray([-1], np.int64), "shape")], "table")


def interp(g: _Graph, x: str, xq: np.ndarray, fq: np.ndarray, xq_tensor: str | None = None
           ) -> str:
    """Column ``j`` of the float64 tensor ``x`` ``(N, c)`` interpolated through ``(xq[:, j],
    fq[:, j])`` (``xq``, ``fq``: ``(m, c)``, ``m >= 2``, each ``xq`` column non-decreasing):
    :func:`pipeline.encoding.interp` for each column. ``xq_tensor``: a float64 ``(m, c)``
    tensor of the graph holding ``xq`` (else ``xq`` is stored); repeated columns of ``fq``
    are stored once."""
    m, c = xq.shape
    if m < 2:
        raise ValueError(f"interp needs at least 2 points per column, got {m}")
    # Binary lifting: pos + 1 = #{i : xq[i] <= x}, built bit by bit from the highest. Each
    # column's table is padded with +inf to a power of two, so every probe is in range; a
    # count past m - 1 is clipped to m - 2 below, as the NumPy version clips searchsorted.
    bits = m.bit_length()
    width = 1 << bits
    flat_x = _padded_table(g, xq_tensor or _f64(g, xq, "xq"), m, c, width, np.inf)
    offset = g.const((np.arange(c, dtype=np.int64) * width)[None, :], "off")
    f_cols, f_index = np.unique(fq.T, axis=0, return_inverse=True)
    flat_f = _padded_table(g, _f64(g, f_cols.T, "fq"), m, len(f_cols), width, 0.0)
    f_offset = g.const((np.ravel(f_index).astype(np.int64) * width)[None, :], "off")
    pos = g.op("ConstantOfShape", [g.op("Shape", [x])], "pos",
               value=helper.make_tensor("v", TensorProto.INT64, [1], [-1]))
    for b in range(bits - 1, -1, -1):
        cand = g.op("Add", [pos, g.const(np.int64(1 << b), "step")], "cand")
        probe = g.op("Gather", [flat_x, g.op("Add", [cand, offset])], "probe")
        pos = g.op("Where", [g.op("LessOrEqual", [probe, x]), cand, pos], "pos")
    j = g.op("Min", [g.op("Max", [pos, g.const(np.int64(0), "i")]),
                     g.const(np.int64(m - 2), "i")], "seg")
    one = g.const(np.int64(1), "i")
    i0 = g.op("Add", [j, offset])
    x0, x1 = g.op("Gather", [flat_x, i0]), g.op("Gather", [flat_x, g.op("Add", [i0, one])])
    k0 = g.op("Add", [j, f_offset])
    f0, f1 = g.op("Gather", [flat_f, k0]), g.op("Gather", [flat_f, g.op("Add", [k0, one])])
    run = g.op("Where", [g.op("Greater", [x1, x0]), g.op("Sub", [x1, x0]), _f64(g, 1.0)])
    slope = g.op("Div", [g.op("Sub", [f1, f0]), run], "slope")
    out = g.op("Where", [g.op("Equal", [x, x0]), f0,
                         g.op("Add", [g.op("Mul", [slope, g.op("Sub", [x, x0])]), f0])])
    out = g.op("Where", [g.op("Less", [x, _f64(g, xq[:1])]), _f64(g, fq[:1]), out])
    return g.op("Where", [g.op("GreaterOrEqual", [x, _f64(g, xq[-1:])]), _f64(g, fq[-1:]),
                          out], "interp")


def quantile_transform(g: _Graph, x: str, quantiles: np.ndarray, output: str) -> str:
    """:func:`pipeline.encoding.quantile_transform` of the float64 tensor ``x`` ``(N, d)``
    (no NaN) through ``quantiles`` ``(m, d)``; ``output`` is ``"uniform"`` or ``"normal"``."""
    m, d = quantiles.shape
    lo, hi = quantiles[:1], quantiles[-1:]
    if output == "normal":
        t = _f64(g, encoding.BOUNDS_THRESHOLD)
        at_lo = g.op("Less", [g.op("Sub", [x, t]), _f64(g, lo)])
        at_hi = g.op("Greater", [g.op("Add", [x, t]), _f64(g, hi)])
    elif output == "uniform":
        at_lo = g.op("Equal", [x, _f64(g, lo)])
        at_hi = g.op("Equal", [x, _f64(g, hi)])
    else:
        raise ValueError(f"output must be 'uniform' or 'normal', got {output!r}")
    if m == 1:  # NumPy's interp is the constant 0 then (one row of fit data)
        y = g.op("ConstantOfShape", [g.op("Shape", [x])],
                 value=helper.make_tensor("v", TensorProto.DOUBLE, [1], [0.0]))
    else:
        # Both interpolations of the NumPy version (forward, and mirrored so that a repeated
        # quantile maps to the middle of its probabilities) in one search over 2d columns.
        refs = np.linspace(0.0, 1.0, m)
        xq = np.concatenate([quantiles, -np.flip(quantiles, axis=0)], axis=1)
        fq = np.concatenate([np.repeat(refs[:, None], d, 1),
                             np.repeat(-np.flip(refs)[:, None], d, 1)], axis=1)
        # The mirrored table is built in the graph from the stored quantiles.
        q = _f64(g, quantiles, "quantiles")
        backwards = g.op("Slice", [q, *(g.const(np.asarray([v], np.int64), "i")
                                         for v in (-1, np.iinfo(np.int64).min, 0, -1))])
        table = g.op("Concat", [q, g.op("Neg", [backwards])], axis=1)
        both = interp(g, g.op("Concat", [x, g.op("Neg", [x])], axis=1), xq, fq, table)
        cut = [g.const(np.asarray([v], np.int64), "i") for v in (0, d, 2 * d)]
        axis = g.const(np.asarray([1], np.int64), "i")
        fwd = g.op("Slice", [both, cut[0], cut[1], axis])
        mirrored = g.op("Slice", [both, cut[1], cut[2], axis])
        y = g.op("Mul", [_f64(g, 0.5), g.op("Sub", [fwd, mirrored])])
    y = g.op("Where", [at_hi, _f64(g, 1.0), y])
    y = g.op("Where", [at_lo, _f64(g, 0.0), y], "qt")
    if output == "uniform":
        return y
    eps = float(np.spacing(1))  # the bounds exactly as the NumPy version computes them
    clip_min = float(encoding.ndtri(np.asarray(encoding.BOUNDS_THRESHOLD - eps)))
    clip_max = float(encoding.ndtri(np.asarray(1 - (encoding.BOUNDS_THRESHOLD - eps))))
    return g.op("Min", [g.op("Max", [ndtri(g, y), _f64(g, clip_min)]), _f64(g, clip_max)],
                "qn")


def piecewise_linear_encode(g: _Graph, x: str, edges: np.ndarray, n_edges: list[int],
                            n_bins: int) -> str:
    """:func:`pipeline.encoding.piecewise_linear_encode` of the float64 tensor ``x``
    ``(N, d)``: ``(N, d * n_bins)``, feature-major."""
    d = len(n_edges)
    lower = np.zeros((d, n_bins))
    width = np.ones((d, n_bins))
    valid, low_clip, high_clip = (np.zeros((d, n_bins), dtype=bool) for _ in range(3))
    for j, n in enumerate(n_edges):
        n_bin = int(n) - 1
        if n_bin < 1:  # a constant feature: all zeros
            continue
        lo, up = edges[:n_bin, j], edges[1:n_bin + 1, j]
        lower[j, :n_bin] = lo
        width[j, :n_bin] = up - lo  # the NumPy version's (upper - lower), same rounding
        valid[j, :n_bin] = True
        low_clip[j, 1:n_bin] = True
        high_clip[j, :n_bin - 1] = True
    x3 = g.op("Unsqueeze", [x, g.const(np.asarray([2], np.int64), "i")])
    e = g.op("Div", [g.op("Sub", [x3, _f64(g, lower[None])]), _f64(g, width[None])], "ple")
    zero, one = _f64(g, 0.0), _f64(g, 1.0)
    e = g.op("Where", [g.op("And", [g.const(low_clip[None], "m"), g.op("Less", [e, zero])]),
                       zero, e])
    e = g.op("Where", [g.op("And", [g.const(high_clip[None], "m"), g.op("Greater", [e, one])]),
                       one, e])
    e = g.op("Where", [g.const(valid[None], "m"), e, zero])
    return g.op("Reshape", [e, g.const(np.asarray([0, d * n_bins], np.int64), "shape")], "ple")
