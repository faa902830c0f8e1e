"""From merged column statistics to the fitted attributes of
:class:`pipeline.preprocessing.Preprocessor`: fill values, the moments of the imputed columns,
scales, categories, fill categories, classes and output names.

Pure host-side functions: they see one merged :class:`pipeline.column_stats.PartialStats` and
the estimator's parameters, and raise (naming the column) before anything is assigned.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .column_stats import PartialStats, StatsSpec, constant_moments, merge_moments
from .vocab import _sort_key  # numbers, strings, then by repr: np.unique's order per type

__all__ = ["MISSING_CATEGORY", "check_classes", "fitted_attributes", "scale_from_var"]

MISSING_CATEGORY = "missing"


def _mode(counts: pd.Series) -> Any:
    """Most frequent value; ties go to the smallest value, as in ``SimpleImputer``."""
    top = counts.max()
    return min(counts.index[counts.to_numpy() == top].tolist(), key=_sort_key)


def _as_array(values: list[Any]) -> np.ndarray:
    """Categories as an array like ``OneHotEncoder.categories_``: numeric dtype for numbers,
    object otherwise (``np.array([1, "a"])`` would silently turn 1 into "1")."""
    if values and all(isinstance(v, (int, float, np.number)) for v in values):
        return np.asarray(values)
    return np.asarray(values, dtype=object)


def fitted_attributes(est: Any, spec: StatsSpec, stats: PartialStats) -> dict[str, Any]:
    """Every learned attribute of a :class:`~pipeline.preprocessing.Preprocessor` with the
    parameters of ``est`` (``impute``, ``fill_value``, ``categorical_impute``, ``scale``,
    ``max_categories``, ``task``, ``add_indicator``), by name, in assignment order; raises
    before returning if any check fails."""
    if stats.n_rows == 0:
        raise ValueError("cannot fit on an empty dataset (0 rows)")
    label = spec.label

    classes = None
    if label is not None:
        if stats.label.n_null:
            raise ValueError(
                f"label column {label!r} has {stats.label.n_null} missing values; "
                "drop those rows before fitting"
            )
        if stats.label.counts is not None:
            classes = _as_array(sorted(stats.label.counts.index.tolist(), key=_sort_key))
        if est.task == "classification":
            check_classes(label, classes, stats.label.n_distinct_min, est.max_categories)

    fills, means, variances, n_seen, rank_errors = [], [], [], [], []
    for c in spec.numeric:
        m = stats.numeric[c]
        if m.n == 0 and est.impute != "constant":
            raise ValueError(
                f"numeric column {c!r} has no non-missing values; drop it or use "
                "impute='constant'"
            )
        if m.n and not (math.isfinite(m.min) and math.isfinite(m.max)):
            raise ValueError(f"numeric column {c!r} contains infinite values")
        if est.impute is None:
            fill = math.nan
            moments = m
        else:
            if est.impute == "mean":
                fill = m.mean
            elif est.impute == "constant":
                fill = 0.0 if est.fill_value is None else float(est.fill_value)
            elif est.impute == "median":
                sketch = stats.numeric_sketches[c]
                fill = float(sketch.quantiles([0.5])[0])
                rank_errors.append(sketch.rank_error)
            else:
                fill = float(_mode(stats.numeric_counts[c].counts))
            # The scaler sees the imputed column: n_null extra copies of the fill value.
            moments = merge_moments(m, constant_moments(fill, m.n_null))
        fills.append(fill)
        means.append(moments.mean)
        variances.append(moments.m2 / moments.n if moments.n else 0.0)
        n_seen.append(moments.n)

    categories, cat_fills = [], []
    for c in spec.categorical:
        counts = stats.categorical[c]
        if counts.counts is None:
            raise ValueError(
                f"categorical column {c!r} has more than max_categories="
                f"{est.max_categories} distinct values (at least {counts.n_distinct_min})"
            )
        cats = sorted(counts.counts.index.tolist(), key=_sort_key)
        fill = None
        if est.categorical_impute == "most_frequent":
            if not cats:
                raise ValueError(
                    f"categorical column {c!r} has no non-missing values; drop it or use "
                    "categorical_impute='constant'"
                )
            fill = _mode(counts.counts)
        elif est.categorical_impute == "constant":
            fill = MISSING_CATEGORY
            if counts.n_null and MISSING_CATEGORY not in cats:
                cats = sorted([*cats, MISSING_CATEGORY], key=_sort_key)
        elif not cats:
            raise ValueError(
                f"categorical column {c!r} has no non-missing values; drop it or use "
                "categorical_impute='constant'"
            )
        categories.append(_as_array(cats))
        cat_fills.append(fill)

    mean = np.asarray(means, dtype=np.float64)
    var = np.asarray(variances, dtype=np.float64)
    n_samples = np.asarray(n_seen, dtype=np.int64)
    if n_samples.size and n_samples.min() == n_samples.max():
        n_samples_seen: int | np.ndarray = int(n_samples[0])
    else:
        n_samples_seen = n_samples
    scale = scale_from_var(var, mean, n_samples) if est.scale else None

    indicators = [c for c in spec.numeric if est.add_indicator and stats.numeric[c].n_null]
    names_out = [str(c) for c in spec.numeric] + [
        f"missingindicator_{c}" for c in indicators
    ] + [
        f"{c}_{cat}"
        for c, cats in zip(spec.categorical, categories, strict=True)
        for cat in cats
    ]
    if len(set(names_out)) != len(names_out):
        dup = sorted({n for n in names_out if names_out.count(n) > 1})
        raise ValueError(f"output feature names collide: {dup}; rename the columns")

    feature_names_in = np.asarray(list(spec.numeric) + list(spec.categorical), dtype=object)
    return {
        "_spec_": spec,
        "partial_stats_": stats,
        "n_rows_": stats.n_rows,
        "numeric_features_": list(spec.numeric),
        "categorical_features_": list(spec.categorical),
        "feature_names_in_": feature_names_in,
        "n_features_in_": len(feature_names_in),
        "feature_names_out_": np.asarray(names_out, dtype=object),
        "statistics_": np.asarray(fills, dtype=np.float64),
        "rank_error_": (
            np.asarray(rank_errors, dtype=np.float64) if rank_errors else np.zeros(len(fills))
        ),
        "indicator_features_": indicators,
        "mean_": mean,
        "var_": var,
        "scale_": scale,
        "n_samples_seen_": n_samples_seen,
        "n_missing_": np.asarray(
            [stats.numeric[c].n_null for c in spec.numeric], dtype=np.int64
        ),
        "data_min_": np.asarray([stats.numeric[c].min for c in spec.numeric], dtype=np.float64),
        "data_max_": np.asarray([stats.numeric[c].max for c in spec.numeric], dtype=np.float64),
        "categories_": categories,
        "categorical_fill_": cat_fills,
        "classes_": classes,
    }


def check_classes(label, classes, n_distinct_min: int, max_categories: int) -> None:
    """Raise unless the label has between 2 and ``max_categories`` classes (``classes=None``:
    more than that were seen, at least ``n_distinct_min``)."""
    if classes is None:
        raise ValueError(
            f"label {label!r} has more than max_categories={max_categories} distinct values "
            f"(at least {n_distinct_min}); is it a regression target?"
        )
    if len(classes) < 2:
        only = np.asarray(classes).tolist()[0] if len(classes) else None
        raise ValueError(
            f"label {label!r} has a single class ({only!r}); a classifier needs at least 2"
        )


def scale_from_var(var: np.ndarray, mean: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``sqrt(var)`` with near-constant columns set to 1, exactly as ``StandardScaler``:
    a column is constant when its variance is within the rounding error bound of the two-pass
    algorithm (``sklearn.preprocessing._data._is_constant_feature``)."""
    eps = np.finfo(np.float64).eps
    nf = n.astype(np.float64)
    constant = var <= nf * eps * var + (nf * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return scale


