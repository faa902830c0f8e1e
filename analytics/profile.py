"""One-pass profile of a Dask DataFrame: per-column statistics, sketches and correlations.

:func:`profile` maps ``partition_profile`` over the partitions (pandas or cuDF), merges the
partials with :func:`pipeline.reduce.tree_reduce` (``combine_profiles``) and calls
``dask.compute`` once. Every statistic is mergeable, so nothing needs a second pass:

=====================  ===================================================================
statistic              how it merges (and what it guarantees)
=====================  ===================================================================
count, nulls, min/max  sums and min/max: exact
mean, std              (count, mean, M2) with Chan et al.'s pairwise formulas: exact up to
                       rounding; ``std`` uses ddof=1 like pandas
quantiles              :class:`QuantileSketch`, a deterministic weighted-sample sketch with a
                       tracked rank-error bound (see there)
histogram              ``bins`` equal bins over the exact [min, max], counted from the
                       quantile sketch at the end (a fixed histogram would need min/max
                       before the pass); each count within ``2 * rank error`` of
                       ``numpy.histogram``
distinct               exact value counts while a column has at most ``max_exact_distinct``
                       distinct values, then :class:`HyperLogLog` (~0.81% standard error)
top values             the same exact value counts; past the limit a Misra-Gries summary of
                       ``max_exact_distinct`` counters (counts are lower bounds, at most
                       ``top_count_error`` below the truth)
correlation            co-moment matrices merged with Chan's formulas: Pearson like
                       ``DataFrame.corr()`` on NaN-free data
=====================  ===================================================================

Correlations use complete-case rows (rows where every numeric column is present); pandas uses
pairwise-complete rows, so with missing values the two differ.

Example
-------
>>> import dask.dataframe as dd, pandas as pd
>>> df = dd.from_pandas(pd.DataFrame({"x": [1.0, 2.0, 3.0, None], "c": list("abba")}),
...                     npartitions=2)
>>> p = profile(df)
>>> p.columns["x"]["mean"], p.columns["c"]["distinct"]
(2.0, 2)
"""

from __future__ import annotations

import functools
import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
from pandas.api import types as pdt

from pipeline.backend import device, frame_to_array, is_cudf, namespace, to_host
from pipeline.reduce import tree_levels, tree_reduce

__all__ = ["HyperLogLog", "Profile", "QuantileSketch", "profile"]


def profile(
    df,
    *,
    bins: int = 20,
    top_k: int = 10,
    max_exact_distinct: int = 10_000,
    quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
    split_every: int = 8,
    sketch_size: int = 2048,
) -> Profile:
    """Profile every column of ``df`` (a Dask DataFrame; pandas is accepted as one partition).

    Parameters
    ----------
    bins
        Number of equal-width histogram bins over each numeric column's [min, max].
    top_k
        Number of most frequent values reported per column.
    max_exact_distinct
        Columns with at most this many distinct values get exact distinct counts and top
        values; above it, HyperLogLog and Misra-Gries sketches of about this size.
    quantiles
        Probabilities in [0, 1] of the reported quantiles.
    split_every
        Fan-in of the reduction tree.
    sketch_size
        Points kept by each quantile sketch (``m``). The rank error of every quantile is at
        most ``(D + 1) / m`` of the column's non-null count, ``D`` the depth of the reduction
        tree (``ceil(log_split_every(npartitions))``, at least 1): 0.2% for ``m=2048``,
        ``D=3`` (up to 512 partitions with ``split_every=8``). The bound actually reached is
        tracked and reported as ``quantile_rank_error``.

    Returns
    -------
    Profile
    """
    if isinstance(df, pd.DataFrame):
        df = dd.from_pandas(df, npartitions=1)
    if bins < 1 or top_k < 0 or max_exact_distinct < 1 or sketch_size < 2:
        raise ValueError("bins, max_exact_distinct >= 1, top_k >= 0, sketch_size >= 2 expected")
    quantiles = tuple(float(q) for q in quantiles)
    if any(not 0.0 <= q <= 1.0 for q in quantiles):
        raise ValueError(f"quantiles must lie in [0, 1], got {quantiles}")

    kinds = {name: _kind(dtype) for name, dtype in df.dtypes.items()}
    plan = _Plan(
        numeric=tuple(n for n, k in kinds.items() if k == "numeric"),
        other=tuple(n for n, k in kinds.items() if k != "numeric"),
        ordered=tuple(n for n, k in kinds.items() if k == "datetime"),
        sketch_size=int(sketch_size),
        max_exact_distinct=int(max_exact_distinct),
    )
    leaves = [dask.delayed(partition_profile, pure=True)(part, plan) for part in df.to_delayed()]
    root = tree_reduce(
        leaves,
        functools.partial(combine_profiles, plan=plan),
        split_every=split_every,
        name="combine_profiles",
    )
    (merged,) = dask.compute(root)

    settings = {
        "bins": bins,
        "top_k": top_k,
        "max_exact_distinct": max_exact_distinct,
        "quantiles": list(quantiles),
        "split_every": split_every,
        "sketch_size": sketch_size,
        "rank_error_bound": (len(tree_levels(len(leaves), split_every)) + 1) / sketch_size,
    }
    columns = {
        name: _summarize_column(
            merged.columns[name], str(df.dtypes[name]), kinds[name], merged.n_rows, settings
        )
        for name in kinds
    }
    return Profile(
        n_rows=merged.n_rows,
        n_partitions=len(leaves),
        columns=columns,
        correlation=_correlation(merged.comoments, plan.numeric),
        settings=settings,
    )


# --------------------------------------------------------------------------------------------
# Sketches
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Partials
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    numeric: tuple
    other: tuple
    ordered: tuple  # non-numeric columns that still get min/max (datetimes)
    sketch_size: int
    max_exact_distinct: int


class Moments(NamedTuple):
    n: int
    mean: Any  # float, or (k,) array for co-moments
    m2: Any  # float, or (k, k) co-moment matrix

    @staticmethod
    def merge(a: Moments, b: Moments) -> Moments:
        """Chan et al.: exact pairwise merge of count, mean and (co-)moment sums."""
        n = a.n + b.n
        if a.n == 0 or b.n == 0:
            return b if a.n == 0 else a
        delta = np.asarray(b.mean) - np.asarray(a.mean)
        mean = a.mean + delta * (b.n / n)
        m2 = a.m2 + b.m2 + np.multiply.outer(delta, delta) * (a.n * b.n / n)
        return Moments(n, mean, m2)


@dataclass
class Distinct:
    """Exact value counts, or (past the limit) a HyperLogLog and Misra-Gries counters."""

    n: int  # values summarized
    capacity: int  # exact up to this many distinct values; Misra-Gries counters past it
    counts: pd.Series | None = None  # exact: value -> count
    hll: HyperLogLog | None = None
    heavy: pd.Series | None = None  # Misra-Gries counters (lower bounds)

    @classmethod
    def of_counts(cls, counts: pd.Series, limit: int) -> Distinct:
        d = cls(n=int(counts.sum()), capacity=limit, counts=counts)
        return d if len(counts) <= limit else d._to_sketch()

    @classmethod
    def merge(cls, parts: Sequence[Distinct], limit: int) -> Distinct:
        n = sum(p.n for p in parts)
        if all(p.counts is not None for p in parts):
            return cls.of_counts(_add_counts([p.counts for p in parts]), limit)
        sketches = [p if p.counts is None else p._to_sketch() for p in parts]
        heavy = _misra_gries(_add_counts([s.heavy for s in sketches]), limit)
        hll = HyperLogLog.merge([s.hll for s in sketches])
        return cls(n=n, capacity=limit, hll=hll, heavy=heavy)

    def _to_sketch(self) -> Distinct:
        return Distinct(
            n=self.n,
            capacity=self.capacity,
            hll=HyperLogLog.of(self.counts.index),
            heavy=_misra_gries(self.counts, self.capacity),
        )

    @property
    def top_count_error(self) -> int:
        """Misra-Gries bound: a counter is at most (n - sum of counters) / (capacity + 1)
        below the true count (exact counts: 0)."""
        if self.counts is not None:
            return 0
        return int((self.n - int(self.heavy.sum())) // (self.capacity + 1))


def _add_counts(series: Sequence[pd.Series]) -> pd.Series:
    nonempty = [s for s in series if len(s)] or list(series[:1])
    if len(nonempty) == 1:
        return nonempty[0]
    return pd.concat(nonempty).groupby(level=0, sort=False).sum()


@dataclass
class ColumnPartial:
    count: int
    nulls: int
    distinct: Distinct
    minimum: Any = None
    maximum: Any = None
    moments: Moments | None = None
    sketch: QuantileSketch | None = None


@dataclass
class FramePartial:
    n_rows: int
    columns: dict
    comoments: Moments | None = field(default=None)


def partition_profile(frame, plan: _Plan) -> FramePartial:
    """Partial profile of one pandas/cuDF partition (numeric work on its own device)."""
    n_rows = len(frame)
    columns = {}
    comoments = None
    if plan.numeric:
        matrix = _float_matrix(frame[list(plan.numeric)])
        xp = namespace(matrix)
        for j, name in enumerate(plan.numeric):
            column = matrix[:, j]
            values = xp.sort(column[~xp.isnan(column)])
            count = int(values.shape[0])
            mean = float(xp.mean(values)) if count else 0.0
            m2 = float(xp.sum((values - mean) ** 2)) if count else 0.0
            series = frame[name]
            columns[name] = ColumnPartial(
                count=count,
                nulls=n_rows - count,
                distinct=_distinct_of(series, plan.max_exact_distinct),
                minimum=_scalar(series.min()) if count else None,
                maximum=_scalar(series.max()) if count else None,
                moments=Moments(count, mean, m2),
                sketch=QuantileSketch.of_sorted(values, plan.sketch_size),
            )
        complete = matrix[~xp.any(xp.isnan(matrix), axis=1)]
        n = int(complete.shape[0])
        if n:
            mean = xp.mean(complete, axis=0)
            centered = complete - mean
            scatter = xp.matmul(xp.permute_dims(centered, (1, 0)), centered)
            comoments = Moments(n, to_host(mean), to_host(scatter))
        else:
            k = len(plan.numeric)
            comoments = Moments(0, np.zeros(k), np.zeros((k, k)))
    for name in plan.other:
        series = frame[name]
        count = int(series.count())
        ordered = name in plan.ordered and count
        columns[name] = ColumnPartial(
            count=count,
            nulls=n_rows - count,
            distinct=_distinct_of(series, plan.max_exact_distinct),
            minimum=_scalar(series.min()) if ordered else None,
            maximum=_scalar(series.max()) if ordered else None,
        )
    return FramePartial(n_rows=n_rows, columns=columns, comoments=comoments)


def combine_profiles(parts: Sequence[FramePartial], plan: _Plan) -> FramePartial:
    """Merge partial profiles (in position order)."""
    columns = {}
    for name, first in parts[0].columns.items():
        cols = [p.columns[name] for p in parts]
        merged = ColumnPartial(
            count=sum(c.count for c in cols),
            nulls=sum(c.nulls for c in cols),
            distinct=Distinct.merge([c.distinct for c in cols], plan.max_exact_distinct),
            minimum=_extreme(min, [c.minimum for c in cols]),
            maximum=_extreme(max, [c.maximum for c in cols]),
        )
        if first.moments is not None:
            merged.moments = functools.reduce(Moments.merge, [c.moments for c in cols])
            merged.sketch = QuantileSketch.merge([c.sketch for c in cols], plan.sketch_size)
        columns[name] = merged
    comoments = None
    if parts[0].comoments is not None:
        comoments = functools.reduce(Moments.merge, [p.comoments for p in parts])
    return FramePartial(sum(p.n_rows for p in parts), columns, comoments)


def _kind(dtype) -> str:
    if pdt.is_bool_dtype(dtype):
        return "boolean"
    if pdt.is_numeric_dtype(dtype) and not pdt.is_complex_dtype(dtype):
        return "numeric"
    if pdt.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "categorical"


def _float_matrix(frame):
    """Numeric columns as one float64 (n, k) array on the frame's device, NaN where missing."""
    return frame_to_array(frame, np.float64, na_value=np.nan)


def _distinct_of(series, limit: int) -> Distinct:
    counts = series.value_counts(dropna=True, sort=False)
    if is_cudf(counts):
        counts = counts.to_pandas()
    counts = counts[counts > 0]  # categoricals list unobserved categories
    counts = pd.Series(counts.to_numpy(dtype=np.int64), index=np.asarray(counts.index))
    return Distinct.of_counts(counts, limit)


def _scalar(value):
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _extreme(pick, values):
    present = [v for v in values if v is not None]
    return pick(present) if present else None


# --------------------------------------------------------------------------------------------
# Final summaries
# --------------------------------------------------------------------------------------------


def _summarize_column(part: ColumnPartial, dtype: str, kind: str, n_rows: int, settings) -> dict:
    d = part.distinct
    exact = d.counts is not None
    top = _top(d.counts if exact else d.heavy, settings["top_k"])
    out = {
        "dtype": dtype,
        "kind": kind,
        "count": part.count,
        "nulls": part.nulls,
        "null_fraction": part.nulls / n_rows if n_rows else 0.0,
        # an estimate never exceeds the values present
        "distinct": len(d.counts) if exact else min(round(d.hll.estimate()), part.count),
        "distinct_exact": exact,
        "distinct_relative_error": 0.0 if exact else HyperLogLog.relative_error,
        "top": top,
        "top_exact": exact,
        "top_count_error": d.top_count_error,
    }
    if kind in ("numeric", "datetime"):
        out["min"], out["max"] = part.minimum, part.maximum
    if kind != "numeric":
        return out
    n, mean, m2 = part.moments
    sketch = part.sketch
    out["mean"] = float(mean) if n else math.nan
    out["std"] = math.sqrt(m2 / (n - 1)) if n > 1 else math.nan
    out["quantiles"] = {
        q: (float(part.maximum) if q == 1.0 and n else sketch.quantile(q))
        for q in settings["quantiles"]
    }
    out["quantile_rank_error"] = sketch.error / n if n else 0.0
    if n:
        lo, hi = float(part.minimum), float(part.maximum)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5  # as numpy.histogram
        edges = np.linspace(lo, hi, settings["bins"] + 1)
        counts = sketch.histogram(edges)
    else:
        edges, counts = np.array([]), np.array([], dtype=np.int64)
    out["histogram"] = {
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "count_error": math.floor(2 * sketch.error),
    }
    return out


def _top(counts: pd.Series, k: int) -> list:
    if counts is None or not len(counts) or k == 0:
        return []
    try:
        counts = counts.sort_index()  # ties in a stable, value-ordered way when comparable
    except TypeError:
        pass
    top = counts.sort_values(ascending=False, kind="stable").head(k)
    return [[_scalar(v), int(c)] for v, c in top.items()]


def _correlation(comoments: Moments | None, names: tuple) -> pd.DataFrame:
    if comoments is None:
        return pd.DataFrame(index=list(names), columns=list(names), dtype=np.float64)
    scatter = np.asarray(comoments.m2, dtype=np.float64)
    if comoments.n < 2:
        scatter = np.full_like(scatter, np.nan)
    scale = np.sqrt(np.outer(np.diag(scatter), np.diag(scatter)))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = scatter / scale
    r[scale == 0] = np.nan
    return pd.DataFrame(r, index=list(names), columns=list(names))


# --------------------------------------------------------------------------------------------
# The Profile
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Profile:
    """Result of :func:`profile`.

    Attributes
    ----------
    n_rows, n_partitions
        Size of the profiled frame.
    columns
        ``{name: {...}}`` per column: ``dtype``, ``kind`` (numeric, categorical, boolean,
        datetime), ``count``, ``nulls``, ``null_fraction``, ``distinct`` (+ ``distinct_exact``,
        ``distinct_relative_error``), ``top`` (``[[value, count], ...]``, + ``top_exact``,
        ``top_count_error``); numeric columns add ``mean``, ``std`` (ddof=1), ``min``, ``max``,
        ``quantiles`` (``{q: value}``), ``quantile_rank_error`` (fraction of ``count``) and
        ``histogram`` (``edges``, ``counts``, ``count_error``); datetimes add ``min``/``max``.
    correlation
        Pearson correlation of the numeric columns (complete-case rows), a pandas DataFrame.
    settings
        The options used, with ``rank_error_bound``, the a-priori quantile rank error bound.
    """

    n_rows: int
    n_partitions: int
    columns: dict
    correlation: pd.DataFrame
    settings: dict

    def to_dict(self) -> dict:
        """The profile as JSON-able Python data (NaN becomes ``None``)."""
        return _jsonable(
            {
                "n_rows": self.n_rows,
                "n_partitions": self.n_partitions,
                "settings": self.settings,
                "columns": self.columns,
                "correlation": {
                    str(c): {str(r): v for r, v in self.correlation[c].items()}
                    for c in self.correlation.columns
                },
            }
        )

    def to_html(self, path: str | os.PathLike) -> Path:
        """Write a self-contained HTML report (inline SVG and CSS, no scripts, nothing fetched)
        and return its path."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(_render_html(self), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def __repr__(self) -> str:
        header = ["column", "dtype", "count", "nulls", "distinct", "mean", "std", "min", "p50",
                  "max", "top"]  # fmt: skip
        rows = []
        for name, c in self.columns.items():
            top = f"{_fmt(c['top'][0][0])} ({c['top'][0][1]:,})" if c["top"] else ""
            rows.append(
                [
                    str(name),
                    c["dtype"],
                    _fmt(c["count"]),
                    _fmt(c["nulls"]),
                    ("" if c["distinct_exact"] else "≈") + _fmt(c["distinct"]),
                    _fmt(c.get("mean")),
                    _fmt(c.get("std")),
                    _fmt(c.get("min")),
                    _fmt(c.get("quantiles", {}).get(0.5)),
                    _fmt(c.get("max")),
                    top if c["kind"] in ("categorical", "boolean") else "",
                ]
            )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            (
                f"Profile: {self.n_rows:,} rows x {len(self.columns)} columns "
                f"({self.n_partitions} partitions)"
            ),
            "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
        ]
        lines += [
            "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:,.0f}" if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    text = str(v)
    return text if len(text) <= 24 else text[:23] + "…"


def _jsonable(v):
    if isinstance(v, dict):
        return {(k if isinstance(k, str) else str(k)): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if v is None or isinstance(v, str | int | bool):
        return v
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return str(v)


# --------------------------------------------------------------------------------------------
# HTML report: inline SVG charts
# --------------------------------------------------------------------------------------------

_ACCENT = "#3b6fb6"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f4f6f9;color:#1d2430}
header{background:#1d2a3a;color:#fff;padding:22px 32px}
header h1{margin:0;font-size:22px;font-weight:600}
header p{margin:4px 0 0;color:#b9c6d8}
main{padding:24px 32px;max-width:1400px}
h2{font-size:17px;margin:28px 0 12px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:16px 18px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:16px}
.card h3{margin:0 0 2px;font-size:15px;word-break:break-all}
.badge{display:inline-block;font-size:11px;padding:1px 7px;border-radius:9px;background:#e6edf7;
color:#2c4f80;margin-left:6px;vertical-align:middle}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #edf0f4;font-variant-numeric:
tabular-nums;white-space:nowrap}
th{font-weight:600;color:#58657a;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.num{text-align:right}
.stats td{padding:2px 6px;border:0}.stats td:first-child{color:#6b778a}
.cols{display:flex;gap:14px;align-items:flex-start;flex-wrap:wrap}
.note{color:#6b778a;font-size:12px;margin-top:8px}
.overview{overflow-x:auto}
svg text{font:11px system-ui,sans-serif;fill:#445066}
"""


def _render_html(p: Profile) -> str:
    e = html.escape
    kinds = {}
    for c in p.columns.values():
        kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>Data profile</title><style>{_CSS}</style></head><body>",
        "<header><h1>Data profile</h1>",
        (
            f"<p>{p.n_rows:,} rows &middot; {len(p.columns)} columns ({e(summary)}) &middot; "
            f"{p.n_partitions} partitions</p></header><main>"
        ),
        "<h2>Overview</h2><div class='card overview'>",
        _overview_table(p),
        "</div>",
    ]
    if p.correlation.shape[0] >= 2:
        parts += [
            "<h2>Correlation (Pearson)</h2><div class='card'>",
            _svg_heatmap(p.correlation),
            "<div class='note'>Computed on rows where every numeric column is present.</div>",
            "</div>",
        ]
    parts.append("<h2>Columns</h2><div class='grid'>")
    for name, c in p.columns.items():
        parts.append(_column_card(name, c))
    parts.append("</div>")
    s = p.settings
    parts.append(
        "<p class='note'>Quantiles and histograms come from mergeable sketches: quantile rank "
        f"error at most {100 * s['rank_error_bound']:.2g}% of the rows (actual bound per column "
        "in each card, with the bound on histogram bin counts); distinct counts above "
        f"{s['max_exact_distinct']:,} are HyperLogLog estimates "
        f"(&plusmn;{100 * HyperLogLog.relative_error:.2g}% standard error). "
        "Standard deviations use ddof=1.</p></main></body></html>"
    )
    return "".join(parts)


def _overview_table(p: Profile) -> str:
    e = html.escape
    head = ["column", "type", "present", "nulls", "distinct", "mean", "std", "min", "median",
            "max"]  # fmt: skip
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for name, c in p.columns.items():
        present = 1 - c["null_fraction"]
        cells = [
            f"<td><b>{e(str(name))}</b></td>",
            f"<td>{e(c['dtype'])}</td>",
            f"<td>{_svg_fill_bar(present)} {100 * present:.1f}%</td>",
            f"<td class='num'>{_fmt(c['nulls'])}</td>",
            f"<td class='num'>{'' if c['distinct_exact'] else '≈'}{_fmt(c['distinct'])}</td>",
        ]
        for key in ("mean", "std", "min"):
            cells.append(f"<td class='num'>{e(_fmt(c.get(key)))}</td>")
        cells.append(f"<td class='num'>{e(_fmt(c.get('quantiles', {}).get(0.5)))}</td>")
        cells.append(f"<td class='num'>{e(_fmt(c.get('max')))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "".join(rows)


def _column_card(name, c: dict) -> str:
    e = html.escape
    stats = [
        ("count", _fmt(c["count"])),
        ("nulls", f"{_fmt(c['nulls'])} ({100 * c['null_fraction']:.1f}%)"),
        ("distinct", ("" if c["distinct_exact"] else "≈") + _fmt(c["distinct"])),
    ]
    if c["kind"] == "numeric":
        stats += [("mean", _fmt(c["mean"])), ("std", _fmt(c["std"]))]
        stats += [(f"q{100 * q:g}", _fmt(v)) for q, v in c["quantiles"].items()]
    if c["kind"] in ("numeric", "datetime"):
        stats += [("min", _fmt(c["min"])), ("max", _fmt(c["max"]))]
    table = "<table class='stats'>" + "".join(
        f"<tr><td>{e(k)}</td><td class='num'>{e(v)}</td></tr>" for k, v in stats
    ) + "</table>"  # fmt: skip
    if c["kind"] == "numeric" and c["count"]:
        chart = _svg_histogram(c["histogram"]["edges"], c["histogram"]["counts"], c["quantiles"])
        note = (
            f"rank error &le; {100 * c['quantile_rank_error']:.2g}%, "
            f"bin counts &plusmn;{c['histogram']['count_error']:,}"
        )
    elif c["top"] and c["top"][0][1] > 1:
        chart = _svg_top_values(c["top"], c["count"])
        note = "most frequent values" + ("" if c["top_exact"] else f" (counts &ge; true &minus; "
                                         f"{c['top_count_error']:,})")  # fmt: skip
    elif c["count"]:
        chart, note = "<p class='note'>no value repeats often enough to chart</p>", ""
    else:
        chart, note = "<p class='note'>no values</p>", ""
    return (
        f"<div class='card'><h3>{e(str(name))}<span class='badge'>{e(c['dtype'])}</span></h3>"
        f"<div class='cols'>{table}<div>{chart}<div class='note'>{note}</div></div></div></div>"
    )


def _svg_fill_bar(fraction: float, width: int = 70, height: int = 9) -> str:
    w = max(0.0, min(1.0, fraction)) * width
    return (
        f"<svg width='{width}' height='{height}' style='vertical-align:middle'>"
        f"<rect width='{width}' height='{height}' rx='2' fill='#f2c4c4'/>"
        f"<rect width='{w:.1f}' height='{height}' rx='2' fill='#5fa67a'/></svg>"
    )


_LABEL_PX = 7  # width of one character of the 11 px chart font, rounded up


def _svg_histogram(edges, counts, quantiles, width: int = 360, height: int = 170) -> str:
    peak = max(counts) or 1
    # the y labels end 4 px left of the axis; 7 px per character of 11 px text leaves room
    left = max(44, 4 + _LABEL_PX * len(_fmt(peak)) + 4)
    right, top, bottom = 10, 12, 36
    pw, ph = width - left - right, height - top - bottom
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0

    def x(v):
        return left + (v - lo) / span * pw

    out = [f"<svg width='{width}' height='{height}' role='img' aria-label='histogram'>"]
    q25, q50, q75 = quantiles.get(0.25), quantiles.get(0.5), quantiles.get(0.75)
    base = top + ph
    if q25 is not None and q75 is not None:
        # a strip under the axis, not a band behind the bars: for a 0/1 column the quartiles
        # span the whole range and a band would cover the chart
        out.append(
            f"<rect x='{x(q25):.1f}' y='{base + 3}' width='{max(x(q75) - x(q25), 1):.1f}' "
            f"height='5' fill='#f0b45e'><title>interquartile range {_fmt(q25)} to "
            f"{_fmt(q75)}</title></rect>"
        )
    for a, b, n in zip(edges[:-1], edges[1:], counts, strict=True):
        h = n / peak * ph
        out.append(
            f"<rect x='{x(a) + 0.5:.1f}' y='{top + ph - h:.1f}' "
            f"width='{max(x(b) - x(a) - 1, 0.5):.1f}' height='{h:.1f}' fill='{_ACCENT}'>"
            f"<title>[{_fmt(a)}, {_fmt(b)}): {n:,}</title></rect>"
        )
    if q50 is not None:
        out.append(
            f"<line x1='{x(q50):.1f}' x2='{x(q50):.1f}' y1='{top}' y2='{top + ph}' "
            f"stroke='#d0452f' stroke-width='1.5' stroke-dasharray='4 3'>"
            f"<title>median {_fmt(q50)}</title></line>"
        )
    out += [
        f"<line x1='{left}' x2='{left + pw}' y1='{base}' y2='{base}' stroke='#8a94a6'/>",
        f"<line x1='{left}' x2='{left}' y1='{top}' y2='{base}' stroke='#8a94a6'/>",
        f"<text x='{left - 4}' y='{top + 9}' text-anchor='end'>{_fmt(peak)}</text>",
        f"<text x='{left - 4}' y='{base}' text-anchor='end'>0</text>",
        f"<text x='{left}' y='{base + 22}'>{html.escape(_fmt(lo))}</text>",
        (
            f"<text x='{left + pw / 2:.1f}' y='{base + 22}' text-anchor='middle'>"
            f"{html.escape(_fmt((lo + hi) / 2))}</text>"
        ),
        f"<text x='{left + pw}' y='{base + 22}' text-anchor='end'>{html.escape(_fmt(hi))}</text>",
        "</svg>",
    ]
    return "".join(out)


def _svg_top_values(top, total: int, width: int = 360) -> str:
    row, label_w, count_w = 20, 120, 90
    height = row * len(top) + 4
    peak = max(c for _, c in top) or 1
    bar_w = width - label_w - count_w
    out = [f"<svg width='{width}' height='{height}' role='img' aria-label='top values'>"]
    for i, (value, count) in enumerate(top):
        y = i * row + 2
        label = html.escape(_fmt(value)[:18])
        share = 100 * count / total if total else 0.0
        out.append(
            f"<g><title>{html.escape(str(value))}: {count:,} ({share:.1f}%)</title>"
            f"<text x='{label_w - 6}' y='{y + 13}' text-anchor='end'>{label}</text>"
            f"<rect x='{label_w}' y='{y + 3}' width='{max(count / peak * bar_w, 1):.1f}' "
            f"height='{row - 6}' rx='2' fill='{_ACCENT}'/>"
            f"<text x='{width - 4}' y='{y + 13}' text-anchor='end'>{count:,} "
            f"({share:.1f}%)</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def _svg_heatmap(corr: pd.DataFrame) -> str:
    names = [str(c) for c in corr.columns]
    k = len(names)
    cell = max(14, min(44, 560 // k))
    label_w = max(30, min(160, 12 + 7 * max(len(n) for n in names)))
    size = label_w + cell * k
    legend_h = 40
    width = max(size + label_w // 2, label_w + 210) + 10  # room for slanted labels, legend
    aria = "aria-label='correlation heatmap'"
    out = [f"<svg width='{width}' height='{size + legend_h}' role='img' {aria}>"]
    values = corr.to_numpy(dtype=np.float64)
    for i, row_name in enumerate(names):
        y = label_w + i * cell
        out.append(
            f"<text x='{label_w - 6}' y='{y + cell / 2 + 4:.1f}' text-anchor='end'>"
            f"{html.escape(row_name[:22])}</text>"
        )
        for j, col_name in enumerate(names):
            r = values[i, j]
            x = label_w + j * cell
            out.append(
                f"<rect x='{x}' y='{y}' width='{cell - 1}' height='{cell - 1}' "
                f"fill='{_diverging(r)}'><title>{html.escape(row_name)} / "
                f"{html.escape(col_name)}: {_fmt(float(r))}</title></rect>"
            )
            if cell >= 30 and not math.isnan(r):
                ink = "#fff" if abs(r) > 0.6 else "#1d2430"
                out.append(
                    f"<text x='{x + cell / 2:.1f}' y='{y + cell / 2 + 4:.1f}' "
                    f"text-anchor='middle' style='fill:{ink}'>{r:.2f}</text>"
                )
    short = max(len(n) for n in names) <= 3  # short names fit upright
    for j, col_name in enumerate(names):
        x = label_w + j * cell + cell / 2 + (0 if short else 4)
        style = "text-anchor='middle'" if short else ""
        angle = 0 if short else -60
        out.append(
            f"<text x='0' y='0' {style} transform='translate({x:.1f},{label_w - 6}) "
            f"rotate({angle})'>{html.escape(col_name[:22])}</text>"
        )
    y = size + 14
    for t in range(101):
        r = -1 + t / 50
        out.append(
            f"<rect x='{label_w + t * 2}' y='{y}' width='2' height='10' fill='{_diverging(r)}'/>"
        )
    out += [
        f"<text x='{label_w}' y='{y + 23}'>-1</text>",
        f"<text x='{label_w + 101}' y='{y + 23}' text-anchor='middle'>0</text>",
        f"<text x='{label_w + 202}' y='{y + 23}' text-anchor='end'>+1</text>",
        "</svg>",
    ]
    return "".join(out)


def _diverging(r: float) -> str:
    """Blue (-1) through white (0) to red (+1); grey for undefined."""
    if r is None or math.isnan(r):
        return "#d5d9e0"
    r = max(-1.0, min(1.0, float(r)))
    end = (178, 24, 43) if r > 0 else (33, 102, 172)
    t = abs(r)
    rgb = [round(255 + (c - 255) * t) for c in end]
    return "#{:02x}{:02x}{:02x}".format(*rgb)
