"""Imputation, standardization and one-hot encoding fitted in one pass: :class:`Preprocessor`.

:class:`Preprocessor` fits in one pass over the data: every partition is summarised into a small
host-side :class:`~pipeline.column_stats.PartialStats` (counts, Chan moments, min/max, value
counts), the partials are merged by :func:`pipeline.reduce.tree_reduce` (fixed positions, so the
result does not depend on worker count or completion order) and the whole graph is materialised
by one ``dask.compute``. The fitted transform reproduces scikit-learn's
``ColumnTransformer([(Pipeline([SimpleImputer(impute), StandardScaler()]), numeric),
(Pipeline([SimpleImputer(categorical_impute), OneHotEncoder(handle_unknown="ignore")]),
categorical)])`` on the concatenated data, up to floating-point rounding.

This module is the estimator; its parts live in modules of their own, and every name this
module exported before they were split out is still importable from here:

- :mod:`pipeline.column_stats`: partial statistics and their merge (:func:`partial_stats`,
  :func:`merge_stats`, :class:`Moments`, :class:`Counts`);
- :mod:`pipeline.frames`: input frames, column checks, numeric/categorical columns;
- :mod:`pipeline.preprocess_fit`: merged statistics → fitted attributes;
- :mod:`pipeline.preprocess_plan`: the fitted transform as a plan and its partition functions;
- :mod:`pipeline.splitting`: :func:`train_test_split` by row hash.

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
from typing import Any

import dask.dataframe as dd
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .column_stats import (
    Counts,
    Moments,
    PartialStats,
    StatsSpec,
    column_moments,
    column_sketch,
    compute_stats,
    constant_moments,
    merge_counts,
    merge_moments,
    merge_stats,
    partial_stats,
)
from .frames import (
    as_dask,
    check_column_list,
    check_columns,
    check_fitted_columns,
    frame_meta,
    is_numeric_dtype,
    resolve_feature_columns,
)
from .preprocess_fit import MISSING_CATEGORY, check_classes, fitted_attributes, scale_from_var
from .preprocess_plan import (
    TransformPlan,
    inverse_partition,
    transform_partition,
    transform_plan,
)
from .rowhash import row_hash
from .sketch import DEFAULT_SKETCH_SIZE
from .splitting import row_uniform, split_partition, train_test_split

__all__ = [
    "MISSING_CATEGORY",
    "Counts",
    "Moments",
    "PartialStats",
    "Preprocessor",
    "StatsSpec",
    "TransformPlan",
    "column_sketch",
    "constant_moments",
    "inverse_partition",
    "merge_counts",
    "merge_moments",
    "merge_stats",
    "partial_stats",
    "row_hash",
    "row_uniform",
    "split_partition",
    "train_test_split",
    "transform_partition",
]

# The private names other modules imported from here before the split (tabular_prep,
# tabular_partition): kept so that their imports, and anyone else's, still work.
_as_dask = as_dask
_meta = frame_meta
_check_columns = check_columns
_check_column_list = check_column_list
_is_numeric_dtype = is_numeric_dtype
_scale_from_var = scale_from_var
_moments = column_moments

IMPUTE_STRATEGIES = ("mean", "median", "constant", "most_frequent", None)
CATEGORICAL_IMPUTE_STRATEGIES = ("most_frequent", "constant", None)
TASKS = ("classification", "regression", None)


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
        ddf = as_dask(df)
        spec = self._resolve_columns(ddf._meta)
        stats = compute_stats(ddf, spec, self.split_every)
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
        ddf = as_dask(df)
        spec = self._spec_
        if spec != self._make_spec(spec.numeric, spec.categorical):
            raise ValueError(
                "label, impute or max_categories changed since the first fit; "
                "call fit() to start over"
            )
        self._check_dtypes(ddf._meta, spec)
        new = compute_stats(ddf, spec, self.split_every)
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
        numeric, categorical = resolve_feature_columns(
            meta, self.label, self.categorical, self.numeric
        )
        spec = self._make_spec(numeric, categorical)
        self._check_dtypes(meta, spec)
        return spec

    def _check_dtypes(self, meta: Any, spec: StatsSpec) -> None:
        columns = list(meta.columns)
        check_columns(columns, list(spec.numeric) + list(spec.categorical), "feature column(s)")
        bad = {
            str(c): str(meta[c].dtype) for c in spec.numeric if not is_numeric_dtype(meta[c].dtype)
        }
        if bad:
            raise ValueError(
                f"numeric column(s) {bad} are not numeric: declare them in categorical=[...]"
            )
        if spec.label is not None:
            check_columns(columns, [spec.label], "label column")
            if self.task == "regression" and not is_numeric_dtype(meta[spec.label].dtype):
                raise ValueError(
                    f"task='regression' needs a numeric label; {spec.label!r} has dtype "
                    f"{meta[spec.label].dtype}"
                )

    def _set_learned(self, spec: StatsSpec, stats: PartialStats) -> None:
        """Derive every learned attribute from merged statistics; assign only if all checks pass."""
        for name, value in fitted_attributes(self, spec, stats).items():
            setattr(self, name, value)

    def check_classification_target(self):
        """Check the fitted label can be a classification target (2 to ``max_categories``
        classes) and return ``classes_``. ``fit`` calls this when ``task="classification"``."""
        check_is_fitted(self)
        if self._spec_.label is None:
            raise ValueError("no label= was given, so there is no classification target")
        label_counts = self.partial_stats_.label
        check_classes(
            self._spec_.label, self.classes_, label_counts.n_distinct_min, self.max_categories
        )
        return self.classes_

    # ---- transforming ----------------------------------------------------------------------

    def _plan(self) -> TransformPlan:
        check_is_fitted(self)
        return transform_plan(self)

    def transform(self, df):
        """Float64 features named ``feature_names_out_``; the label column is dropped.

        A dask DataFrame gives a lazy dask DataFrame (one ``transform_partition`` task per
        partition, same divisions); a pandas/cuDF DataFrame gives a frame of the same kind.
        The input is never modified.
        """
        plan = self._plan()
        check_fitted_columns(frame_meta(df), self.feature_names_in_, self.numeric_features_)
        func = functools.partial(transform_partition, plan=plan)
        if isinstance(df, dd.DataFrame):
            # enforce_metadata=False: the task is transform_partition itself (its columns are
            # the plan's), not dask.dataframe's apply_and_enforce, whose unpickling imports
            # dask.dataframe + dask.array (+ sparse, numba) on every worker: ~96 MiB of RSS
            return df.map_partitions(func, meta=func(df._meta), enforce_metadata=False)
        return func(df)

    def transform_xy(self, df):
        """``(transform(df), df[label])``: the features and the untouched label column."""
        check_is_fitted(self)
        label = self._spec_.label
        if label is None:
            raise ValueError("transform_xy needs a Preprocessor fitted with label=...")
        check_columns(list(frame_meta(df).columns), [label], "label column")
        return self.transform(df), df[label]

    def inverse_transform(self, X):
        """Numeric features back in original units, as float64 columns named like the input.

        Categorical features are not decoded, and imputed values stay at their fill value.
        """
        plan = self._plan()
        names = [name for name, *_ in plan.numeric]
        check_columns(list(frame_meta(X).columns), names, "numeric feature column(s)")
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

