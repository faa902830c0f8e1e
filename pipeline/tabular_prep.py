"""Raw tabular frame -> one float matrix for a network, fitted in one pass.

:class:`TabularPreprocessor` learns, in one ``dask.compute`` over a dask DataFrame as
:func:`pipeline.read` returns it, per numeric column a :class:`pipeline.sketch.QuantileSketch`
(and Chan moments for ``numeric="standard"``), and per categorical column a
:class:`pipeline.vocab.FrequentValues` summary, merged by :func:`pipeline.reduce.tree_reduce`.
It transforms a partition into one float32 matrix laid out as

    [numeric block | missing indicators | categorical integer codes]

and describes that layout in :attr:`TabularPreprocessor.layout_` (a :class:`TabularLayout`),
which the network builder reads to place embeddings.

Numeric columns are imputed with their (sketch) median, then encoded with ``numeric=``:
``"quantile_normal"``/``"quantile_uniform"`` (scikit-learn's ``QuantileTransformer``),
``"standard"`` (``StandardScaler`` of the imputed column) or ``"ple"`` (piecewise-linear
encoding, ``n_bins`` components per feature, bins at the sketch's quantiles).

Exactness: every numeric statistic (median, quantiles, PLE edges) is exact when each numeric
column has at most ``sketch_size`` distinct values. The output then equals, column by column,
``SimpleImputer(strategy="median", add_indicator=True)``'s imputed values passed through a
``QuantileTransformer(n_quantiles, subsample=None)`` fitted on the raw column (missing values
ignored, as scikit-learn does; an imputed value maps to about probability 1/2), or through a
``StandardScaler`` fitted on the imputed column (as :class:`pipeline.Preprocessor`); and every
partitioning gives the same matrix. Otherwise ``rank_error_[j] = e`` certifies column ``j``: every fitted quantile (the
median included) lies between the order statistics ``⌊h⌋ - e`` and ``⌊h⌋ + 1 + e`` of the
column (``h = p (N - 1)``), ``e <= (D + 1) N / sketch_size`` for a merge tree of depth ``D``
(:func:`pipeline.sketch.rank_error_bound`), and the uniform quantile output is within
``(e + 1) / (N - 1) + 2 / (n_quantiles - 1)`` of the exact transform on continuous columns.
Vocabularies are exact top-``max_categories`` lists while a column has at most
``max(8 * max_categories, 4096)`` distinct values (:mod:`pipeline.vocab`).

Example
-------
>>> import pandas as pd
>>> df = pd.DataFrame({"x": [1.0, None, 3.0, 4.0], "city": ["Oslo", "Rome", "Oslo", None]})
>>> tp = TabularPreprocessor(numeric="quantile_uniform", min_frequency=1).fit(df)
>>> list(tp.get_feature_names_out())
['x', 'missingindicator_x', 'city']
>>> tp.transform(df).to_numpy().astype(float).round(3).tolist()  # missing x: median 3
[[0.0, 0.0, 2.0], [0.556, 1.0, 3.0], [0.556, 0.0, 2.0], [1.0, 0.0, 1.0]]
>>> tp.layout_.cardinalities, tp.layout_.embedding_dims
((4,), (3,))
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.base import tokenize
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from . import encoding, vocab
from .frames import check_fitted_columns
from .preprocessing import (
    _as_dask,
    _check_column_list,
    _check_columns,
    _is_numeric_dtype,
    _meta,
    _scale_from_var,
    constant_moments,
    merge_moments,
)
from .reduce import tree_reduce
from .sketch import DEFAULT_SKETCH_SIZE
from .tabular_partition import (
    TabularSpec,
    TabularStats,
    TransformPlan,
    frame_partition,
    merge_tabular_stats,
    partial_tabular_stats,
    transform_partition,
)

__all__ = ["NUMERIC_ENCODINGS", "TabularLayout", "TabularPreprocessor", "transform_partition"]

NUMERIC_ENCODINGS = ("quantile_normal", "quantile_uniform", "standard", "ple")


@dataclass(frozen=True)
class TabularLayout:
    """Where each block sits in the transformed matrix (column ``[start, stop)`` pairs).

    ``numeric_width`` is the number of columns per numeric feature (``n_bins`` for PLE, else
    1); ``numeric_levels[j]``: how many distinct values numeric feature ``j`` takes, when the
    fit knows it exactly (at most ``sketch_size``), else 0; categorical column ``j`` holds
    integer codes in ``[0, cardinalities[j])``, to be embedded in ``embedding_dims[j]``
    dimensions, or one-hot encoded when ``one_hot[j]``.
    """

    n_features: int
    numeric: tuple[int, int]
    numeric_features: tuple[Hashable, ...]
    numeric_encoding: str
    numeric_width: int
    indicators: tuple[int, int]
    indicator_features: tuple[Hashable, ...]
    categorical: tuple[int, int]
    categorical_features: tuple[Hashable, ...]
    cardinalities: tuple[int, ...]
    embedding_dims: tuple[int, ...]
    one_hot: tuple[bool, ...]
    # per numeric feature: its number of distinct values (0: more than the sketch holds); ()
    # when not known (an estimator fitted before this was recorded)
    numeric_levels: tuple[int, ...] = ()


def _is_categorical_like(dtype: Any) -> bool:
    """object, string and category dtypes are categorical; bool and numbers are numeric."""
    return getattr(dtype, "name", None) == "category" or not (
        _is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype)
    )


def _output_meta(meta: Any, names: tuple[str, ...], func: Any) -> Any:
    """The empty frame :meth:`TabularPreprocessor.transform` gives for ``meta`` (float32
    columns ``names``, ``meta``'s index), built directly for pandas rather than by running the
    whole transform on the empty frame on the client (~13 ms a call under cProfile)."""
    if type(meta) is pd.DataFrame:
        return pd.DataFrame(np.empty((0, len(names)), dtype=np.float32), index=meta.index,
                            columns=list(names))
    return func(meta)


# auto_wrap_output_keys=None: transform returns dask collections (see Preprocessor).
class TabularPreprocessor(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Encode a raw tabular dask DataFrame for a network, fitted in one pass.

    Parameters
    ----------
    label : column name or None
        Target column, never a feature and dropped by :meth:`transform`.
    categorical : list of column names or None
        Columns to encode as integer codes. Columns of object, string or category dtype are
        categorical anyway; declare integer-coded categoricals here.
    numeric : {"quantile_normal", "quantile_uniform", "standard", "ple"}
        Numeric encoding, after median imputation. Default ``"quantile_normal"``.
    n_quantiles : int
        Quantiles for the quantile transform (``QuantileTransformer``'s default, 1000; capped
        at the number of rows as scikit-learn does).
    n_bins : int
        PLE bins per feature. 48, the default of the paper authors' ``rtdl_num_embeddings``
        ``compute_bins`` (the paper tunes it per dataset; 48 quantile bins keep every bin at
        >= 2% of the rows, and discrete features get fewer bins after removing repeated edges).
    add_indicator : bool
        Append a 0/1 column per numeric feature that had missing values at fit time
        (``SimpleImputer(add_indicator=True)``'s columns, in input order).
    max_categories : int
        Largest vocabulary per categorical column (most frequent values first); the rest share
        the unknown code, so a column of thousands of values stays one input column with an
        embedding table of at most ``max_categories + 2`` rows.
    min_frequency : int
        Values seen fewer times than this at fit time get the unknown code: an embedding
        trained on a handful of rows is noise.
    one_hot_max_codes : int or None
        Layout hint: one-hot a column with at most this many codes. ``None``: when the
        embedding would not be narrower (:func:`pipeline.vocab.use_one_hot`).
    sketch_size : int
        Points per quantile sketch; numeric results are exact on columns with at most this many
        distinct values, and otherwise within the rank error in ``rank_error_``.
    split_every : int
        Fan-in of the statistics tree reduction.
    """

    def __init__(
        self,
        label=None,
        categorical=None,
        numeric="quantile_normal",
        n_quantiles=1000,
        n_bins=48,
        add_indicator=True,
        max_categories=1000,
        min_frequency=5,
        one_hot_max_codes=None,
        sketch_size=DEFAULT_SKETCH_SIZE,
        split_every=8,
    ):
        self.label = label
        self.categorical = categorical
        self.numeric = numeric
        self.n_quantiles = n_quantiles
        self.n_bins = n_bins
        self.add_indicator = add_indicator
        self.max_categories = max_categories
        self.min_frequency = min_frequency
        self.one_hot_max_codes = one_hot_max_codes
        self.sketch_size = sketch_size
        self.split_every = split_every

    # ---- fitting ---------------------------------------------------------------------------

    def _validate_params(self) -> None:
        if self.numeric not in NUMERIC_ENCODINGS:
            raise ValueError(f"numeric must be one of {NUMERIC_ENCODINGS}, got {self.numeric!r}")
        for name, low in (
            ("n_quantiles", 1),
            ("n_bins", 1),
            ("max_categories", 1),
            ("min_frequency", 1),
            ("sketch_size", 2),
            ("split_every", 2),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

    def _resolve_columns(self, meta: Any) -> TabularSpec:
        columns = list(meta.columns)
        if self.label is not None:
            _check_columns(columns, [self.label], "label column")
        declared = _check_column_list(self.categorical, "categorical") or []
        _check_columns(columns, declared, "categorical column(s)")
        if self.label in declared:
            raise ValueError(f"the label column {self.label!r} cannot also be a feature")
        rest = [c for c in columns if c != self.label and c not in declared]
        categorical = declared + [c for c in rest if _is_categorical_like(meta[c].dtype)]
        numeric = [c for c in rest if c not in categorical]
        bad = {str(c): str(meta[c].dtype) for c in numeric if not _is_numeric_dtype(meta[c].dtype)}
        if bad:
            raise ValueError(f"column(s) {bad} are neither numeric nor categorical: drop them")
        if not numeric and not categorical:
            raise ValueError(f"no feature columns; columns: {columns!r}")
        # A Misra-Gries summary 8x the vocabulary: the top values are exact unless the column
        # has more distinct values than that, and then off by at most N / (capacity + 1).
        capacity = max(8 * int(self.max_categories), 4096)
        return TabularSpec(tuple(numeric), tuple(categorical), int(self.sketch_size), capacity)

    def fit(self, df, y=None):
        """Learn every statistic in one pass (one ``dask.compute``) over ``df`` (dask, pandas or
        cuDF DataFrame). ``y`` is ignored (the label is the ``label`` column)."""
        self._validate_params()
        ddf = _as_dask(df)
        spec = self._resolve_columns(ddf._meta)
        token = tokenize(ddf, spec)
        partials = [
            dask.delayed(partial_tabular_stats, pure=True)(
                piece, spec, dask_key_name=(f"tabular-partial_stats-{token}", i)
            )
            for i, piece in enumerate(ddf.to_delayed())
        ]
        root = tree_reduce(
            partials,
            merge_tabular_stats,
            split_every=self.split_every,
            name="tabular-merge_stats",
        )
        (stats,) = dask.compute(root)
        return self._learned(spec, stats)

    def fit_partitions(self, parts: list[Any]) -> TabularPreprocessor:
        """:meth:`fit` on in-memory partitions (pandas or cuDF frames, in order), computed here:
        the same per-partition statistics merged in the same tree as ``fit``'s tasks
        (:func:`~pipeline.reduce.tree_fold`), so the same learned values as ``fit`` on a dask
        frame of those partitions. For data already in this process (a frame the user passed),
        where tasks would ship it to the workers and the statistics back."""
        from .reduce import tree_fold

        self._validate_params()
        if not parts:
            raise ValueError("fit_partitions needs at least one partition")
        spec = self._resolve_columns(parts[0].iloc[:0])
        stats = tree_fold([partial_tabular_stats(part, spec) for part in parts],
                          merge_tabular_stats, split_every=self.split_every)
        return self._learned(spec, stats)

    def _learned(self, spec: TabularSpec, stats: TabularStats) -> TabularPreprocessor:
        self._set_learned(spec, stats)
        names = [str(n) for n in self.get_feature_names_out()]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"output feature names collide: {dup}; rename the columns")
        return self

    def _set_learned(self, spec: TabularSpec, stats: TabularStats) -> None:
        if stats.n_rows == 0:
            raise ValueError("cannot fit on an empty dataset (0 rows)")
        n_q = max(1, min(int(self.n_quantiles), stats.n_rows))
        # As QuantileTransformer: percentiles references * 100, divided by 100 by numpy.
        probs = np.linspace(0.0, 1.0, n_q) * 100 / 100
        bin_probs = np.linspace(0.0, 100.0, int(self.n_bins) + 1) / 100  # = np.percentile's
        quantiles, bin_q, fills, means, variances, counts, errors, n_missing, levels = (
            [] for _ in range(9)
        )
        for c in spec.numeric:
            sk = stats.sketches[c]
            if sk.values.size == 0:
                raise ValueError(f"numeric column {c!r} has no non-missing values; drop it")
            if not (np.isfinite(sk.values[0]) and np.isfinite(sk.values[-1])):
                raise ValueError(f"numeric column {c!r} contains infinite values")
            quantiles.append(np.maximum.accumulate(sk.quantiles(probs)))
            bin_q.append(sk.quantiles(bin_probs))
            fill = float(sk.quantiles([0.5])[0])
            imputed = merge_moments(stats.moments[c], constant_moments(fill, sk.n_null))
            fills.append(fill)
            means.append(imputed.mean)
            variances.append(imputed.m2 / imputed.n)
            counts.append(imputed.n)
            errors.append(sk.rank_error)
            n_missing.append(sk.n_null)
            # (the sketch's values are the column's distinct values when it is exact)
            levels.append(int(sk.values.size) if sk.rank_error == 0 else 0)
        n_num = len(spec.numeric)
        mean = np.asarray(means, dtype=np.float64)
        edges = encoding.ple_edges(np.stack(bin_q, axis=1)) if n_num else []
        padded = np.full((int(self.n_bins) + 1, n_num), np.nan)
        for j, e in enumerate(edges):
            padded[: e.size, j] = e

        vocabularies, has_missing = [], []
        for c in spec.categorical:
            fv = stats.frequent[c]
            vocabularies.append(
                vocab.build_vocabulary(fv, int(self.max_categories), int(self.min_frequency))
            )
            has_missing.append(fv.n_null > 0)

        self.numeric_features_ = list(spec.numeric)
        self.categorical_features_ = list(spec.categorical)
        self.n_rows_ = stats.n_rows
        self.quantiles_ = np.stack(quantiles, axis=1) if n_num else np.empty((n_q, 0))
        self.bin_edges_ = padded
        self.n_bin_edges_ = np.asarray([e.size for e in edges], dtype=np.int64)
        self.statistics_ = np.asarray(fills, dtype=np.float64)
        self.mean_ = mean
        self.scale_ = _scale_from_var(
            np.asarray(variances, dtype=np.float64), mean, np.asarray(counts, dtype=np.int64)
        )
        self.n_missing_ = np.asarray(n_missing, dtype=np.int64)
        self.rank_error_ = np.asarray(errors, dtype=np.float64)
        self.numeric_levels_ = np.asarray(levels, dtype=np.int64)
        self.vocabularies_ = vocabularies
        self.categorical_missing_ = np.asarray(has_missing, dtype=bool)

    # ---- layout and transforming -----------------------------------------------------------

    @property
    def indicator_features_(self) -> list[Hashable]:
        """Numeric columns that get a missing indicator (missing at fit, ``add_indicator``)."""
        check_is_fitted(self)
        if not self.add_indicator:
            return []
        return [c for c, m in zip(self.numeric_features_, self.n_missing_, strict=True) if m]

    @property
    def layout_(self) -> TabularLayout:
        """The column layout of :meth:`transform`'s output (derived, so never stale)."""
        check_is_fitted(self)
        width = int(self.n_bins) if self.numeric == "ple" else 1
        n_num = width * len(self.numeric_features_)
        n_ind = len(self.indicator_features_)
        n_cat = len(self.categorical_features_)
        cards = tuple(
            len(v) + vocab.code_offset(bool(m))
            for v, m in zip(self.vocabularies_, self.categorical_missing_, strict=True)
        )
        return TabularLayout(
            n_features=n_num + n_ind + n_cat,
            numeric=(0, n_num),
            numeric_features=tuple(self.numeric_features_),
            numeric_encoding=self.numeric,
            numeric_width=width,
            indicators=(n_num, n_num + n_ind),
            indicator_features=tuple(self.indicator_features_),
            categorical=(n_num + n_ind, n_num + n_ind + n_cat),
            categorical_features=tuple(self.categorical_features_),
            cardinalities=cards,
            embedding_dims=tuple(vocab.embedding_dim(n) for n in cards),
            one_hot=tuple(vocab.use_one_hot(n, self.one_hot_max_codes) for n in cards),
            # (getattr: a preprocessor fitted before this attribute existed does not know)
            numeric_levels=tuple(int(v) for v in getattr(self, "numeric_levels_", ())),
        )

    def get_feature_names_out(self, input_features=None):
        """``c`` (or ``c_bin{t}`` for PLE), ``missingindicator_c``, then categorical ``c``."""
        check_is_fitted(self)
        if self.numeric == "ple":
            names = [f"{c}_bin{t}" for c in self.numeric_features_ for t in range(self.n_bins)]
        else:
            names = [str(c) for c in self.numeric_features_]
        names += [f"missingindicator_{c}" for c in self.indicator_features_]
        names += [str(c) for c in self.categorical_features_]
        return np.asarray(names, dtype=object)

    def _plan(self) -> TransformPlan:
        check_is_fitted(self)
        numeric = tuple(self.numeric_features_)
        return TransformPlan(
            numeric=numeric,
            encoding=self.numeric,
            fills=np.asarray(self.statistics_, dtype=np.float64),
            quantiles=np.asarray(self.quantiles_, dtype=np.float64),
            mean=np.asarray(self.mean_, dtype=np.float64),
            scale=np.asarray(self.scale_, dtype=np.float64),
            edges=np.asarray(self.bin_edges_, dtype=np.float64),
            n_edges=tuple(int(n) for n in self.n_bin_edges_),
            n_bins=int(self.n_bins),
            indicators=tuple(numeric.index(c) for c in self.indicator_features_),
            categorical=tuple(
                (c, tuple(np.asarray(v).tolist()), bool(m))
                for c, v, m in zip(
                    self.categorical_features_,
                    self.vocabularies_,
                    self.categorical_missing_,
                    strict=True,
                )
            ),
        )

    def transform(self, df):
        """The float32 matrix as a frame named :meth:`get_feature_names_out` (lazy for dask
        input: one ``transform_partition`` task per partition, same divisions)."""
        plan = self._plan()
        features = self.numeric_features_ + self.categorical_features_
        check_fitted_columns(_meta(df), features, self.numeric_features_)
        names = tuple(str(n) for n in self.get_feature_names_out())
        func = functools.partial(frame_partition, plan=plan, names=names)
        if isinstance(df, dd.DataFrame):  # no apply_and_enforce: see Preprocessor.transform
            return df.map_partitions(func, meta=_output_meta(df._meta, names, func),
                                     enforce_metadata=False)
        return func(df)

    def transform_array(self, part):
        """:func:`transform_partition` of one pandas/cuDF frame with the fitted plan."""
        return transform_partition(part, self._plan())
