"""Per-partition work of :class:`pipeline.tabular_prep.TabularPreprocessor`: pure functions.

:func:`partial_tabular_stats` summarises one partition (quantile sketches and Chan moments of
the numeric columns, Misra-Gries counts of the categorical ones) on the host;
:func:`merge_tabular_stats` merges summaries in the order :func:`pipeline.reduce.tree_reduce`
hands them over; :func:`transform_partition` turns a partition into the float32 matrix
``[numeric block | missing indicators | categorical codes]`` from a frozen :class:`TransformPlan`.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import encoding, vocab
from .backend import frame_to_array, namespace, to_device_of
from .column_stats import Moments, column_sketch, merge_moments
from .column_stats import column_moments as _moments
from .sketch import QuantileSketch, merge_sketches

__all__ = [
    "TabularSpec",
    "TabularStats",
    "TransformPlan",
    "frame_partition",
    "merge_tabular_stats",
    "partial_tabular_stats",
    "transform_partition",
]


@dataclass(frozen=True)
class TabularSpec:
    numeric: tuple[Hashable, ...]
    categorical: tuple[Hashable, ...]
    sketch_size: int
    capacity: int


@dataclass(frozen=True, eq=False)
class TabularStats:
    n_rows: int
    sketches: dict[Hashable, QuantileSketch]
    moments: dict[Hashable, Moments]
    frequent: dict[Hashable, vocab.FrequentValues]


def partial_tabular_stats(part: Any, spec: TabularSpec) -> TabularStats:
    """Summarise one pandas/cuDF partition (possibly empty) on the host."""
    sketches, moments = {}, {}
    for c in spec.numeric:
        sketches[c] = column_sketch(part[c], spec.sketch_size)
        moments[c] = _moments(part[c])
    frequent = {c: vocab.frequent_values(part[c], spec.capacity) for c in spec.categorical}
    return TabularStats(len(part), sketches, moments, frequent)


def merge_tabular_stats(parts: Sequence[TabularStats]) -> TabularStats:
    """Merge partials (in the position order :func:`tree_reduce` hands them over)."""
    first = parts[0]
    return TabularStats(
        sum(p.n_rows for p in parts),
        {c: merge_sketches([p.sketches[c] for p in parts]) for c in first.sketches},
        {c: functools.reduce(merge_moments, [p.moments[c] for p in parts]) for c in first.moments},
        {c: vocab.merge_frequent([p.frequent[c] for p in parts]) for c in first.frequent},
    )


@dataclass(frozen=True, eq=False)
class TransformPlan:
    numeric: tuple[Hashable, ...]
    encoding: str
    fills: np.ndarray
    quantiles: np.ndarray | None
    mean: np.ndarray | None
    scale: np.ndarray | None
    edges: np.ndarray | None
    n_edges: tuple[int, ...]
    n_bins: int
    indicators: tuple[int, ...]
    categorical: tuple[tuple[Hashable, tuple[Any, ...], bool], ...]


def transform_partition(part: Any, plan: TransformPlan) -> Any:
    """One pandas/cuDF partition as a float32 array (NumPy/CuPy), ``[numeric | indicators |
    codes]``. Pure: the partition is not modified."""
    blocks = []
    if plan.numeric:
        X = _float_matrix(part[list(plan.numeric)])
        xp = namespace(X)
        blocks.append(encoding.missing_indicators(X, list(plan.indicators)))
        X = encoding.fill_missing(X, to_device_of(plan.fills, X))
        if plan.encoding == "standard":
            num = (X - to_device_of(plan.mean, X)) / to_device_of(plan.scale, X)
        elif plan.encoding == "ple":
            num = encoding.piecewise_linear_encode(
                X, to_device_of(plan.edges, X), list(plan.n_edges), plan.n_bins
            )
        else:
            output = "normal" if plan.encoding == "quantile_normal" else "uniform"
            num = encoding.quantile_transform(X, to_device_of(plan.quantiles, X), output)
        blocks.insert(0, num)
    if plan.categorical:
        codes = [vocab.encode_categories(part[c], cats, miss) for c, cats, miss in plan.categorical]
        xp = namespace(codes[0])
        blocks.append(xp.stack(codes, axis=1))
    out = xp.concat([xp.astype(b, xp.float32) for b in blocks], axis=1)
    return out


def _float_matrix(frame: Any) -> Any:
    """Numeric columns as one float64 array, missing values (NaN, pandas NA, cuDF null) as NaN."""
    # cuDF keeps nulls apart from NaN, pandas' nullable dtypes hold NA: both become NaN
    return frame_to_array(frame.astype("float64"), np.float64, na_value=np.nan)


def frame_partition(part: Any, plan: TransformPlan, names: tuple[str, ...]) -> Any:
    """:func:`transform_partition` as a frame with the partition's index (pandas or cuDF)."""
    frame_type = pd.DataFrame if isinstance(part, pd.DataFrame) else type(part)
    return frame_type(transform_partition(part, plan), index=part.index, columns=list(names))
