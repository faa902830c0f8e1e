"""The fitted transform of :class:`pipeline.preprocessing.Preprocessor` as data: a frozen
:class:`TransformPlan` built from the fitted attributes, and the pure partition functions it
drives (one task per partition; the input is never modified).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TransformPlan", "inverse_partition", "transform_partition", "transform_plan"]


@dataclass(frozen=True)
class TransformPlan:
    """What :func:`transform_partition` does to each column, from plain values only (it ships
    to the workers with every task)."""

    # (output name, input column, fill value or None, shift, divisor) per numeric column
    numeric: tuple[tuple[str, Hashable, float | None, float, float], ...]
    # (input column, categories, fill category or None, output names) per categorical column
    categorical: tuple[tuple[Hashable, tuple[Any, ...], Any, tuple[str, ...]], ...]
    # (output name, input column) per missing indicator, placed after the numeric columns
    indicators: tuple[tuple[str, Hashable], ...] = ()


def transform_partition(part: Any, plan: TransformPlan) -> Any:
    """Imputed, standardized and one-hot encoded float64 features of one pandas/cuDF partition.

    Builds a new frame with the partition's index; the input is never modified.
    """
    out: dict[str, Any] = {}
    indicators = {name: part[column].isna().astype("float64").values
                  for name, column in plan.indicators}
    for name, column, fill, shift, divisor in plan.numeric:
        x = part[column].astype("float64")
        if fill is not None:
            x = x.fillna(fill)
        out[name] = ((x - shift) / divisor).values
    out.update(indicators)
    for column, categories, fill, names in plan.categorical:
        col = part[column]
        mapping = {cat: float(i) for i, cat in enumerate(categories)}
        codes = col.map(mapping).astype("float64")  # unknown and missing -> NaN -> all zeros
        if fill in mapping:  # "missing" is a category only if the fit data had missing values
            codes = codes.mask(col.isna(), mapping[fill])
        for i, name in enumerate(names):
            out[name] = (codes == float(i)).astype("float64").values
    # Arrays, not Series: no index alignment, so duplicate index labels are fine.
    return type(part)(out, index=part.index)


def inverse_partition(part: Any, plan: TransformPlan) -> Any:
    """Numeric features of one partition back in original units (imputed values stay filled)."""
    out = {
        column: (part[name].astype("float64") * divisor + shift).values
        for name, column, _, shift, divisor in plan.numeric
    }
    return type(part)(out, index=part.index)



def transform_plan(pre: Any) -> TransformPlan:
    """The plan of a fitted :class:`~pipeline.preprocessing.Preprocessor`: per numeric column
    its fill, shift (``mean_`` when scaling, else 0) and divisor (``scale_``, else 1); per
    categorical column its categories and fill; the missing indicators."""
    n_num = len(pre.numeric_features_)
    shifts = pre.mean_ if pre.scale_ is not None else np.zeros(n_num)
    divisors = pre.scale_ if pre.scale_ is not None else np.ones(n_num)
    fills = [None if math.isnan(f) else float(f) for f in pre.statistics_]
    numeric = tuple(
        (str(c), c, fill, float(s), float(d))
        for c, fill, s, d in zip(pre.numeric_features_, fills, shifts, divisors, strict=True)
    )
    categorical = tuple(
        (c, tuple(cats.tolist()), fill, tuple(f"{c}_{cat}" for cat in cats.tolist()))
        for c, cats, fill in zip(
            pre.categorical_features_, pre.categories_, pre.categorical_fill_, strict=True
        )
    )
    # getattr: models saved before add_indicator existed have no such attribute.
    indicators = tuple(
        (f"missingindicator_{c}", c) for c in getattr(pre, "indicator_features_", [])
    )
    return TransformPlan(numeric, categorical, indicators)
