"""The sketches behind :func:`analytics.profile.profile`: :class:`QuantileSketch` (quantiles
and histograms with a tracked rank-error bound), :class:`HyperLogLog` (distinct counts past the
exact limit) and the Misra-Gries summary of the most frequent values. All merge, so a profile
needs one pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.backend import device, namespace, to_host

__all__ = ["HyperLogLog", "QuantileSketch"]


@dataclass(frozen=True)
class QuantileSketch:
    """A mergeable, deterministic summary of a numeric multiset for ranks and quantiles.

    It is a sorted weighted sample: strictly increasing ``values`` with integer ``weights``
    summing to ``n``. Write ``R(x)`` for the number of data values ``<= x`` and ``R^(x)`` for the
    weight of sample values ``<= x``; the sketch guarantees ``|R^(x) - R(x)| <= error`` for
    every ``x`` (also just below ``x``).

    * A partition's sorted values are cut into ``m`` runs of about ``n/m`` values each, every
      run represented by its first value carrying the run's size: adds ``< n/m`` to the error.
    * Merging concatenates samples (errors add) and compacts the union the same way (weight
      runs of ``N/m``): adds ``< N/m``.

    Over a reduction tree of depth ``D`` the error is at most ``(D + 1) * n / m``. The
    ``q``-quantile returned is a data value ``v`` with ``#{x < v} < q n + error`` and
    ``#{x <= v} >= q n - error``.
    """

    values: np.ndarray
    weights: np.ndarray
    error: float = 0.0

    @property
    def n(self) -> int:
        return int(self.weights.sum())

    @classmethod
    def of_sorted(cls, sorted_values: Any, size: int) -> QuantileSketch:
        """Sketch of sorted values (NumPy or CuPy; only ``size`` of them reach the host)."""
        n = int(sorted_values.shape[0])
        if n <= size:
            return cls._collapse(to_host(sorted_values), np.ones(n, dtype=np.int64), 0.0)
        xp = namespace(sorted_values)
        starts = (np.arange(size, dtype=np.int64) * n) // size
        index = xp.asarray(starts, device=device(sorted_values))
        values = to_host(xp.take(sorted_values, index))
        weights = np.diff(np.append(starts, n))
        return cls._collapse(values, weights, n / size)

    @classmethod
    def merge(cls, sketches: Sequence[QuantileSketch], size: int) -> QuantileSketch:
        values = np.concatenate([s.values for s in sketches])
        weights = np.concatenate([s.weights for s in sketches])
        order = np.argsort(values, kind="stable")
        merged = cls._collapse(values[order], weights[order], sum(s.error for s in sketches))
        return merged._compact(size)

    def quantile(self, q: float) -> float:
        """A data value whose rank is within ``error`` of ``q * n`` (see the class doc)."""
        if self.values.size == 0:
            return math.nan
        cumulative = np.cumsum(self.weights)
        j = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
        return float(self.values[min(j, self.values.size - 1)])

    def rank_below(self, x: np.ndarray) -> np.ndarray:
        """Estimated number of values strictly below each ``x`` (within ``error``)."""
        cumulative = np.concatenate([[0], np.cumsum(self.weights)])
        return cumulative[np.searchsorted(self.values, x, side="left")]

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Counts per bin ``[e_i, e_i+1)`` (the last bin closed, like ``numpy.histogram``);
        each within ``2 * error`` of the exact count."""
        below = self.rank_below(edges[:-1])
        return np.diff(np.append(below, self.n))

    @staticmethod
    def _collapse(values, weights, error) -> QuantileSketch:
        """Merge equal sorted values (exact: the estimated ranks do not change)."""
        if values.size:
            keep = np.append(values[1:] != values[:-1], True)
            ends = np.flatnonzero(keep)
            sums = np.diff(np.append(0, np.cumsum(weights)[ends]))
            values, weights = values[ends], sums
        return QuantileSketch(values.astype(np.float64), weights.astype(np.int64), float(error))

    def _compact(self, size: int) -> QuantileSketch:
        if self.values.size <= size:
            return self
        cumulative = np.cumsum(self.weights)
        n = int(cumulative[-1])
        run = (cumulative * size - 1) // n  # run k holds cumulative weights in (k n/m, (k+1) n/m]
        first = np.flatnonzero(np.append(True, run[1:] != run[:-1]))
        last = np.append(first[1:] - 1, run.size - 1)
        weights = np.diff(np.append(0, cumulative[last]))
        return QuantileSketch(self.values[first], weights, self.error + n / size)


class HyperLogLog:
    """Distinct-count sketch: 2**14 registers of 64-bit hashes (``pandas.util.hash_array``,
    deterministic across processes), Ertl's improved estimator (no bias tables, accurate from
    0 to 2**50). Relative standard error ``1.04 / sqrt(2**14)`` = 0.81%."""

    precision = 14
    relative_error = 1.04 / math.sqrt(2**14)

    def __init__(self, registers: np.ndarray):
        self.registers = registers

    @classmethod
    def of(cls, values: Any) -> HyperLogLog:
        p = cls.precision
        q = 64 - p
        hashes = pd.util.hash_array(np.asarray(values))
        index = (hashes >> np.uint64(q)).astype(np.intp)
        remainder = hashes & np.uint64((1 << q) - 1)
        _, bit_length = np.frexp(remainder.astype(np.float64))  # exact: remainder < 2**53
        rank = (q + 1 - bit_length).astype(np.uint8)  # leading zeros in q bits, plus one
        registers = np.zeros(1 << p, dtype=np.uint8)
        np.maximum.at(registers, index, rank)
        return cls(registers)

    @classmethod
    def merge(cls, sketches: Sequence[HyperLogLog]) -> HyperLogLog:
        return cls(np.maximum.reduce([s.registers for s in sketches]))

    def estimate(self) -> float:
        m = self.registers.size
        q = 64 - self.precision
        counts = np.bincount(self.registers, minlength=q + 2)
        z = m * _tau(1 - counts[q + 1] / m)
        for k in range(q, 0, -1):
            z = 0.5 * (z + counts[k])
        z += m * _sigma(counts[0] / m)
        return m * m / (2 * math.log(2) * z)


def _sigma(x: float) -> float:
    if x == 1:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        z_old = z
        z += x * y
        y += y
        if z == z_old:
            return z


def _tau(x: float) -> float:
    if x in (0, 1):
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        z_old = z
        y *= 0.5
        z -= (1 - x) ** 2 * y
        if z == z_old:
            return z / 3


def _misra_gries(counts: pd.Series, capacity: int) -> pd.Series:
    """Keep at most ``capacity`` counters: subtract the (capacity+1)-th largest count from all
    and drop the non-positive ones (Agarwal et al.'s mergeable Misra-Gries reduction)."""
    if len(counts) <= capacity:
        return counts
    values = counts.to_numpy()
    kth = np.partition(values, values.size - capacity - 1)[values.size - capacity - 1]
    reduced = counts - kth
    return reduced[reduced > 0]
