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
  (uniform or normal output; the forward and the mirrored interpolation of the NumPy version
  from one search) and PLE.

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


def _search(g: _Graph, x: str, flat: str, offset: str, bits: int) -> str:
    """``#{i : table_j[i] <= x[:, j]} - 1`` per element (int64, from -1), for tables padded
    with +inf to ``2**bits`` entries and laid out flat column after column (``offset``: each
    column's start). Binary lifting: the count is built bit by bit from the highest, one
    ``Gather`` and one comparison per bit, every probe in range thanks to the padding."""
    pos = g.op("ConstantOfShape", [g.op("Shape", [x])], "pos",
               value=helper.make_tensor("v", TensorProto.INT64, [1], [-1]))
    for b in range(bits - 1, -1, -1):
        cand = g.op("Add", [pos, g.const(np.int64(1 << b), "step")], "cand")
        probe = g.op("Gather", [flat, g.op("Add", [cand, offset])], "probe")
        pos = g.op("Where", [g.op("LessOrEqual", [probe, x]), cand, pos], "pos")
    return pos


def _segment(g: _Graph, x: str, x0: str, x1: str, f0: str, f1: str,
             first: tuple[np.ndarray, np.ndarray], last: tuple[np.ndarray, np.ndarray]) -> str:
    """The end of :func:`pipeline.encoding.interp` once the segment ``(x0, x1) -> (f0, f1)`` of
    each element is known; ``first``/``last``: the tables' first and last ``(xq, fq)`` rows."""
    run = g.op("Where", [g.op("Greater", [x1, x0]), g.op("Sub", [x1, x0]), _f64(g, 1.0)])
    slope = g.op("Div", [g.op("Sub", [f1, f0]), run], "slope")
    out = g.op("Where", [g.op("Equal", [x, x0]), f0,
                         g.op("Add", [g.op("Mul", [slope, g.op("Sub", [x, x0])]), f0])])
    out = g.op("Where", [g.op("Less", [x, _f64(g, first[0])]), _f64(g, first[1]), out])
    return g.op("Where", [g.op("GreaterOrEqual", [x, _f64(g, last[0])]), _f64(g, last[1]),
                          out], "interp")


def _clip_index(g: _Graph, i: str, high: int) -> str:
    return g.op("Min", [g.op("Max", [i, g.const(np.int64(0), "i")]),
                        g.const(np.int64(high), "i")], "seg")


def interp(g: _Graph, x: str, xq: np.ndarray, fq: np.ndarray) -> str:
    """Column ``j`` of the float64 tensor ``x`` ``(N, c)`` interpolated through ``(xq[:, j],
    fq[:, j])`` (``xq``, ``fq``: ``(m, c)``, ``m >= 2``, each ``xq`` column non-decreasing):
    :func:`pipeline.encoding.interp` for each column."""
    m, c = xq.shape
    if m < 2:
        raise ValueError(f"interp needs at least 2 points per column, got {m}")
    bits = m.bit_length()
    width = 1 << bits
    flat_x = _padded_table(g, _f64(g, xq, "xq"), m, c, width, np.inf)
    flat_f = _padded_table(g, _f64(g, fq, "fq"), m, c, width, 0.0)
    offset = g.const((np.arange(c, dtype=np.int64) * width)[None, :], "off")
    # a count past m - 1 is clipped to m - 2, as the NumPy version clips searchsorted's
    i0 = g.op("Add", [_clip_index(g, _search(g, x, flat_x, offset, bits), m - 2), offset])
    i1 = g.op("Add", [i0, g.const(np.int64(1), "i")])
    x0, x1 = g.op("Gather", [flat_x, i0]), g.op("Gather", [flat_x, i1])
    f0, f1 = g.op("Gather", [flat_f, i0]), g.op("Gather", [flat_f, i1])
    return _segment(g, x, x0, x1, f0, f1, (xq[:1], fq[:1]), (xq[-1:], fq[-1:]))


def _mean_of_interpolations(g: _Graph, x: str, quantiles: np.ndarray) -> str:
    """``0.5 * (interp(x, q, refs) - interp(-x, -flip(q), -flip(refs)))`` per column, as
    :func:`pipeline.encoding.quantile_transform` computes it, with one search.

    The mirrored interpolation's segment follows from the forward search: it needs
    ``#{q < x}`` where the search gives ``#{q <= x}``; they differ only when ``x`` equals a
    quantile, and then ``#{q < x}`` is the index of the first quantile of that value (a stored
    table). Its end points are the forward table's, read backwards and negated (exactly)."""
    m, d = quantiles.shape
    bits = m.bit_length()
    width = 1 << bits
    refs = np.linspace(0.0, 1.0, m)  # encoding.references
    flat = _padded_table(g, _f64(g, quantiles, "quantiles"), m, d, width, np.inf)
    offset = g.const((np.arange(d, dtype=np.int64) * width)[None, :], "off")
    f = _f64(g, refs, "refs")  # one table for every column
    one = g.const(np.int64(1), "i")

    def at(table: str, i: str) -> str:
        return g.op("Gather", [table, i])

    pos = _search(g, x, flat, offset, bits)  # #{q <= x} - 1
    j = _clip_index(g, pos, m - 2)
    i0 = g.op("Add", [j, offset])
    forward = _segment(g, x, at(flat, i0), at(flat, g.op("Add", [i0, one])), at(f, j),
                       at(f, g.op("Add", [j, one])), (quantiles[:1], refs[:1]),
                       (quantiles[-1:], refs[-1:]))
    # #{q < x}: #{q <= x}, or, when x is the quantile at pos, the index of its first copy
    # (the padding's entries say m: x = +inf is above every quantile).
    first = np.full((d, width), m, dtype=np.int16 if width < 2**15 else np.int32)
    for c in range(d):
        first[c, :m] = np.searchsorted(quantiles[:, c], quantiles[:, c], side="left")
    last = g.op("Add", [g.op("Max", [pos, g.const(np.int64(0), "i")]), offset])
    n_less = g.op("Where", [g.op("Equal", [at(flat, last), x]),
                            g.op("Cast", [at(g.const(first.ravel(), "first"), last)],
                                 to=TensorProto.INT64),
                            g.op("Add", [pos, one])], "nless")
    # mirrored segment j' = clip(m - 1 - #{q < x}); its points are -q[m-1-j'], -q[m-2-j']
    top = g.const(np.int64(m - 1), "i")
    k0 = g.op("Sub", [top, _clip_index(g, g.op("Sub", [top, n_less]), m - 2)])
    k1 = g.op("Sub", [k0, one])
    i0, i1 = g.op("Add", [k0, offset]), g.op("Add", [k1, offset])
    neg = [g.op("Neg", [t]) for t in (at(flat, i0), at(flat, i1), at(f, k0), at(f, k1))]
    mirrored = _segment(g, g.op("Neg", [x]), *neg, (-quantiles[-1:], -refs[-1:]),
                        (-quantiles[:1], -refs[:1]))
    return g.op("Mul", [_f64(g, 0.5), g.op("Sub", [forward, mirrored])])


def quantile_transform(g: _Graph, x: str, quantiles: np.ndarray, output: str) -> str:
    """:func:`pipeline.encoding.quantile_transform` of the float64 tensor ``x`` ``(N, d)``
    (no NaN) through ``quantiles`` ``(m, d)``; ``output`` is ``"uniform"`` or ``"normal"``."""
    m = quantiles.shape[0]
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
        y = _mean_of_interpolations(g, x, quantiles)
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
