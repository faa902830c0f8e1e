"""The partials of :func:`analytics.profile.profile`: what one partition (pandas or cuDF)
contributes (:func:`partition_profile`) and how two contributions merge
(:func:`combine_profiles`, position order): counts, nulls, Chan moments, co-moments, sketches
and value counts per column.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pandas.api import types as pdt

from pipeline.backend import frame_to_array, is_cudf, namespace, to_host

from .profile_sketches import HyperLogLog, QuantileSketch, _misra_gries

__all__ = ["ColumnPartial", "FramePartial", "Moments", "Plan", "column_kind", "combine_profiles",
           "partition_profile", "to_scalar"]


@dataclass(frozen=True)
class Plan:
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


def partition_profile(frame, plan: Plan) -> FramePartial:
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
                minimum=to_scalar(series.min()) if count else None,
                maximum=to_scalar(series.max()) if count else None,
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
            minimum=to_scalar(series.min()) if ordered else None,
            maximum=to_scalar(series.max()) if ordered else None,
        )
    return FramePartial(n_rows=n_rows, columns=columns, comoments=comoments)


def combine_profiles(parts: Sequence[FramePartial], plan: Plan) -> FramePartial:
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


def column_kind(dtype) -> str:
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


def to_scalar(value):
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
