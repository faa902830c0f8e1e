"""TabularPreprocessor. Oracles: scikit-learn's SimpleImputer (median, add_indicator),
QuantileTransformer and StandardScaler on the concatenated data, NumPy percentiles for the PLE
bins, pandas value_counts for vocabularies."""

from __future__ import annotations

import itertools
import uuid

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.callbacks import Callback
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import QuantileTransformer, StandardScaler

from pipeline.encoding import piecewise_linear_encode, ple_edges
from pipeline.estimators import saveable_classes
from pipeline.serialization import dump_objects, read_objects, write_dir
from pipeline.tabular_prep import TabularPreprocessor

NUMERIC = ["a", "b", "c", "d"]


@pytest.fixture(autouse=True, scope="module")
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


class CountComputes(Callback):
    def __init__(self):
        super().__init__()
        self.computes = 0

    def _start(self, dsk):
        self.computes += 1


def make_frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    a[rng.random(n) < 0.15] = np.nan
    d = rng.exponential(size=n)
    d[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "a": a,
            "b": rng.integers(0, 4, n).astype(np.float64),  # repeated quantiles, no missing
            "c": rng.integers(-5, 5, n),  # int64
            "d": d,
            "city": pd.array(
                rng.choice(
                    ["Oslo", "Paris", "Rome", "Lima", "Kyiv"], n, p=[0.4, 0.3, 0.2, 0.09, 0.01]
                ),
                dtype="str",
            ),
            "shop": pd.Categorical(rng.choice(["s1", "s2", None], n)),
            "code": rng.integers(0, 3, n),  # declared categorical
            "y": rng.integers(0, 2, n),
        }
    )


def numeric_matrix(pdf):
    return pdf[NUMERIC].to_numpy(dtype=np.float64)


def assert_float32_close(got, want):
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=2e-7)


@pytest.mark.parametrize("npartitions", [1, 4, 9])
@pytest.mark.parametrize("output", ["normal", "uniform"])
@pytest.mark.parametrize("n_quantiles", [1000, 40])
def test_quantile_encoding_matches_sklearn(npartitions, output, n_quantiles):
    pdf = make_frame()
    tp = TabularPreprocessor(
        label="y", categorical=["code"], numeric=f"quantile_{output}", n_quantiles=n_quantiles
    )
    out = tp.fit(dd.from_pandas(pdf, npartitions=npartitions)).transform(pdf)
    X = numeric_matrix(pdf)
    imputer = SimpleImputer(strategy="median").fit(X)
    # scikit-learn caps n_quantiles at the number of rows (with a warning); so do we.
    qt = QuantileTransformer(
        n_quantiles=min(n_quantiles, len(pdf)), subsample=None, output_distribution=output
    ).fit(X)
    np.testing.assert_array_equal(tp.quantiles_, qt.quantiles_)
    np.testing.assert_array_equal(tp.statistics_, imputer.statistics_)
    assert (tp.rank_error_ == 0).all()
    assert out.dtypes.eq(np.float32).all()
    assert_float32_close(out[NUMERIC].to_numpy(), qt.transform(imputer.transform(X)))


def test_standard_encoding_matches_imputer_and_scaler():
    pdf = make_frame()
    tp = TabularPreprocessor(label="y", numeric="standard").fit(dd.from_pandas(pdf, 5))
    X = numeric_matrix(pdf)
    want = StandardScaler().fit_transform(SimpleImputer(strategy="median").fit_transform(X))
    assert_float32_close(tp.transform(pdf)[NUMERIC].to_numpy(), want)


@pytest.mark.parametrize("n_bins", [4, 48])
def test_ple_bins_come_from_the_percentiles(n_bins):
    pdf = make_frame()
    tp = TabularPreprocessor(label="y", categorical=["code"], numeric="ple", n_bins=n_bins)
    tp.fit(dd.from_pandas(pdf, 3))
    X = numeric_matrix(pdf)
    edges = ple_edges(np.nanpercentile(X, np.linspace(0, 100, n_bins + 1), axis=0))
    padded = np.full((n_bins + 1, len(NUMERIC)), np.nan)
    for j, e in enumerate(edges):
        padded[: e.size, j] = e
    np.testing.assert_array_equal(tp.n_bin_edges_, [e.size for e in edges])
    np.testing.assert_array_equal(tp.bin_edges_, padded)
    filled = SimpleImputer(strategy="median").fit_transform(X)
    want = piecewise_linear_encode(filled, padded, [e.size for e in edges], n_bins)
    got = tp.transform(pdf)
    names = [f"{c}_bin{t}" for c in NUMERIC for t in range(n_bins)]
    assert_float32_close(got[names].to_numpy(), want)
    assert tp.layout_.numeric == (0, len(NUMERIC) * n_bins)


def test_indicators_match_simple_imputer_and_layout_is_consistent():
    pdf = make_frame()
    ddf = dd.from_pandas(pdf, npartitions=4)
    tp = TabularPreprocessor(label="y", categorical=["code"]).fit(ddf)
    X = numeric_matrix(pdf)
    imputer = SimpleImputer(strategy="median", add_indicator=True).fit(X)
    ind_names = [n for n in imputer.get_feature_names_out(NUMERIC) if n.startswith("missing")]
    out = tp.transform(ddf)
    assert isinstance(out, dd.DataFrame)
    out = out.compute()
    np.testing.assert_array_equal(out[ind_names].to_numpy(), imputer.transform(X)[:, 4:])

    layout = tp.layout_
    names = list(tp.get_feature_names_out())
    assert list(out.columns) == names and layout.n_features == len(names)
    assert names[slice(*layout.numeric)] == NUMERIC
    assert (
        names[slice(*layout.indicators)]
        == ind_names
        == ["missingindicator_a", "missingindicator_d"]
    )
    assert names[slice(*layout.categorical)] == ["code", "city", "shop"]
    codes = out.to_numpy()[:, slice(*layout.categorical)]
    assert (codes >= 0).all() and (codes < np.array(layout.cardinalities)).all()
    assert layout.embedding_dims == tuple(
        min(600, round(1.6 * n**0.56)) for n in layout.cardinalities
    )
    plain = TabularPreprocessor(label="y", categorical=["code"], add_indicator=False).fit(pdf)
    assert plain.layout_.indicators == (len(NUMERIC), len(NUMERIC))


@pytest.mark.parametrize("npartitions", [1, 3])
def test_numeric_levels_are_counted_as_pandas_counts_them(npartitions):
    """``layout_.numeric_levels``: each numeric column's number of distinct non-missing values
    (a flag with missing values, a bool, a constant, a count), against pandas' ``nunique``; 0
    for a column with more distinct values than the sketch holds."""
    rng = np.random.default_rng(3)
    n = 400
    flag = rng.integers(0, 2, n).astype(np.float64)
    flag[rng.random(n) < 0.1] = np.nan
    rare = np.zeros(n)
    rare[7], rare[8] = 2.0, 1.0  # a third value in one row out of 400
    pdf = pd.DataFrame({"x": rng.normal(size=n), "flag": flag, "on": rng.random(n) < 0.3,
                        "three": rng.integers(0, 3, n), "const": np.full(n, 5.0),
                        "rare": rare, "count": rng.poisson(2.0, n),
                        "city": rng.choice(["a", "b"], n)})
    ddf = dd.from_pandas(pdf, npartitions=npartitions)
    tp = TabularPreprocessor(numeric="quantile_normal").fit(ddf)
    numeric = tp.layout_.numeric_features
    assert list(numeric) == ["x", "flag", "on", "three", "const", "rare", "count"]
    want = tuple(int(pdf[c].nunique(dropna=True)) for c in numeric)
    assert want[:6] == (n, 2, 2, 3, 1, 3)
    assert tp.layout_.numeric_levels == want
    # more distinct values than the sketch holds: not known (0)
    small = TabularPreprocessor(sketch_size=8).fit(ddf)
    assert small.layout_.numeric_levels == tuple(0 if v > 8 else v for v in want)


def test_categorical_codes_follow_frequency_with_unknown_rare_and_missing():
    pdf = make_frame(n=400)
    tp = TabularPreprocessor(
        label="y", categorical=["code"], min_frequency=10, max_categories=3
    ).fit(dd.from_pandas(pdf, npartitions=3))
    test = pdf.copy()
    test["city"] = test["city"].astype(object)
    test.loc[test.index[:3], "city"] = ["Atlantis", None, "Kyiv"]
    test["city"] = pd.array(test["city"], dtype="str")
    out = tp.transform(dd.from_pandas(test, npartitions=2)).compute()
    layout = tp.layout_
    for j, col in enumerate(layout.categorical_features):
        counts = pdf[col].astype(object).value_counts(dropna=True)
        counts = counts[counts >= 10]
        vocab = [v for v, _ in sorted(counts.items(), key=lambda vc: (-vc[1], str(vc[0])))][:3]
        has_missing = bool(pdf[col].isna().any())
        offset = 2 if has_missing else 1
        mapping = {v: i + offset for i, v in enumerate(vocab)}
        want = [
            (1 if has_missing else 0) if pd.isna(v) else mapping.get(v, 0)
            for v in test[col].astype(object)
        ]
        np.testing.assert_array_equal(out[str(col)].to_numpy(), want)
        assert layout.cardinalities[j] == len(vocab) + offset
    # "Kyiv" is rare (1%), "Atlantis" never seen, None: city had no missing values at fit.
    assert out["city"].iloc[:3].tolist() == [0.0, 0.0, 0.0]


def test_high_cardinality_is_capped_to_one_input_column():
    rng = np.random.default_rng(5)
    n = 20_000
    ids = rng.zipf(1.3, n) % 5000
    pdf = pd.DataFrame(
        {"id": pd.array([f"u{i}" for i in ids], dtype="str"), "x": rng.normal(size=n)}
    )
    tp = TabularPreprocessor(max_categories=100, min_frequency=1).fit(dd.from_pandas(pdf, 4))
    layout = tp.layout_
    assert layout.n_features == 2 and layout.cardinalities == (101,)
    counts = pdf["id"].value_counts()
    expected = sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))[:100]
    assert tp.vocabularies_[0].tolist() == [v for v, _ in expected]


def test_one_and_several_partitions_give_identical_output():
    pdf = make_frame()
    outs = []
    for npart in (1, 3, 8):
        tp = TabularPreprocessor(label="y", numeric="ple", n_bins=8)
        outs.append(tp.fit(dd.from_pandas(pdf, npartitions=npart)).transform(pdf).to_numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_approximate_quantiles_stay_within_the_certified_rank_error():
    rng = np.random.default_rng(7)
    n, size, n_q = 6000, 64, 50
    x = rng.standard_t(3, size=n)
    pdf = pd.DataFrame({"x": x})
    tp = TabularPreprocessor(numeric="quantile_uniform", sketch_size=size, n_quantiles=n_q)
    tp.fit(dd.from_pandas(pdf, npartitions=5))
    e = tp.rank_error_[0]
    assert e > 0
    data = np.sort(x)
    h = np.linspace(0, 1, n_q) * (n - 1)
    lo = data[np.clip(np.floor(h) - e, 0, n - 1).astype(int)]
    hi = data[np.clip(np.floor(h) + 1 + e, 0, n - 1).astype(int)]
    assert ((lo <= tp.quantiles_[:, 0]) & (tp.quantiles_[:, 0] <= hi)).all()
    exact = QuantileTransformer(n_quantiles=n_q, subsample=None).fit(x[:, None])
    got = tp.transform(pdf).to_numpy()[:, 0]
    bound = (e + 1) / (n - 1) + 2 / (n_q - 1)
    assert np.abs(got - exact.transform(x[:, None])[:, 0]).max() <= bound + 1e-6


def test_fit_is_one_compute_and_columns_are_found_from_dtypes():
    pdf = make_frame().assign(flag=lambda d: d["a"] > 0)
    with CountComputes() as counter:
        tp = TabularPreprocessor(label="y").fit(dd.from_pandas(pdf, npartitions=6))
    assert counter.computes == 1
    assert tp.numeric_features_ == ["a", "b", "c", "d", "code", "flag"]
    assert tp.categorical_features_ == ["city", "shop"]
    with pytest.raises(ValueError, match=r"'when'.*neither numeric nor categorical"):
        TabularPreprocessor().fit(pdf.assign(when=pd.Timestamp("2026-01-01")))
    with pytest.raises(ValueError, match="numeric must be one of"):
        TabularPreprocessor(numeric="log").fit(pdf)
    with pytest.raises(ValueError, match=r"collide: \['missingindicator_a'\]"):
        TabularPreprocessor(categorical=["missingindicator_a"]).fit(
            pdf.assign(missingindicator_a=1)
        )
    with pytest.raises(ValueError, match="'a' has no non-missing values"):
        TabularPreprocessor().fit(pdf.assign(a=np.nan))
    with pytest.raises(ValueError, match=r"column\(s\) \{'a': 'str'\} were numeric"):
        tp.transform(pdf.assign(a=pdf["a"].astype(str)))


@pytest.mark.parametrize("numeric", ["quantile_normal", "standard", "ple"])
def test_save_load_round_trip(tmp_path, numeric):
    pdf = make_frame()
    pdf["mixed"] = pd.Series([1, "one"] * (len(pdf) // 2), dtype=object)
    tp = TabularPreprocessor(
        label="y", categorical=["code"], numeric=numeric, n_bins=6, min_frequency=1
    ).fit(dd.from_pandas(pdf, npartitions=3))
    manifest, npz = dump_objects({"preprocessor": tp}, saveable_classes())
    write_dir(tmp_path / "m", manifest, npz)
    objects, _, _ = read_objects(tmp_path / "m", saveable_classes())
    back = objects["preprocessor"]
    assert back.get_params() == tp.get_params()
    assert back.layout_ == tp.layout_
    pd.testing.assert_frame_equal(back.transform(pdf), tp.transform(pdf))


def test_nullable_numeric_columns_count_missing_values_like_nan():
    rng = np.random.default_rng(9)
    n = 120
    ints = pd.array(rng.integers(0, 50, n), dtype="Int64")
    ints[rng.random(n) < 0.2] = pd.NA
    flags = pd.array(rng.random(n) < 0.5, dtype="boolean")
    flags[rng.random(n) < 0.1] = pd.NA
    pdf = pd.DataFrame({"i": ints, "f": flags})
    tp = TabularPreprocessor(numeric="quantile_uniform").fit(dd.from_pandas(pdf, npartitions=3))
    X = pdf.astype("float64").to_numpy()
    imputer = SimpleImputer(strategy="median", add_indicator=True).fit(X)
    qt = QuantileTransformer(n_quantiles=n, subsample=None).fit(X)
    out = tp.transform(pdf)
    assert tp.numeric_features_ == ["i", "f"]
    np.testing.assert_array_equal(tp.statistics_, imputer.statistics_)
    assert_float32_close(out[["i", "f"]].to_numpy(), qt.transform(imputer.transform(X)[:, :2]))
    np.testing.assert_array_equal(
        out[["missingindicator_i", "missingindicator_f"]].to_numpy(), imputer.transform(X)[:, 2:]
    )


def test_distributed_fit_matches_sync_bit_for_bit(client):
    # More distinct values than the sketch keeps: the approximate regime, where only the fixed
    # tree (not the workers or completion order) may decide the result.
    pdf = make_frame(3_000)
    ddf = dd.from_pandas(pdf, npartitions=7)
    params = {"label": "y", "categorical": ["code"], "sketch_size": 256, "split_every": 3}
    local = TabularPreprocessor(**params).fit(ddf)
    local_out = local.transform(ddf).compute()
    with dask.config.set(scheduler=client):
        remote = TabularPreprocessor(**params).fit(ddf)
        remote_out = remote.transform(ddf).compute()
    assert local.rank_error_.max() > 0
    for attr in ("quantiles_", "statistics_", "bin_edges_", "mean_", "scale_", "rank_error_"):
        np.testing.assert_array_equal(getattr(remote, attr), getattr(local, attr))
    pd.testing.assert_frame_equal(remote_out, local_out)


def test_fit_partitions_in_memory_matches_the_tasks_bit_for_bit():
    """The in-memory fit of a frame's partitions (what a tabular fit of a pandas frame runs in
    the client) learns what the tasks learn from the dask frame of those partitions."""
    pdf = make_frame(3_000)
    ddf = dd.from_pandas(pdf, npartitions=7)
    params = {"label": "y", "categorical": ["code"], "sketch_size": 256, "split_every": 3}
    tasks = TabularPreprocessor(**params).fit(ddf)
    parts = list(dask.compute(*ddf.to_delayed()))
    here = TabularPreprocessor(**params).fit_partitions(parts)
    assert tasks.rank_error_.max() > 0  # the approximate regime: the tree decides
    for attr in ("quantiles_", "statistics_", "bin_edges_", "mean_", "scale_", "rank_error_",
                 "numeric_levels_"):
        np.testing.assert_array_equal(getattr(here, attr), getattr(tasks, attr))
    assert here.layout_ == tasks.layout_
    pd.testing.assert_frame_equal(here.transform(parts[0]), tasks.transform(parts[0]))
    with pytest.raises(ValueError, match="at least one partition"):
        TabularPreprocessor().fit_partitions([])


@st.composite
def small_frames(draw):
    """Numeric columns with NaN and ties, a string column, cut into 1-8 partitions."""
    n = draw(st.integers(2, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.normal(size=n)
    b = rng.integers(0, draw(st.integers(1, 6)), n).astype(np.float64)
    for col in (a, b):
        col[rng.random(n) < draw(st.sampled_from([0.0, 0.3]))] = np.nan
        col[draw(st.integers(0, n - 1))] = rng.normal()  # an observed value in every column
    pdf = pd.DataFrame({"a": a, "b": b, "s": pd.array(rng.choice(["p", "q", None], n), "str")})
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=7)))
    bounds = [0, *cuts, n]
    tag = uuid.uuid4().hex  # explicit keys: two empty slices must stay two partitions
    pieces = [
        dask.delayed(pdf.iloc[lo:hi], name=f"chunk-{tag}-{i}")
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds))
    ]
    return pdf, dd.from_delayed(pieces, meta=pdf.iloc[:0])


@pytest.mark.parametrize("output", ["normal", "uniform"])
@settings(max_examples=40, deadline=None)
@given(data=small_frames())
def test_any_partitioning_matches_sklearn(output, data):
    pdf, ddf = data
    tp = TabularPreprocessor(numeric=f"quantile_{output}", min_frequency=1).fit(ddf)
    X = pdf[["a", "b"]].to_numpy()
    imputer = SimpleImputer(strategy="median", add_indicator=True).fit(X)
    qt = QuantileTransformer(n_quantiles=len(pdf), subsample=None, output_distribution=output)
    qt.fit(X)
    want = np.concatenate(
        [qt.transform(imputer.transform(X)[:, :2]), imputer.transform(X)[:, 2:]], axis=1
    )
    out = tp.transform(ddf).compute()
    n_num = 2 + len(tp.indicator_features_)
    assert_float32_close(out.to_numpy()[:, :n_num], want)


@pytest.mark.parametrize("numeric", ["quantile_normal", "standard", "ple"])
def test_lazy_transform_declares_the_meta_its_partitions_have(numeric):
    """The dask result's meta (built directly, not by transforming an empty frame) is the
    empty frame the transform gives, and what a computed partition looks like."""
    import functools

    from pipeline.tabular_partition import frame_partition
    from pipeline.tabular_prep import _output_meta

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=200), "g": rng.choice(["x", "y", "z"], size=200),
                       "c": rng.integers(0, 5, size=200)})
    df.loc[[3, 7], "a"] = np.nan
    d = dd.from_pandas(df, npartitions=2)
    tp = TabularPreprocessor(numeric=numeric, n_bins=4).fit(d)
    names = tuple(str(n) for n in tp.get_feature_names_out())
    func = functools.partial(frame_partition, plan=tp._plan(), names=names)
    pd.testing.assert_frame_equal(_output_meta(d._meta, names, func), func(d._meta))
    out = tp.transform(d)
    pd.testing.assert_frame_equal(out._meta, out.partitions[0].compute().iloc[:0])
