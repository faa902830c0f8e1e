"""A mergeable, deterministic quantile sketch of one numeric column, with a certified rank error.

A :class:`QuantileSketch` is a weighted set of distinct values ``v_1 < ... < v_m`` (weights
``w_i`` counting rows) plus the column's missing-value count. It summarises ``N = Σ w_i``
non-missing values ``x`` through the step functions

    F̂(t) = Σ_{v_i <= t} w_i,        Ĝ(t) = Σ_{v_i < t} w_i,

and carries ``rank_error = e``, a bound such that for every ``t``

    |F̂(t) - #{x <= t}| <= e   and   |Ĝ(t) - #{x < t}| <= e.

* :func:`sketch_values` of one partition is exact (``e = 0``, distinct values with their counts)
  and then compressed to at most ``size + 1`` points.
* :func:`merge_sketches` adds the step functions (so the errors add: in relative terms ``e / N``
  it is the larger of the two) and compresses again.
* :func:`compress` replaces runs of consecutive points by their largest value carrying the run's
  weight. A run is the set of points whose cumulative weight before them falls in the same
  slice ``[k N / size, (k+1) N / size)``, so at most ``size`` runs remain (plus the smallest
  value, which is always kept) and each moves at most ``N / size`` of weight: the compression
  adds less than ``N / size`` to ``e`` (the exact amount it moved is what is added).

So with ``P`` partitions merged by :func:`pipeline.reduce.tree_reduce` (depth
``D = ceil(log_split_every P)``) the certified error obeys the a-priori bound

    rank_error <= (D + 1) * N / size

and it is 0 (the sketch is the exact distribution) whenever the column has at most ``size``
distinct values, in particular at most ``size`` rows. Nothing is random and points are sorted
before every compression, so the result depends only on the partitions and the tree's shape,
never on workers or completion order.

Quantiles follow NumPy's default ("linear") definition on the summary: ``q`` maps to position
``h = q (N - 1)`` and interpolates between the order statistics ``⌊h⌋`` and ``⌊h⌋ + 1``.
With ``x_(0) <= ... <= x_(N-1)`` the sorted data, :meth:`QuantileSketch.quantiles` returns a
value in ``[x_(⌊h⌋ - e), x_(⌊h⌋ + 1 + e)]`` (indices clipped to ``[0, N-1]``): its rank error
is at most ``e + 1`` positions, and with ``e = 0`` it equals ``np.percentile(x, 100 q)`` up to
rounding. The minimum and maximum are always exact.

Example
-------
>>> import numpy as np
>>> s = merge_sketches([sketch_values(np.array([3.0, np.nan, 1.0])), sketch_values(np.array([2.0]))])
>>> s.quantiles([0.0, 0.5, 1.0]).tolist(), s.n_null, s.rank_error
([1.0, 2.0, 3.0], 1, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DEFAULT_SKETCH_SIZE",
    "QuantileSketch",
    "compress",
    "merge_sketches",
    "rank_error_bound",
    "sketch_values",
]

DEFAULT_SKETCH_SIZE = 4096


class QuantileSketch(NamedTuple):
    """Weighted distinct values of one column (host NumPy, float64) and what they guarantee.

    ``values`` is strictly increasing; ``weights`` are positive row counts (float64, exact
    integers up to 2**53 rows); ``n_null`` counts NaN; ``rank_error`` is the certified bound
    ``e`` described in the module docstring; ``size`` the compression target.
    """

    values: np.ndarray
    weights: np.ndarray
    n_null: int
    rank_error: float
    size: int

    @property
    def total(self) -> float:
        """Number of non-missing values summarised (``N``)."""
        return float(self.weights.sum())

    def quantiles(self, qs: Any) -> np.ndarray:
        """Linear-interpolated quantiles at probabilities ``qs`` (in [0, 1]) as float64.

        NaN for every ``q`` when the column had no non-missing value. Rank error at most
        ``rank_error + 1`` positions (see the module docstring); exact when ``rank_error == 0``.
        """
        qs = np.asarray(qs, dtype=np.float64)
        if np.any((qs < 0) | (qs > 1)) or np.any(np.isnan(qs)):
            raise ValueError(f"quantile probabilities must be in [0, 1], got {qs.tolist()!r}")
        if self.values.size == 0:
            return np.full(qs.shape, np.nan)
        cum = np.cumsum(self.weights)
        n = cum[-1]
        # numpy's "linear" virtual index and _lerp, as numpy writes them: bit-identical results.
        h = (n - 1.0) * qs
        lo = np.floor(h)
        frac = h - lo
        top = h >= n - 1.0  # numpy takes the maximum for both neighbours there
        # The j-th order statistic (0-based) of the summary: first point whose cumulative
        # weight exceeds j.
        last = self.values.size - 1
        i_lo = np.where(top, last, np.minimum(np.searchsorted(cum, lo, side="right"), last))
        i_hi = np.where(top, last, np.minimum(np.searchsorted(cum, lo + 1.0, side="right"), last))
        below, above = self.values[i_lo], self.values[i_hi]
        # numpy's _lerp: exact at both ends, and monotone in frac.
        diff = above - below
        out = np.where(frac >= 0.5, above - diff * (1.0 - frac), below + diff * frac)
        return out


def _empty(size: int, n_null: int = 0) -> QuantileSketch:
    return QuantileSketch(np.empty(0), np.empty(0), n_null, 0.0, size)


def compress(sketch: QuantileSketch) -> QuantileSketch:
    """``sketch`` with at most ``size + 1`` points; ``rank_error`` grows by the weight moved
    (less than ``N / size``). Points are kept as they are when there are few enough."""
    values, weights, size = sketch.values, sketch.weights, sketch.size
    if values.size <= size + 1:
        return sketch
    cum = np.cumsum(weights)
    n = cum[-1]
    before = cum - weights
    # The smallest value stays a point of its own, so the minimum is always exact.
    slice_ = np.floor(before[1:] * (size / n)).astype(np.int64)
    starts = np.flatnonzero(np.diff(slice_, prepend=-1)) + 1
    ends = np.append(starts[1:], values.size)  # exclusive
    new_values = np.concatenate([values[:1], values[ends - 1]])
    new_weights = np.concatenate([weights[:1], np.add.reduceat(weights, starts)])
    # A run [a, b) placed at v_{b-1} moves the weight of its points before the last one.
    moved = cum[ends - 2] - before[starts]
    moved = np.where(ends - starts > 1, moved, 0.0)
    return QuantileSketch(
        new_values, new_weights, sketch.n_null, sketch.rank_error + float(moved.max()), size
    )


def sketch_values(x: Any, size: int = DEFAULT_SKETCH_SIZE) -> QuantileSketch:
    """The sketch of a 1-D host array (NaN = missing), compressed to ``size``.

    Exact (``rank_error == 0``) when ``x`` has at most ``size + 1`` distinct non-missing values.
    """
    if size < 2:
        raise ValueError(f"sketch size must be >= 2, got {size}")
    x = np.asarray(x, dtype=np.float64).ravel()
    missing = np.isnan(x)
    n_null = int(missing.sum())
    values, counts = np.unique(x[~missing], return_counts=True)
    if values.size == 0:
        return _empty(size, n_null)
    return compress(QuantileSketch(values, counts.astype(np.float64), n_null, 0.0, size))


def merge_sketches(sketches: Sequence[QuantileSketch]) -> QuantileSketch:
    """One sketch of the union of the data behind ``sketches`` (the same ``size``), compressed.

    The result does not depend on the order of ``sketches`` (points are sorted and equal values
    pooled before compressing), only on which sketches are merged together.
    """
    sketches = list(sketches)
    size = sketches[0].size
    if any(s.size != size for s in sketches):
        raise ValueError(f"cannot merge sketches of sizes {sorted({s.size for s in sketches})}")
    n_null = sum(s.n_null for s in sketches)
    error = sum(s.rank_error for s in sketches)
    parts = [s for s in sketches if s.values.size]
    if not parts:
        return QuantileSketch(np.empty(0), np.empty(0), n_null, error, size)
    values, inverse = np.unique(np.concatenate([s.values for s in parts]), return_inverse=True)
    # Integer-valued float64 weights: the sums are exact whatever the order.
    weights = np.bincount(inverse, weights=np.concatenate([s.weights for s in parts]))
    return compress(QuantileSketch(values, weights, n_null, error, size))


def rank_error_bound(n: float, size: int, n_partitions: int, split_every: int) -> float:
    """The a-priori bound ``(D + 1) N / size`` on :attr:`QuantileSketch.rank_error` after
    :func:`pipeline.reduce.tree_reduce` over ``n_partitions`` leaves (``D`` its depth)."""
    from .reduce import tree_levels

    depth = len(tree_levels(n_partitions, split_every))
    return (depth + 1) * n / size
