"""Numeric input encodings computed from fitted quantiles: pure, array-API functions.

Every function here takes arrays of one namespace (NumPy, CuPy, ``array_api_strict``) and the
fitted state as arrays of the same namespace and device (:func:`pipeline.backend.to_device_of`),
and returns a new array on that device; nothing is modified in place. They run inside
``map_partitions`` tasks, one partition at a time.

* :func:`quantile_transform`: scikit-learn's ``QuantileTransformer`` transform (uniform or normal
  output), bit for bit the same algorithm (two-sided interpolation, bound handling, clipping).
* :func:`piecewise_linear_encode`: PLE of Gorishniy, Rubachev & Babenko (2022), "On Embeddings
  for Numerical Features in Tabular Deep Learning", eq. (1).
* :func:`missing_indicators`, :func:`fill_missing`: ``SimpleImputer(add_indicator=True)``'s two
  halves.
* :func:`ndtri`: the standard normal quantile function (Wichura's AS241, relative error ~1e-16),
  since the array API has no ``erfinv``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import device, namespace

__all__ = [
    "BOUNDS_THRESHOLD",
    "fill_missing",
    "interp",
    "missing_indicators",
    "ndtri",
    "piecewise_linear_encode",
    "ple_edges",
    "quantile_transform",
    "references",
]

# scikit-learn's QuantileTransformer: values this close to the outer quantiles map to the bounds.
BOUNDS_THRESHOLD = 1e-7

# Wichura (1988), Algorithm AS241 (PPND16), highest power first.
_A = (2.5090809287301226727e3, 3.3430575583588128105e4, 6.7265770927008700853e4,
      4.5921953931549871457e4, 1.3731693765509461125e4, 1.9715909503065514427e3,
      1.3314166789178437745e2, 3.3871328727963666080e0)
_B = (5.2264952788528545610e3, 2.8729085735721942674e4, 3.9307895800092710610e4,
      2.1213794301586595867e4, 5.3941960214247511077e3, 6.8718700749205790830e2,
      4.2313330701600911252e1, 1.0)
_C = (7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1,
      1.27045825245236838258e0, 3.64784832476320460504e0, 5.76949722146069140550e0,
      4.63033784615654529590e0, 1.42343711074968357734e0)
_D = (1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2,
      1.48103976427480074590e-1, 6.89767334985100004550e-1, 1.67638483018380384940e0,
      2.05319162663775882187e0, 1.0)
_E = (2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3,
      2.65321895265761230930e-2, 2.96560571828504891230e-1, 1.78482653991729133580e0,
      5.46378491116411436990e0, 6.65790464350110377720e0)
_F = (2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5,
      7.86869131145613259100e-4, 1.48753612908506148525e-2, 1.36929880922735805310e-1,
      5.99832206555887937690e-1, 1.0)


def _horner(coefs: tuple[float, ...], r: Any) -> Any:
    out = coefs[0] * r + coefs[1]
    for c in coefs[2:]:
        out = out * r + c
    return out


def ndtri(p: Any) -> Any:
    """Standard normal quantile of each element of the float array ``p``.

    ``-inf`` at 0, ``inf`` at 1, NaN outside [0, 1] or at NaN; agrees with
    ``scipy.special.ndtri`` to a few ulp (AS241 is accurate to about 1e-16 relative).
    """
    xp = namespace(p)
    q = p - 0.5
    r_central = 0.180625 - q * q
    central = q * _horner(_A, r_central) / _horner(_B, r_central)
    tail_p = xp.where(q <= 0.0, p, 1.0 - p)
    # Guard the log: the tail branch is computed everywhere and selected by xp.where.
    safe = xp.where((tail_p > 0.0) & (tail_p <= 0.5), tail_p, 0.25)
    r = xp.sqrt(-xp.log(safe))
    near = _horner(_C, r - 1.6) / _horner(_D, r - 1.6)
    far = _horner(_E, r - 5.0) / _horner(_F, r - 5.0)
    tail = xp.where(r <= 5.0, near, far)
    tail = xp.where(q < 0.0, -tail, tail)
    out = xp.where(xp.abs(q) <= 0.425, central, tail)
    out = xp.where(p == 0.0, -xp.inf, out)
    out = xp.where(p == 1.0, xp.inf, out)
    return xp.where((p >= 0.0) & (p <= 1.0), out, xp.nan)


def interp(x: Any, xq: Any, fq: Any) -> Any:
    """``np.interp(x, xq, fq)`` for 1-D arrays of one namespace (``xq`` non-decreasing).

    Same rule as NumPy's C loop, including repeated ``xq``: the segment is the last ``j`` with
    ``xq[j] <= x``; ``x == xq[j]`` returns ``fq[j]``; outside the range the end values.
    """
    xp = namespace(x)
    m = xq.shape[0]
    if m == 1:
        return xp.full(x.shape, float(fq[0]), dtype=x.dtype, device=device(x))
    j = xp.searchsorted(xq, x, side="right") - 1
    j = xp.clip(j, 0, m - 2)
    x0, x1 = xp.take(xq, j), xp.take(xq, j + 1)
    f0, f1 = xp.take(fq, j), xp.take(fq, j + 1)
    # x1 > x0 wherever the result is used; elsewhere (outside the range) avoid 0/0 warnings.
    slope = (f1 - f0) / xp.where(x1 > x0, x1 - x0, 1.0)
    out = xp.where(x == x0, f0, slope * (x - x0) + f0)
    out = xp.where(x < xq[0], fq[0], out)
    return xp.where(x >= xq[m - 1], fq[m - 1], out)


def references(n_quantiles: int, like: Any) -> Any:
    """``np.linspace(0, 1, n_quantiles)`` as float64 on ``like``'s device (the probabilities of
    ``QuantileTransformer.references_``)."""
    xp = namespace(like)
    return xp.asarray(np.linspace(0.0, 1.0, n_quantiles), dtype=xp.float64, device=device(like))


def quantile_transform(X: Any, quantiles: Any, output: str = "uniform") -> Any:
    """Map each column of ``X`` (n, d) through its quantiles (q, d) to uniform or normal output.

    The algorithm of ``sklearn.preprocessing.QuantileTransformer.transform``: the mean of the
    forward and the mirrored interpolation (so a repeated quantile maps to the middle of its
    probabilities), values at the outer quantiles set to 0/1 (within ``BOUNDS_THRESHOLD`` for
    normal output), then ``ndtri`` clipped to ``±ndtri(BOUNDS_THRESHOLD - eps)``. NaN stays
    NaN. With quantiles from an exact sketch this equals ``QuantileTransformer(n_quantiles=q,
    subsample=None)`` to rounding. With quantiles from a sketch of rank error ``e`` over ``N``
    values, each quantile is the exact one at a probability at most ``(e + 1) / (N - 1)`` away,
    so on a column whose exact quantiles are distinct the uniform output differs from the
    exact transform's by at most ``(e + 1) / (N - 1) + 2 / (q - 1)`` (tested in
    ``tests/test_tabular_prep.py``).
    """
    if output not in ("uniform", "normal"):
        raise ValueError(f"output must be 'uniform' or 'normal', got {output!r}")
    xp = namespace(X)
    refs = references(quantiles.shape[0], X)
    columns = []
    for j in range(X.shape[1]):
        x, qj = X[:, j], quantiles[:, j]
        lo, hi = qj[0], qj[-1]
        if output == "normal":
            at_lo = x - BOUNDS_THRESHOLD < lo
            at_hi = x + BOUNDS_THRESHOLD > hi
        else:
            at_lo = x == lo
            at_hi = x == hi
        finite = xp.where(xp.isnan(x), lo, x)
        y = 0.5 * (interp(finite, qj, refs) - interp(-finite, -xp.flip(qj), -xp.flip(refs)))
        y = xp.where(at_hi, 1.0, y)
        y = xp.where(at_lo, 0.0, y)
        y = xp.where(xp.isnan(x), xp.nan, y)
        if output == "normal":
            # The bounds exactly as scikit-learn computes them (1 - small rounds, so the upper
            # bound is not minus the lower one).
            eps = float(np.spacing(1))
            clip_min = float(ndtri(np.asarray(BOUNDS_THRESHOLD - eps)))
            clip_max = float(ndtri(np.asarray(1 - (BOUNDS_THRESHOLD - eps))))
            y = xp.clip(ndtri(y), clip_min, clip_max)
        columns.append(y)
    if not columns:
        return xp.zeros((X.shape[0], 0), dtype=X.dtype, device=device(X))
    return xp.stack(columns, axis=1)


def ple_edges(quantiles: np.ndarray) -> list[np.ndarray]:
    """Bin edges per feature from quantiles (q, d) at ``linspace(0, 1, n_bins + 1)``: the
    distinct values of each column (a discrete feature gets fewer, wider bins), as in the
    paper's quantile bins and ``rtdl_num_embeddings.compute_bins``. Host NumPy."""
    return [np.unique(quantiles[:, j]) for j in range(quantiles.shape[1])]


def piecewise_linear_encode(X: Any, edges: Any, n_edges: list[int], n_bins: int) -> Any:
    """Piecewise-linear encoding of each column of ``X`` (n, d): output (n, d * n_bins),
    feature-major.

    ``edges`` (n_bins + 1, d) holds feature ``j``'s ``T_j + 1 = n_edges[j]`` increasing edges
    ``b_0 < ... < b_T`` in its first rows (the rest is ignored). Component ``t = 1..T`` is, as
    in the paper's eq. (1),

        0                               if x < b_{t-1} and t > 1
        1                               if x >= b_t   and t < T
        (x - b_{t-1}) / (b_t - b_{t-1})  otherwise,

    so values lie in [0, 1] for ``b_0 <= x <= b_T``; the first component goes below 0 and the
    last above 1 outside that range (the paper keeps outliers distinguishable). Components
    ``T + 1 .. n_bins`` are 0, and a feature with a single edge (constant) is all 0.
    """
    xp = namespace(X)
    n = X.shape[0]
    blocks = []
    for j in range(X.shape[1]):
        n_bin = n_edges[j] - 1
        if n_bin < 1:
            blocks.append(xp.zeros((n, n_bins), dtype=X.dtype, device=device(X)))
            continue
        lower = edges[:n_bin, j]
        upper = edges[1 : n_bin + 1, j]
        e = (X[:, j : j + 1] - lower) / (upper - lower)
        t = xp.arange(n_bin, device=device(X))
        e = xp.where((t > 0) & (e < 0.0), 0.0, e)
        e = xp.where((t < n_bin - 1) & (e > 1.0), 1.0, e)
        if n_bin < n_bins:
            pad = xp.zeros((n, n_bins - n_bin), dtype=X.dtype, device=device(X))
            e = xp.concat([e, pad], axis=1)
        blocks.append(e)
    if not blocks:
        return xp.zeros((n, 0), dtype=X.dtype, device=device(X))
    return xp.concat(blocks, axis=1)


def missing_indicators(X: Any, columns: list[int]) -> Any:
    """``1.0`` where ``X[:, c]`` is NaN, for each ``c`` in ``columns`` (n, len(columns)), in
    ``X``'s dtype: ``MissingIndicator(features="missing-only")`` with the fitted columns."""
    xp = namespace(X)
    if not columns:
        return xp.zeros((X.shape[0], 0), dtype=X.dtype, device=device(X))
    idx = xp.asarray(columns, dtype=xp.int64, device=device(X))
    return xp.astype(xp.isnan(xp.take(X, idx, axis=1)), X.dtype)


def fill_missing(X: Any, fills: Any) -> Any:
    """``X`` (n, d) with NaN in column ``j`` replaced by ``fills[j]`` (a new array)."""
    xp = namespace(X)
    return xp.where(xp.isnan(X), fills, X)
