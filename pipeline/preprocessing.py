"""Imputation, standardization and one-hot encoding fitted in one pass, and deterministic splits.

:class:`Preprocessor` fits in one pass over the data: every partition is summarised into a small
host-side :class:`PartialStats` (counts, Chan moments, min/max, value counts), the partials are
merged by :func:`pipeline.reduce.tree_reduce` (fixed positions, so the result does not depend on
worker count or completion order) and the whole graph is materialised by one ``dask.compute``.
The fitted transform reproduces scikit-learn's
``ColumnTransformer([(Pipeline([SimpleImputer(impute), StandardScaler()]), numeric),
(Pipeline([SimpleImputer(categorical_impute), OneHotEncoder(handle_unknown="ignore")]),
categorical)])`` on the concatenated data, up to floating-point rounding.

:func:`train_test_split` assigns every row by a hash of its content, lazily and independently of
partitioning and workers.

Partition functions are written against the API pandas and cuDF share (``isna``, ``dropna``,
``value_counts``, ``map``, ``mask``, ``.values``); the host boundary is
:func:`pipeline.backend.to_host`, the only cuDF-specific branch is :func:`row_hash` (:mod:`pipeline.rowhash`).

Example
-------
>>> import pandas as pd
>>> from pipeline.preprocessing import Preprocessor
>>> df = pd.DataFrame({"x": [1.0, None, 3.0], "city": ["Paris", "Oslo", None], "y": [0, 1, 0]})
>>> pre = Preprocessor(label="y", categorical=["city"]).fit(df)
>>> list(pre.get_feature_names_out())
['x', 'city_Oslo', 'city_Paris']
>>> pre.transform(df)["x"].tolist()
[-1.224744871391589, 0.0, 1.224744871391589]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Sequence
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.base import tokenize
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

# The partition functions live in preprocess_tasks (importable without scikit-learn, for the
# workers); the ones this module does not use are re-exported for existing imports.
from .preprocess_tasks import (  # noqa: F401
    Counts,
    Moments,
    PartialStats,
    StatsSpec,
    TransformPlan,
    _splitmix64,
    _splitmix64_array,
    column_sketch,
    constant_moments,
    inverse_partition,
    merge_counts,
    merge_moments,
    merge_stats,
    partial_stats,
    row_uniform,
    split_partition,
    transform_partition,
)
from .reduce import tree_reduce
from .rowhash import row_hash
from .sketch import DEFAULT_SKETCH_SIZE

__all__ = [
    "Counts",
    "Moments",
    "PartialStats",
    "Preprocessor",
    "merge_stats",
    "partial_stats",
    "row_hash",
    "train_test_split",
]

IMPUTE_STRATEGIES = ("mean", "median", "constant", "most_frequent", None)
CATEGORICAL_IMPUTE_STRATEGIES = ("most_frequent", "constant", None)
TASKS = ("classification", "regression", None)
MISSING_CATEGORY = "missing"


# --------------------------------------------------------------------------------------------
# Partial statistics (the partition functions are in pipeline.preprocess_tasks).
# --------------------------------------------------------------------------------------------


def _compute_stats(ddf: dd.DataFrame, spec: StatsSpec, split_every: int) -> PartialStats:
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


def _sort_key(value: Any) -> tuple[int, Any, str]:
    """A total order on category values: numbers, then strings, then anything else by repr.
    Within one type it is the natural order, i.e. the order of ``np.unique``/``OneHotEncoder``."""
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return (0, value, "")
    if isinstance(value, str):
        return (1, 0, value)
    return (2, 0, repr(value))


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


def _is_categorical_dtype(dtype: Any) -> bool:
    # pandas' and cuDF's CategoricalDtype both report the name "category".
    return getattr(dtype, "name", None) == "category"


def _is_numeric_dtype(dtype: Any) -> bool:
    return not _is_categorical_dtype(dtype) and pd.api.types.is_numeric_dtype(dtype)


def _as_dask(df: Any) -> dd.DataFrame:
    if isinstance(df, dd.DataFrame):
        return df
    if hasattr(df, "columns") and hasattr(df, "dtypes"):  # pandas or cuDF DataFrame
        return dd.from_pandas(df, npartitions=1)
    raise TypeError(
        f"expected a dask, pandas or cuDF DataFrame, got {type(df).__module__}.{type(df).__name__}"
    )


def _meta(df: Any) -> Any:
    return df._meta if isinstance(df, dd.DataFrame) else df


def _check_columns(columns: Sequence[Hashable], wanted: Sequence[Hashable], what: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(
            f"{what} {missing!r} not found in the data; available columns: {list(columns)!r}"
        )


def _check_column_list(value: Any, name: str) -> list[Hashable] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name}= takes a list of column names, e.g. {name}=[{value!r}]")
    return list(value)


# --------------------------------------------------------------------------------------------
# The estimator.
# --------------------------------------------------------------------------------------------


# auto_wrap_output_keys=None: transform returns dask collections, which scikit-learn's
# set_output(transform="pandas") wrapper would try (and fail) to turn into pandas frames.
class Preprocessor(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Impute, standardize and one-hot encode a dask DataFrame, fitted in one pass.

    Equivalent to scikit-learn's ``SimpleImputer(impute) → StandardScaler()`` on the numeric
    columns and ``SimpleImputer(categorical_impute) → OneHotEncoder(handle_unknown="ignore")``
    on the categorical ones, fitted on all partitions at once.

    Parameters
    ----------
    label : column name or None
        The target column: never a feature, dropped by :meth:`transform`, returned by
        :meth:`transform_xy`. It must have no missing values.
    categorical : list of column names or None
        Columns to one-hot encode. With ``numeric=None``, columns of ``category`` dtype are
        one-hot encoded too.
    numeric : list of column names or None
        Columns to impute and standardize. ``None``: every other non-label column, which must
        then be numeric (bool counts as numeric) or categorical.
    impute : {"mean", "median", "constant", "most_frequent", None}
        Numeric imputation. ``None`` leaves NaN in the output (the scaler then ignores missing
        values, as ``StandardScaler`` does). ``"most_frequent"`` keeps exact value counts of
        every numeric column, so it costs memory proportional to their distinct values.
        ``"median"`` reads the median from a :class:`pipeline.sketch.QuantileSketch` of
        ``DEFAULT_SKETCH_SIZE`` points per column: exact (``SimpleImputer(strategy="median")``)
        when a column has at most that many distinct values; otherwise the fill lies between
        the order statistics ``⌊h⌋ - e`` and ``⌊h⌋ + 1 + e`` of the column (``h = (N - 1) / 2``)
        where ``e = rank_error_[j] <= (D + 1) N / DEFAULT_SKETCH_SIZE`` (``D`` the depth of
        the merge tree): 0.07 % of the rows for up to 64 partitions at ``split_every=8``.
    add_indicator : bool
        Append a 0/1 column ``missingindicator_{column}`` for every numeric column that had
        missing values at fit time, in input order, after the numeric columns and before the
        one-hot columns: the indicator columns of ``SimpleImputer(add_indicator=True)``. They
        are not standardized.
    fill_value : float or None
        Numeric fill for ``impute="constant"`` (default 0, as ``SimpleImputer``).
    categorical_impute : {"most_frequent", "constant", None}
        ``"constant"`` fills with the category ``"missing"`` (a category of its own when the
        fit data has missing values); ``None`` encodes missing values as all zeros.
    scale : bool
        Standardize numeric columns (``False``: impute only).
    max_categories : int
        Largest number of distinct values allowed in a categorical column; also the most label
        values for which ``classes_`` is kept.
    split_every : int
        Fan-in of the statistics tree reduction.
    task : {"classification", "regression", None}
        ``"classification"`` checks the label has between 2 and ``max_categories`` classes;
        ``"regression"`` checks it is numeric; ``None`` checks neither.

    Attributes
    ----------
    numeric_features_, categorical_features_ : list
        Input columns, in output order.
    feature_names_in_ : ndarray of object
        ``numeric_features_ + categorical_features_``; ``n_features_in_`` its length.
    feature_names_out_ : ndarray of object
        Output columns: numeric names, ``f"missingindicator_{column}"`` (``add_indicator``),
        then ``f"{column}_{category}"``.
    statistics_ : ndarray of float64
        Numeric fill values (NaN when ``impute=None``).
    rank_error_ : ndarray of float64
        With ``impute="median"``, the certified rank error of each column's sketch (0: exact
        median); zeros otherwise.
    indicator_features_ : list
        Numeric columns with a missing indicator (empty unless ``add_indicator``).
    mean_, var_ : ndarray of float64
        Mean and variance (ddof=0) of each imputed numeric column.
    scale_ : ndarray of float64 or None
        ``sqrt(var_)``, with near-constant columns set to 1 (``StandardScaler``'s rule); ``None``
        when ``scale=False``.
    n_samples_seen_ : int or ndarray of int
        Rows behind ``mean_``/``var_``: an int when it is the same for every column.
    data_min_, data_max_ : ndarray of float64
        Min/max of the non-missing values of each numeric column.
    n_missing_ : ndarray of int
        Missing values per numeric column.
    categories_ : list of ndarray
        Sorted categories of each categorical column (incl. ``"missing"`` when imputed so).
    categorical_fill_ : list
        Fill category of each categorical column (``None``: none).
    classes_ : ndarray or None
        Sorted label values when there are at most ``max_categories`` of them.
    n_rows_ : int
        Rows seen.
    partial_stats_ : PartialStats
        Merged statistics that :meth:`partial_fit` extends.
    """

    def __init__(
        self,
        label=None,
        categorical=None,
        numeric=None,
        impute="mean",
        fill_value=None,
        categorical_impute="most_frequent",
        scale=True,
        max_categories=1000,
        split_every=8,
        task=None,
        add_indicator=False,
    ):
        self.label = label
        self.categorical = categorical
        self.numeric = numeric
        self.impute = impute
        self.fill_value = fill_value
        self.categorical_impute = categorical_impute
        self.scale = scale
        self.max_categories = max_categories
        self.split_every = split_every
        self.task = task
        self.add_indicator = add_indicator

    # ---- fitting ---------------------------------------------------------------------------

    def fit(self, df, y=None):
        """Learn all statistics in one pass over ``df`` (dask, pandas or cuDF DataFrame).

        ``y`` is ignored (the label is the ``label`` column); it exists for scikit-learn's
        ``Pipeline``.
        """
        self._validate_params()
        ddf = _as_dask(df)
        spec = self._resolve_columns(ddf._meta)
        stats = _compute_stats(ddf, spec, self.split_every)
        self._set_learned(spec, stats)
        return self

    def partial_fit(self, df, y=None):
        """Merge the statistics of more data into the fitted ones (first call: :meth:`fit`).

        The columns are those found by the first fit. Categories can grow, and with them
        ``feature_names_out_``. The same checks as :meth:`fit` apply to all data seen so far
        (e.g. every numeric column needs an observed value unless ``impute="constant"``).
        """
        if not hasattr(self, "partial_stats_"):
            return self.fit(df)
        self._validate_params()
        ddf = _as_dask(df)
        spec = self._spec_
        if spec != self._make_spec(spec.numeric, spec.categorical):
            raise ValueError(
                "label, impute or max_categories changed since the first fit; "
                "call fit() to start over"
            )
        self._check_dtypes(ddf._meta, spec)
        new = _compute_stats(ddf, spec, self.split_every)
        self._set_learned(spec, merge_stats([self.partial_stats_, new]))
        return self

    def _validate_params(self) -> None:
        if self.impute not in IMPUTE_STRATEGIES:
            raise ValueError(f"impute must be one of {IMPUTE_STRATEGIES}, got {self.impute!r}")
        if self.categorical_impute not in CATEGORICAL_IMPUTE_STRATEGIES:
            raise ValueError(
                f"categorical_impute must be one of {CATEGORICAL_IMPUTE_STRATEGIES}, "
                f"got {self.categorical_impute!r}"
            )
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not isinstance(self.max_categories, (int, np.integer)) or self.max_categories < 1:
            raise ValueError(f"max_categories must be a positive int, got {self.max_categories!r}")
        if not isinstance(self.split_every, (int, np.integer)) or self.split_every < 2:
            raise ValueError(f"split_every must be an int >= 2, got {self.split_every!r}")
        if self.fill_value is not None:
            if isinstance(self.fill_value, (bool, np.bool_)) or not isinstance(
                self.fill_value, (int, float, np.number)
            ):
                raise ValueError(f"fill_value must be a number, got {self.fill_value!r}")
            if not math.isfinite(float(self.fill_value)):
                raise ValueError(f"fill_value must be finite, got {self.fill_value!r}")

    def _make_spec(self, numeric, categorical) -> StatsSpec:
        return StatsSpec(
            numeric=tuple(numeric),
            categorical=tuple(categorical),
            label=self.label,
            numeric_counts=self.impute == "most_frequent",
            max_categories=int(self.max_categories),
            sketch_size=DEFAULT_SKETCH_SIZE if self.impute == "median" else 0,
        )

    def _resolve_columns(self, meta: Any) -> StatsSpec:
        columns = list(meta.columns)
        if len(set(columns)) != len(columns):
            dup = sorted({str(c) for c in columns if columns.count(c) > 1})
            raise ValueError(f"duplicate column names in the data: {dup}")
        label = self.label
        if label is not None:
            _check_columns(columns, [label], "label column")
        categorical = _check_column_list(self.categorical, "categorical") or []
        numeric = _check_column_list(self.numeric, "numeric")
        _check_columns(columns, categorical, "categorical column(s)")
        if numeric is not None:
            _check_columns(columns, numeric, "numeric column(s)")

        declared = categorical + (numeric or [])
        if label is not None and label in declared:
            raise ValueError(f"the label column {label!r} cannot also be a feature")
        both = [c for c in categorical if c in (numeric or [])]
        if both:
            raise ValueError(f"column(s) {both!r} are declared both numeric and categorical")

        if numeric is None:
            rest = [c for c in columns if c != label and c not in categorical]
            categorical = categorical + [c for c in rest if _is_categorical_dtype(meta[c].dtype)]
            numeric = [c for c in rest if c not in categorical]
            bad = [c for c in numeric if not _is_numeric_dtype(meta[c].dtype)]
            if bad:
                dtypes = {str(c): str(meta[c].dtype) for c in bad}
                raise ValueError(
                    f"non-numeric column(s) {dtypes}: declare them in categorical=[...] "
                    "to one-hot encode them, or drop them"
                )
        if not numeric and not categorical:
            raise ValueError(f"no feature columns to preprocess; columns: {columns!r}")
        spec = self._make_spec(numeric, categorical)
        self._check_dtypes(meta, spec)
        return spec

    def _check_dtypes(self, meta: Any, spec: StatsSpec) -> None:
        columns = list(meta.columns)
        _check_columns(columns, list(spec.numeric) + list(spec.categorical), "feature column(s)")
        bad = {
            str(c): str(meta[c].dtype) for c in spec.numeric if not _is_numeric_dtype(meta[c].dtype)
        }
        if bad:
            raise ValueError(
                f"numeric column(s) {bad} are not numeric: declare them in categorical=[...]"
            )
        if spec.label is not None:
            _check_columns(columns, [spec.label], "label column")
            if self.task == "regression" and not _is_numeric_dtype(meta[spec.label].dtype):
                raise ValueError(
                    f"task='regression' needs a numeric label; {spec.label!r} has dtype "
                    f"{meta[spec.label].dtype}"
                )

    def _set_learned(self, spec: StatsSpec, stats: PartialStats) -> None:
        """Derive every learned attribute from merged statistics; assign only if all checks pass."""
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
            if self.task == "classification":
                _check_classes(label, classes, stats.label.n_distinct_min, self.max_categories)

        fills, means, variances, n_seen, rank_errors = [], [], [], [], []
        for c in spec.numeric:
            m = stats.numeric[c]
            if m.n == 0 and self.impute != "constant":
                raise ValueError(
                    f"numeric column {c!r} has no non-missing values; drop it or use "
                    "impute='constant'"
                )
            if m.n and not (math.isfinite(m.min) and math.isfinite(m.max)):
                raise ValueError(f"numeric column {c!r} contains infinite values")
            if self.impute is None:
                fill = math.nan
                moments = m
            else:
                if self.impute == "mean":
                    fill = m.mean
                elif self.impute == "constant":
                    fill = 0.0 if self.fill_value is None else float(self.fill_value)
                elif self.impute == "median":
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
                    f"{self.max_categories} distinct values (at least {counts.n_distinct_min})"
                )
            cats = sorted(counts.counts.index.tolist(), key=_sort_key)
            fill = None
            if self.categorical_impute == "most_frequent":
                if not cats:
                    raise ValueError(
                        f"categorical column {c!r} has no non-missing values; drop it or use "
                        "categorical_impute='constant'"
                    )
                fill = _mode(counts.counts)
            elif self.categorical_impute == "constant":
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
        scale = _scale_from_var(var, mean, n_samples) if self.scale else None

        indicators = [c for c in spec.numeric if self.add_indicator and stats.numeric[c].n_null]
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

        self._spec_ = spec
        self.partial_stats_ = stats
        self.n_rows_ = stats.n_rows
        self.numeric_features_ = list(spec.numeric)
        self.categorical_features_ = list(spec.categorical)
        self.feature_names_in_ = np.asarray(
            self.numeric_features_ + self.categorical_features_, dtype=object
        )
        self.n_features_in_ = len(self.feature_names_in_)
        self.feature_names_out_ = np.asarray(names_out, dtype=object)
        self.statistics_ = np.asarray(fills, dtype=np.float64)
        self.rank_error_ = (
            np.asarray(rank_errors, dtype=np.float64) if rank_errors else np.zeros(len(fills))
        )
        self.indicator_features_ = indicators
        self.mean_ = mean
        self.var_ = var
        self.scale_ = scale
        self.n_samples_seen_ = n_samples_seen
        self.n_missing_ = np.asarray(
            [stats.numeric[c].n_null for c in spec.numeric], dtype=np.int64
        )
        self.data_min_ = np.asarray([stats.numeric[c].min for c in spec.numeric], dtype=np.float64)
        self.data_max_ = np.asarray([stats.numeric[c].max for c in spec.numeric], dtype=np.float64)
        self.categories_ = categories
        self.categorical_fill_ = cat_fills
        self.classes_ = classes

    def check_classification_target(self):
        """Check the fitted label can be a classification target (2 to ``max_categories``
        classes) and return ``classes_``. ``fit`` calls this when ``task="classification"``."""
        check_is_fitted(self)
        if self._spec_.label is None:
            raise ValueError("no label= was given, so there is no classification target")
        label_counts = self.partial_stats_.label
        _check_classes(
            self._spec_.label, self.classes_, label_counts.n_distinct_min, self.max_categories
        )
        return self.classes_

    # ---- transforming ----------------------------------------------------------------------

    def _plan(self) -> TransformPlan:
        check_is_fitted(self)
        n_num = len(self.numeric_features_)
        shifts = self.mean_ if self.scale_ is not None else np.zeros(n_num)
        divisors = self.scale_ if self.scale_ is not None else np.ones(n_num)
        fills = [None if math.isnan(f) else float(f) for f in self.statistics_]
        numeric = tuple(
            (str(c), c, fill, float(s), float(d))
            for c, fill, s, d in zip(self.numeric_features_, fills, shifts, divisors, strict=True)
        )
        categorical = tuple(
            (c, tuple(cats.tolist()), fill, tuple(f"{c}_{cat}" for cat in cats.tolist()))
            for c, cats, fill in zip(
                self.categorical_features_, self.categories_, self.categorical_fill_, strict=True
            )
        )
        # getattr: models saved before add_indicator existed have no such attribute.
        indicators = tuple(
            (f"missingindicator_{c}", c) for c in getattr(self, "indicator_features_", [])
        )
        return TransformPlan(numeric, categorical, indicators)

    def transform(self, df):
        """Float64 features named ``feature_names_out_``; the label column is dropped.

        A dask DataFrame gives a lazy dask DataFrame (one ``transform_partition`` task per
        partition, same divisions); a pandas/cuDF DataFrame gives a frame of the same kind.
        The input is never modified.
        """
        plan = self._plan()
        meta = _meta(df)
        _check_columns(list(meta.columns), list(self.feature_names_in_), "feature column(s)")
        wrong = {
            str(c): str(meta[c].dtype)
            for c in self.numeric_features_
            if not _is_numeric_dtype(meta[c].dtype)
        }
        if wrong:
            raise ValueError(
                f"column(s) {wrong} were numeric when the preprocessor was fitted but are not "
                "numeric here: the data does not match the schema the model was trained on"
            )
        func = functools.partial(transform_partition, plan=plan)
        if isinstance(df, dd.DataFrame):
            return df.map_partitions(func, meta=func(df._meta))
        return func(df)

    def transform_xy(self, df):
        """``(transform(df), df[label])``: the features and the untouched label column."""
        check_is_fitted(self)
        label = self._spec_.label
        if label is None:
            raise ValueError("transform_xy needs a Preprocessor fitted with label=...")
        _check_columns(list(_meta(df).columns), [label], "label column")
        return self.transform(df), df[label]

    def inverse_transform(self, X):
        """Numeric features back in original units, as float64 columns named like the input.

        Categorical features are not decoded, and imputed values stay at their fill value.
        """
        plan = self._plan()
        names = [name for name, *_ in plan.numeric]
        _check_columns(list(_meta(X).columns), names, "numeric feature column(s)")
        func = functools.partial(inverse_partition, plan=plan)
        if isinstance(X, dd.DataFrame):
            return X.map_partitions(func, meta=func(X._meta))
        return func(X)

    def get_feature_names_out(self, input_features=None):
        """Output column names: numeric names, ``f"missingindicator_{column}"`` (with
        ``add_indicator``), then ``f"{column}_{category}"``."""
        check_is_fitted(self)
        if input_features is not None and list(input_features) != list(self.feature_names_in_):
            raise ValueError(
                f"input_features {list(input_features)!r} differ from the fitted features "
                f"{list(self.feature_names_in_)!r}"
            )
        return self.feature_names_out_.copy()


def _check_classes(label, classes, n_distinct_min: int, max_categories: int) -> None:
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


def _scale_from_var(var: np.ndarray, mean: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``sqrt(var)`` with near-constant columns set to 1, exactly as ``StandardScaler``:
    a column is constant when its variance is within the rounding error bound of the two-pass
    algorithm (``sklearn.preprocessing._data._is_constant_feature``)."""
    eps = np.finfo(np.float64).eps
    nf = n.astype(np.float64)
    constant = var <= nf * eps * var + (nf * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return scale


def train_test_split(df, *, test_size=0.1, valid_size=None, random_state=0, stratify=None):
    """Split rows into ``(train, test)`` or, with ``valid_size``, ``(train, valid, test)``.

    Each row goes to a split by ``u = hash(row values, random_state) / 2**64``: test if
    ``u < test_size``, valid if ``u < test_size + valid_size``, train otherwise. So:

    - the split does not depend on the number of partitions, their boundaries, the order of
      the rows or the workers — only on the row values, their dtypes and ``random_state``; a
      cuDF frame splits as its ``to_pandas()`` would (:func:`pipeline.rowhash.row_hash`), so
      CPU and GPU runs hold out the same rows;
    - identical rows always land in the same split, so duplicates cannot leak from train into
      test (and a dataset with many duplicates deviates more from the requested sizes);
    - sizes are right in expectation (binomial), not exact;
    - it is lazy: a dask DataFrame gives dask DataFrames with the same partitions, filtered
      (one ``split_partition`` task per partition and split; nothing is computed). A pandas or
      cuDF DataFrame gives frames of the same kind.

    ``stratify`` names a label column and is only checked to exist: the per-row hash already
    gives every class the requested proportions in expectation, independently of the other
    classes, which is all a per-row, partition-local rule can promise. Small classes can still
    come out unbalanced; exact per-class proportions need a global sort and are not offered.

    Parameters
    ----------
    df : dask, pandas or cuDF DataFrame
    test_size, valid_size : float in (0, 1), ``test_size + valid_size < 1``
    random_state : int
    stratify : column name or None
    """
    for name, size in (("test_size", test_size), ("valid_size", valid_size)):
        if name == "valid_size" and size is None:
            continue
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, float, np.floating)):
            raise TypeError(f"{name} must be a float in (0, 1), got {size!r}")
        if not 0.0 < size < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {size!r}")
    total = test_size + (valid_size or 0.0)
    if total >= 1.0:
        raise ValueError(
            f"test_size + valid_size must be < 1 to leave training rows, got {total!r}"
        )
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(
        random_state, (int, np.integer)
    ):
        raise TypeError(f"random_state must be an int, got {random_state!r}")
    if stratify is not None:
        _check_columns(list(_meta(df).columns), [stratify], "stratify column")

    names = ("train", "test") if valid_size is None else ("train", "valid", "test")
    splits = []
    for which in names:
        func = functools.partial(
            split_partition,
            which=which,
            test_size=float(test_size),
            valid_size=float(valid_size or 0.0),
            random_state=int(random_state),
        )
        if isinstance(df, dd.DataFrame):
            splits.append(df.map_partitions(func, meta=df._meta))
        else:
            splits.append(func(df))
    return tuple(splits)
