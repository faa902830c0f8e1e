"""Column statistics that merge: what one partition of a frame contributes, and how two
contributions combine.

Every partition is summarised into a small host-side :class:`PartialStats` (row count, Chan
moments, min/max, value counts, quantile sketches), and :func:`compute_stats` merges them by
:func:`pipeline.reduce.tree_reduce` (fixed positions, so the result does not depend on worker
count or completion order) in one ``dask.compute``. :class:`pipeline.preprocessing.Preprocessor`
learns from the merged result; :mod:`pipeline.tabular_partition` and :mod:`pipeline.image_prep`
reuse :class:`Moments` and :func:`merge_moments`.

Partition functions are written against the API pandas and cuDF share (``isna``, ``dropna``,
``value_counts``, ``.values``); the host boundary is :func:`pipeline.backend.to_host`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import dask
import numpy as np
import pandas as pd
from dask.base import tokenize

from .backend import to_host
from .reduce import tree_reduce
from .sketch import QuantileSketch, merge_sketches, sketch_values

__all__ = [
    "Counts",
    "Moments",
    "PartialStats",
    "StatsSpec",
    "column_moments",
    "column_sketch",
    "compute_stats",
    "constant_moments",
    "merge_counts",
    "merge_moments",
    "merge_stats",
    "partial_stats",
]


class Moments(NamedTuple):
    """Non-null count, mean and centred second moment ``M2 = Σ (x - mean)²`` of one column,
    plus its null count and the min/max of its non-null values (``±inf`` when ``n == 0``).

    The mean is kept as ``shift + offset``, ``shift`` being one of the column's own values:
    at a large common offset (1e8 + noise) two partition means differ by less than they can be
    rounded to, and Chan's update multiplies that rounding by the gap between the means. Kept
    relative to a data value, the gap is exact to the noise's own precision.
    """

    n: int
    shift: float
    offset: float
    m2: float
    n_null: int
    min: float
    max: float

    @property
    def mean(self) -> float:
        return self.shift + self.offset


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan, Golub & LeVeque's pairwise update: exact in exact arithmetic, and stable because it
    only ever adds centred quantities (no ``Σx² - n·mean²`` cancellation at large offsets)."""
    n = a.n + b.n
    n_null = a.n_null + b.n_null
    lo, hi = min(a.min, b.min), max(a.max, b.max)
    if b.n == 0:
        return Moments(n, a.shift, a.offset, a.m2, n_null, lo, hi)
    if a.n == 0:
        return Moments(n, b.shift, b.offset, b.m2, n_null, lo, hi)
    # shift_b - shift_a is exact when the shifts are within a factor 2 (Sterbenz).
    delta = (b.shift - a.shift) + (b.offset - a.offset)
    offset = a.offset + delta * (b.n / n)
    m2 = a.m2 + b.m2 + delta * delta * (a.n * b.n / n)
    return Moments(n, a.shift, offset, m2, n_null, lo, hi)


def constant_moments(value: float, count: int) -> Moments:
    """The moments of ``count`` copies of ``value`` (how imputation enters the statistics)."""
    if count == 0:
        return Moments(0, 0.0, 0.0, 0.0, 0, math.inf, -math.inf)
    return Moments(count, value, 0.0, 0.0, 0, value, value)


@dataclass(frozen=True, eq=False)  # eq would compare Series elementwise
class Counts:
    """Value counts of one column on the host (value -> count, non-null values only).

    ``counts`` becomes ``None`` once more than ``cap`` distinct values have been seen (so a
    continuous or ID-like column cannot blow up the reduction); ``n_distinct_min`` is then a
    lower bound on the number of distinct values, and exact while ``counts`` is kept.
    """

    counts: pd.Series | None
    n_null: int
    n_distinct_min: int
    cap: int | None


def merge_counts(a: Counts, b: Counts) -> Counts:
    n_null = a.n_null + b.n_null
    if a.counts is None or b.counts is None:
        return Counts(None, n_null, max(a.n_distinct_min, b.n_distinct_min), a.cap)
    if len(b.counts) == 0:
        merged = a.counts
    elif len(a.counts) == 0:
        merged = b.counts
    else:
        # Counts are integers, so the sum is exact whatever the grouping order.
        merged = pd.concat([a.counts, b.counts]).groupby(level=0, sort=False).sum()
    if a.cap is not None and len(merged) > a.cap:
        return Counts(None, n_null, len(merged), a.cap)
    return Counts(merged, n_null, len(merged), a.cap)


@dataclass(frozen=True)
class StatsSpec:
    """Which statistics :func:`partial_stats` collects."""

    numeric: tuple[Hashable, ...]
    categorical: tuple[Hashable, ...]
    label: Hashable | None
    numeric_counts: bool  # value counts of numeric columns (most_frequent imputation)
    max_categories: int
    sketch_size: int = 0  # quantile sketches of numeric columns (median imputation); 0: none


@dataclass(frozen=True, eq=False)
class PartialStats:
    """Everything :class:`Preprocessor` learns, for a contiguous run of partitions."""

    n_rows: int
    numeric: dict[Hashable, Moments]
    numeric_counts: dict[Hashable, Counts]
    categorical: dict[Hashable, Counts]
    label: Counts | None
    numeric_sketches: dict[Hashable, QuantileSketch] = field(default_factory=dict)


def _value_counts(col: Any, cap: int | None) -> Counts:
    """Host value counts of a pandas/cuDF Series; unobserved categories are dropped."""
    vc = col.value_counts(dropna=True)
    counts = pd.Series(
        to_host(vc).astype(np.int64), index=pd.Index(to_host(vc.index), dtype=object)
    )
    counts = counts[counts > 0]
    n_null = int(col.isna().sum())
    if cap is not None and len(counts) > cap:
        return Counts(None, n_null, len(counts), cap)
    return Counts(counts, n_null, len(counts), cap)


def column_moments(col: Any) -> Moments:
    """Moments of the non-null values of a pandas/cuDF Series."""
    values = col.dropna().astype("float64")
    n = len(values)
    n_null = len(col) - n
    if n == 0:
        return Moments(0, 0.0, 0.0, 0.0, n_null, math.inf, -math.inf)
    shift = float(values.iloc[0])
    centred = values - shift
    offset = float(centred.mean())
    # Two-pass within the partition: centring first keeps M2 accurate at large offsets.
    m2 = float(((centred - offset) ** 2).sum())
    return Moments(n, shift, offset, m2, n_null, float(values.min()), float(values.max()))


def column_sketch(col: Any, size: int) -> QuantileSketch:
    """The quantile sketch of a pandas/cuDF Series (nullable dtypes and cuDF nulls count as
    missing, like NaN)."""
    values = to_host(col.dropna().astype("float64").values)
    sketch = sketch_values(values, size)
    return sketch._replace(n_null=int(col.isna().sum()) + sketch.n_null)


def partial_stats(part: Any, spec: StatsSpec) -> PartialStats:
    """Summarise one pandas/cuDF partition (possibly empty) into host-side statistics."""
    numeric = {c: column_moments(part[c]) for c in spec.numeric}
    numeric_counts = (
        {c: _value_counts(part[c].dropna().astype("float64"), None) for c in spec.numeric}
        if spec.numeric_counts
        else {}
    )
    categorical = {c: _value_counts(part[c], spec.max_categories) for c in spec.categorical}
    label = None if spec.label is None else _value_counts(part[spec.label], spec.max_categories)
    sketches = (
        {c: column_sketch(part[c], spec.sketch_size) for c in spec.numeric}
        if spec.sketch_size
        else {}
    )
    return PartialStats(len(part), numeric, numeric_counts, categorical, label, sketches)


def _merge_two(a: PartialStats, b: PartialStats) -> PartialStats:
    return PartialStats(
        a.n_rows + b.n_rows,
        {c: merge_moments(a.numeric[c], b.numeric[c]) for c in a.numeric},
        {c: merge_counts(a.numeric_counts[c], b.numeric_counts[c]) for c in a.numeric_counts},
        {c: merge_counts(a.categorical[c], b.categorical[c]) for c in a.categorical},
        None if a.label is None else merge_counts(a.label, b.label),  # type: ignore[arg-type]
    )


def merge_stats(parts: Sequence[PartialStats]) -> PartialStats:
    """Merge partials left to right (the order :func:`tree_reduce` hands them over).

    Quantile sketches are merged all at once (one compression per tree node, which is what
    :func:`pipeline.sketch.rank_error_bound` counts), the rest pairwise.
    """
    merged = functools.reduce(_merge_two, parts)
    sketches = {
        c: merge_sketches([p.numeric_sketches[c] for p in parts])
        for c in parts[0].numeric_sketches
    }
    return replace(merged, numeric_sketches=sketches)


def compute_stats(ddf: Any, spec: StatsSpec, split_every: int) -> PartialStats:
    """One pass: one ``partial_stats`` task per declared partition, a fixed tree of
    ``merge_stats``, one ``dask.compute``."""
    pieces = ddf.to_delayed()
    token = tokenize(ddf, spec)
    partials = [
        dask.delayed(partial_stats, pure=True)(
            piece, spec, dask_key_name=(f"preprocess-partial_stats-{token}", i)
        )
        for i, piece in enumerate(pieces)
    ]
    root = tree_reduce(
        partials, merge_stats, split_every=split_every, name="preprocess-merge_stats"
    )
    (stats,) = dask.compute(root)
    return stats


# --------------------------------------------------------------------------------------------
# Small host-side helpers.
# --------------------------------------------------------------------------------------------
