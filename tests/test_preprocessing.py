"""Preprocessor and train_test_split. Oracles: scikit-learn's SimpleImputer, StandardScaler and
OneHotEncoder on the concatenated data, and pandas."""

from __future__ import annotations

import itertools
import uuid

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.callbacks import Callback
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline.preprocessing import Preprocessor, train_test_split

EPS = np.finfo(np.float64).eps
NUMERIC = ["x", "const", "big", "k", "flag", "cnt"]
CITIES = ["Oslo", "Paris", "Rome", "Lima"]


@pytest.fixture(autouse=True, scope="module")
def _sync_scheduler():
    # Once the session `client` exists it is dask's default scheduler; these correctness tests
    # want the single-threaded one (fast, and hypothesis-friendly). The client test opts back in.
    with dask.config.set(scheduler="sync"):
        yield


class CountComputes(Callback):
    """Counts scheduler runs (one per dask.compute) and the keys executed."""

    def __init__(self):
        super().__init__()
        self.computes = 0
        self.keys = []

    def _start(self, dsk):
        self.computes += 1

    def _pretask(self, key, dsk, state):
        self.keys.append(key)


def partitioned(pdf: pd.DataFrame, cuts) -> dd.DataFrame:
    """``pdf`` cut at the row positions ``cuts`` (repeats give empty partitions)."""
    bounds = [0, *sorted(cuts), len(pdf)]
    chunks = [pdf.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    tag = uuid.uuid4().hex
    pieces = [dask.delayed(c, name=f"chunk-{tag}-{i}") for i, c in enumerate(chunks)]
    return dd.from_delayed(pieces, meta=pdf.iloc[:0])


def with_missing(values, mask):
    out = np.asarray(values, dtype=np.float64).copy()
    out[mask] = np.nan
    return out


@st.composite
def frames(draw, max_rows=30):
    """Mixed frames with NaNs, a constant column, a column at 1e8 + noise, ints, bools, a
    nullable Int64 column, a string column with missing values, and a label; plus cut points."""
    n = draw(st.integers(1, max_rows))
    ints = st.lists(st.integers(-64_000, 64_000), min_size=n, max_size=n)
    masks = st.lists(st.booleans(), min_size=n, max_size=n)

    def masked():
        mask = np.array(draw(masks))
        mask[draw(st.integers(0, n - 1))] = False  # every column keeps an observed value
        return mask

    const = draw(st.sampled_from([0.0, 1.5, -3.25, 1e8]))
    city = np.array(draw(st.lists(st.sampled_from(CITIES), min_size=n, max_size=n)), dtype=object)
    city[masked() & np.array(draw(masks))] = None
    cnt = pd.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype="Int64")
    cnt[masked() & np.array(draw(masks))] = pd.NA
    pdf = pd.DataFrame(
        {
            # Multiples of 1/64 (and of 1e-3 near 1e8): exact inputs, and any two distinct
            # values differ far above rounding, so "is this column constant" is never borderline.
            "x": with_missing(np.array(draw(ints)) / 64, masked()),
            "const": with_missing(np.full(n, const), masked()),
            "big": with_missing(1e8 + np.array(draw(ints)) * 1e-3 / 64, masked()),
            "k": np.array(
                draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int64
            ),
            "flag": np.array(draw(masks), dtype=bool),
            "cnt": cnt,
            "city": pd.array(city, dtype="str"),
            "y": np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))),
        }
    )
    n_parts = draw(st.integers(1, 8))
    cuts = draw(st.lists(st.integers(0, n), min_size=n_parts - 1, max_size=n_parts - 1))
    return pdf, cuts


def numeric_oracle(pdf, impute, fill_value=None):
    X = pdf[NUMERIC].to_numpy(dtype=np.float64, na_value=np.nan)
    steps = []
    if impute == "constant":
        steps.append(SimpleImputer(strategy="constant", fill_value=fill_value or 0.0))
    elif impute is not None:
        steps.append(SimpleImputer(strategy=impute))
    steps.append(StandardScaler())
    pipe = make_pipeline(*steps).fit(X)
    return X, pipe, pipe.transform(X)


def categorical_oracle(train, test, impute):
    def as_object(frame):
        col = frame[["city"]].astype(object)
        return col.where(col.notna(), np.nan).to_numpy()

    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    if impute is None:
        fit_rows = as_object(train)
        encoder.fit(fit_rows[~pd.isna(fit_rows[:, 0])])
        return encoder.get_feature_names_out(["city"]), encoder.transform(as_object(test))
    kw = {"fill_value": "missing"} if impute == "constant" else {}
    pipe = make_pipeline(SimpleImputer(strategy=impute, **kw), encoder).fit(as_object(train))
    return encoder.get_feature_names_out(["city"]), pipe.transform(as_object(test))


def assert_close(actual, desired, atol, rtol=1e-9):
    """``assert_allclose`` with a per-column ``atol`` (NaN must match NaN)."""
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(desired))
    err = np.where(np.isnan(desired), 0.0, np.abs(actual - desired) - rtol * np.abs(desired))
    assert (err <= atol).all(), f"max error {err.max(axis=0)} > tolerance {atol}"


def rounding_floor(X):
    """Per column, a few ulps of max|x|: how far two correct float64 means can differ. That
    shifts standardized values by ``floor / scale`` and the variance by about ``floor**2``
    (at 1e8 + noise one ulp is ~1.5e-8, so this is the honest limit, not algorithmic slack)."""
    return 16 * EPS * np.nanmax(np.abs(X), axis=0)


# --------------------------------------------------------------------------------------------
# Matches scikit-learn on any partitioning
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impute", ["mean", "median", "constant", "most_frequent", None])
@settings(max_examples=25, deadline=None)
@given(data=frames())
def test_numeric_matches_sklearn_on_any_partitioning(impute, data):
    pdf, cuts = data
    ddf = partitioned(pdf, cuts)
    pre = Preprocessor(label="y", categorical=["city"], impute=impute, fill_value=2.5).fit(ddf)
    X, pipe, expected = numeric_oracle(pdf, impute, fill_value=2.5)
    scaler = pipe[-1]

    out = pre.transform(ddf).compute()
    assert list(out.columns) == list(pre.get_feature_names_out())
    assert (out.dtypes == np.float64).all()
    floor = rounding_floor(X)
    assert_close(out[NUMERIC].to_numpy(), expected, atol=floor / scaler.scale_)
    assert_close(pre.mean_, scaler.mean_, atol=floor, rtol=1e-12)
    assert_close(pre.var_, scaler.var_, atol=floor**2)
    assert_close(pre.scale_**2, scaler.scale_**2, atol=floor**2)
    np.testing.assert_array_equal(pre.n_samples_seen_, scaler.n_samples_seen_)
    if impute is not None:
        np.testing.assert_allclose(pre.statistics_, pipe[0].statistics_.astype(float), rtol=1e-12)
    np.testing.assert_array_equal(pre.n_missing_, np.isnan(X).sum(axis=0))
    np.testing.assert_array_equal(pre.data_min_, np.nanmin(X, axis=0))
    np.testing.assert_array_equal(pre.data_max_, np.nanmax(X, axis=0))
    np.testing.assert_array_equal(pre.classes_, np.unique(pdf["y"]))
    assert pre.n_rows_ == len(pdf)


@pytest.mark.parametrize("impute", ["mean", "median", None])
@settings(max_examples=20, deadline=None)
@given(data=frames())
def test_add_indicator_matches_simple_imputer(impute, data):
    pdf, cuts = data
    pre = Preprocessor(label="y", categorical=["city"], impute=impute, add_indicator=True)
    pre.fit(partitioned(pdf, cuts))
    X = pdf[NUMERIC].to_numpy(dtype=np.float64, na_value=np.nan)
    # SimpleImputer needs a strategy to add indicators; with impute=None only its indicator
    # half is compared.
    imputer = SimpleImputer(strategy=impute or "mean", add_indicator=True).fit(X)
    names = list(imputer.get_feature_names_out(NUMERIC))
    expected = imputer.transform(X)
    n_ind = len(names) - len(NUMERIC)

    # Rows with missing values where the fit had none get no new column (error_on_new=False).
    test = pdf.copy()
    test.loc[test.index[0], NUMERIC[:3]] = np.nan
    X_test = test[NUMERIC].to_numpy(dtype=np.float64, na_value=np.nan)
    out = pre.transform(partitioned(test, cuts)).compute()
    cols = list(out.columns)
    assert cols[: len(names)] == names  # numeric, then missingindicator_<column>, in order
    assert all(c.startswith("city_") for c in cols[len(names):])
    assert pre.indicator_features_ == [n.removeprefix("missingindicator_") for n in names[6:]]
    np.testing.assert_array_equal(
        out[names[len(NUMERIC):]].to_numpy(), imputer.transform(X_test)[:, len(NUMERIC):]
    )
    np.testing.assert_array_equal(out[names[len(NUMERIC):]].to_numpy()[1:], expected[1:, 6:])
    assert n_ind == int((np.isnan(X).sum(axis=0) > 0).sum())
    # The numeric block is the same as without indicators.
    plain = Preprocessor(label="y", categorical=["city"], impute=impute).fit(partitioned(pdf, cuts))
    np.testing.assert_array_equal(
        out[NUMERIC].to_numpy(), plain.transform(partitioned(test, cuts)).compute()[NUMERIC]
    )


@pytest.mark.parametrize("impute", ["most_frequent", "constant", None])
@settings(max_examples=15, deadline=None)
@given(data=frames())
def test_categorical_matches_one_hot_encoder(impute, data):
    pdf, cuts = data
    pre = Preprocessor(label="y", categorical=["city"], categorical_impute=impute)
    pre.fit(partitioned(pdf, cuts))
    # Rows the fit never saw: an unknown city and a missing one.
    unseen = pdf.iloc[:1].copy()
    unseen = pd.concat([unseen, unseen], ignore_index=True)
    unseen["city"] = pd.array(["Atlantis", None], dtype="str")
    test = pd.concat([pdf, unseen], ignore_index=True)

    names, expected = categorical_oracle(pdf, test, impute)
    out = pre.transform(partitioned(test, cuts)).compute()
    cat_names = [c for c in out.columns if c.startswith("city_")]
    assert cat_names == list(names)
    np.testing.assert_array_equal(out[cat_names].to_numpy(), expected)
    assert out.loc[len(pdf), cat_names].sum() == 0  # unknown category -> all zeros


@settings(max_examples=20, deadline=None)
@given(data=frames())
def test_inverse_transform_round_trips_numeric(data):
    pdf, cuts = data
    pdf = pdf.drop(columns=["city"]).assign(
        x=lambda d: d["x"].fillna(0.5),
        const=lambda d: d["const"].fillna(d["const"].max()),
        big=lambda d: d["big"].fillna(1e8),
        cnt=lambda d: d["cnt"].fillna(1),
    )
    ddf = partitioned(pdf, cuts)
    pre = Preprocessor(label="y").fit(ddf)
    back = pre.inverse_transform(pre.transform(ddf))
    assert isinstance(back, dd.DataFrame)
    back = back.compute()
    X = pdf[NUMERIC].to_numpy(dtype=np.float64)
    assert list(back.columns) == NUMERIC
    np.testing.assert_allclose(back.to_numpy(), X, rtol=1e-12, atol=8 * EPS * np.abs(X).max())


@settings(max_examples=15, deadline=None)
@given(data=frames(), split_every=st.integers(2, 5))
def test_partial_fit_on_two_parts_equals_fit_on_all(data, split_every):
    pdf, cuts = data
    half = len(pdf) // 2
    first, second = pdf.iloc[:half], pdf.iloc[half:]
    params = {"label": "y", "categorical": ["city"], "impute": "most_frequent"}
    # Each part must be fittable on its own (an observed value in every column).
    assume(half > 0 and first.notna().any().all() and second.notna().any().all())
    full = Preprocessor(split_every=split_every, **params).fit(partitioned(pdf, cuts))
    inc = Preprocessor(**params).fit(dd.from_pandas(first, npartitions=2))
    assert inc.partial_fit(partitioned(second, [1])) is inc
    for attr in ("mean_", "var_", "scale_", "statistics_", "data_min_", "data_max_"):
        np.testing.assert_allclose(getattr(inc, attr), getattr(full, attr), rtol=1e-12)
    for a, b in zip(inc.categories_, full.categories_, strict=True):
        np.testing.assert_array_equal(a, b)
    assert inc.n_rows_ == full.n_rows_ == len(pdf)
    np.testing.assert_array_equal(inc.classes_, full.classes_)


# --------------------------------------------------------------------------------------------
# One pass, lazy, no mutation
# --------------------------------------------------------------------------------------------


def make_frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(5, 2, n),
            "b": np.where(rng.random(n) < 0.2, np.nan, rng.normal(-1, 0.1, n)),
            "city": pd.array(rng.choice(["Paris", "Oslo", "Rome"], n), dtype="str"),
            "y": rng.integers(0, 2, n),
        }
    )


def test_fit_is_one_pass(monkeypatch):
    pdf = make_frame()
    ddf = partitioned(pdf, [0, 50, 50, 51, 120])  # 6 partitions, two of them empty
    calls = []
    original = dd.DataFrame.to_delayed

    def counting_to_delayed(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(dd.DataFrame, "to_delayed", counting_to_delayed)
    with CountComputes() as counter:
        pre = Preprocessor(
            label="y", categorical=["city"], split_every=2, impute="median", add_indicator=True
        ).fit(ddf)
    assert counter.computes == 1
    assert len(calls) == 1
    names = [k[0].rsplit("-", 1)[0] for k in counter.keys if isinstance(k, tuple)]
    assert names.count("preprocess-partial_stats") == ddf.npartitions == 6
    assert names.count("preprocess-merge_stats") == 3 + 2 + 1  # a fan-in-2 tree over 6 leaves
    assert pre.n_rows_ == len(pdf)


def test_transform_is_lazy_and_does_not_mutate():
    pdf = make_frame()
    before = pdf.copy(deep=True)
    ddf = dd.from_pandas(pdf, npartitions=3)
    pre = Preprocessor(label="y", categorical=["city"]).fit(ddf)
    with CountComputes() as counter:
        out = pre.transform(ddf)
        X, y = pre.transform_xy(ddf)
    assert counter.computes == 0
    assert isinstance(out, dd.DataFrame) and isinstance(X, dd.DataFrame)
    assert isinstance(y, dd.Series)
    assert out.npartitions == 3
    assert list(out.columns) == ["a", "b", "city_Oslo", "city_Paris", "city_Rome"]
    assert "y" not in out.columns
    computed = out.compute()
    pd.testing.assert_index_equal(computed.index, pdf.index)
    pd.testing.assert_series_equal(y.compute(), pdf["y"])
    pd.testing.assert_frame_equal(pdf, before)


def test_pandas_in_pandas_out_and_duplicate_index():
    pdf = make_frame(20).set_axis([0] * 20)  # duplicate index labels
    pre = Preprocessor(label="y", categorical=["city"]).fit(pdf)
    out = pre.transform(pdf)
    assert isinstance(out, pd.DataFrame)
    assert (out.index == 0).all() and len(out) == 20
    lazy = pre.transform(dd.from_pandas(pdf, npartitions=2)).compute()
    np.testing.assert_array_equal(out.to_numpy(), lazy.to_numpy())


def test_category_dtype_is_categorical_and_bool_is_numeric():
    pdf = make_frame(50).assign(
        city=lambda d: d["city"].astype("category"), flag=lambda d: d["a"] > 5
    )
    pre = Preprocessor(label="y").fit(dd.from_pandas(pdf, npartitions=2))
    assert pre.numeric_features_ == ["a", "b", "flag"]
    assert pre.categorical_features_ == ["city"]
    np.testing.assert_array_equal(pre.categories_[0], np.array(["Oslo", "Paris", "Rome"]))
    out = pre.transform(pdf.iloc[:5])
    expected = pd.get_dummies(pdf["city"].iloc[:5].astype(str), prefix="city", dtype=float)
    pd.testing.assert_frame_equal(out[expected.columns], expected, check_names=False)
    np.testing.assert_array_equal(
        out["flag"], (pdf["flag"].iloc[:5] - pre.mean_[2]) / pre.scale_[2]
    )


def test_scale_false_imputes_only():
    pdf = make_frame(60)
    pre = Preprocessor(label="y", categorical=["city"], scale=False).fit(pdf)
    assert pre.scale_ is None
    expected = SimpleImputer(strategy="mean").fit_transform(pdf[["a", "b"]])
    np.testing.assert_allclose(pre.transform(pdf)[["a", "b"]].to_numpy(), expected, rtol=1e-12)


def test_sklearn_estimator_contract():
    pre = Preprocessor(label="y", categorical=["city"], impute="constant", fill_value=1.0)
    copy = clone(pre)
    assert copy.get_params() == pre.get_params()
    assert copy.set_params(impute="mean") is copy and copy.impute == "mean"
    with pytest.raises(Exception, match="not fitted"):
        pre.transform(make_frame(5))
    assert pre.fit(make_frame()) is pre
    assert not hasattr(clone(pre), "mean_")
    assert list(pre.fit_transform(make_frame()).columns) == list(pre.get_feature_names_out())
    with pytest.raises(ValueError, match="differ from the fitted"):
        pre.get_feature_names_out(["z"])


def test_label_classes_and_continuous_labels():
    pdf = make_frame(100)
    assert Preprocessor(label="y", categorical=["city"]).fit(pdf).classes_.tolist() == [0, 1]
    reg = Preprocessor(label="a", categorical=["city"], numeric=["b"], max_categories=10)
    reg.fit(dd.from_pandas(pdf, npartitions=4))
    assert reg.classes_ is None
    with pytest.raises(ValueError, match="'a' has more than max_categories=10"):
        reg.check_classification_target()


# --------------------------------------------------------------------------------------------
# Errors name what is wrong
# --------------------------------------------------------------------------------------------


def test_missing_label_names_it_and_lists_columns():
    with pytest.raises(ValueError, match=r"'target'.*available columns.*'city'"):
        Preprocessor(label="target", categorical=["city"]).fit(make_frame())


def test_missing_declared_column():
    with pytest.raises(ValueError, match=r"\['town'\] not found"):
        Preprocessor(label="y", categorical=["town"]).fit(make_frame())


def test_undeclared_string_column_names_it():
    with pytest.raises(ValueError, match=r"'city'.*categorical="):
        Preprocessor(label="y").fit(make_frame())


def test_empty_dataset():
    pdf = make_frame().iloc[:0]
    with pytest.raises(ValueError, match="empty dataset"):
        Preprocessor(label="y", categorical=["city"]).fit(partitioned(pdf, [0, 0]))


def test_single_class_only_with_classification_task():
    pdf = make_frame().assign(y=7)
    params = {"label": "y", "categorical": ["city"]}
    Preprocessor(**params).fit(pdf)  # task=None: a constant label is not an error
    with pytest.raises(ValueError, match=r"label 'y' has a single class \(7\)"):
        Preprocessor(task="classification", **params).fit(pdf)
    with pytest.raises(ValueError, match="single class"):
        Preprocessor(**params).fit(pdf).check_classification_target()


def test_too_many_categories_names_column_and_count():
    pdf = pd.DataFrame({"id": [f"u{i}" for i in range(12)], "v": np.arange(12.0)})
    with pytest.raises(ValueError, match=r"'id' has more than max_categories=5.*at least 12"):
        Preprocessor(categorical=["id"], max_categories=5).fit(pdf)
    with pytest.raises(ValueError, match=r"'id' has more than max_categories=5"):
        Preprocessor(categorical=["id"], max_categories=5).fit(dd.from_pandas(pdf, npartitions=4))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"impute": "mode"}, "impute must be one of"),
        ({"categorical": "city"}, r"categorical=\['city'\]"),
        ({"numeric": ["a", "city"], "categorical": ["city"]}, "both numeric and categorical"),
        ({"numeric": ["a", "y"], "categorical": ["city"]}, "label column 'y' cannot"),
        ({"split_every": 1, "categorical": ["city"]}, "split_every"),
        ({"task": "regression", "label": "city", "numeric": ["a"]}, "numeric label"),
    ],
)
def test_invalid_parameters(params, match):
    params = {"label": "y", **params}
    with pytest.raises((ValueError, TypeError), match=match):
        Preprocessor(**params).fit(make_frame(10))


def test_missing_labels_and_all_missing_columns_are_errors():
    pdf = make_frame(10)
    with pytest.raises(ValueError, match="label column 'y' has 1 missing"):
        Preprocessor(label="y", categorical=["city"]).fit(pdf.assign(y=[None] + [1.0] * 9))
    with pytest.raises(ValueError, match="'b' has no non-missing values"):
        Preprocessor(label="y", categorical=["city"]).fit(pdf.assign(b=np.nan))
    pre = Preprocessor(label="y", categorical=["city"], impute="constant").fit(pdf.assign(b=np.nan))
    assert pre.transform(pdf.assign(b=np.nan))["b"].eq(0.0).all()


# --------------------------------------------------------------------------------------------
# train_test_split
# --------------------------------------------------------------------------------------------


def rows_frame(n=10_000, seed=1):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"id": np.arange(n), "v": rng.normal(size=n), "label": rng.integers(0, 2, n)}
    )


def ids(frame) -> set[int]:
    return set(frame["id"].compute().tolist())


def test_split_is_disjoint_covering_and_partitioning_independent():
    pdf = rows_frame()
    results = []
    for nparts in (1, 3, 7):
        ddf = dd.from_pandas(pdf.sample(frac=1.0, random_state=nparts), npartitions=nparts)
        with CountComputes() as counter:
            parts = train_test_split(ddf, test_size=0.1, valid_size=0.2, random_state=3)
        assert counter.computes == 0
        assert all(isinstance(p, dd.DataFrame) and p.npartitions == nparts for p in parts)
        results.append([ids(p) for p in parts])
    train, valid, test = results[0]
    assert train | valid | test == set(range(len(pdf)))
    assert not (train & valid or train & test or valid & test)
    assert results[1] == results[0] and results[2] == results[0]
    n = len(pdf)
    assert abs(len(test) / n - 0.1) < 0.015  # ~5 standard deviations of a binomial
    assert abs(len(valid) / n - 0.2) < 0.02


def test_split_random_state_and_pandas_input():
    pdf = rows_frame(2_000)
    train_a, test_a = train_test_split(pdf, random_state=0)
    _, test_b = train_test_split(pdf, random_state=1)
    assert isinstance(test_a, pd.DataFrame)
    assert set(test_a["id"]) != set(test_b["id"])
    assert len(train_a) + len(test_a) == len(pdf)
    _, lazy_test = train_test_split(dd.from_pandas(pdf, npartitions=4), random_state=0)
    assert ids(lazy_test) == set(test_a["id"])


def test_identical_rows_land_in_the_same_split():
    pdf = rows_frame(300).drop(columns="id")
    doubled = pd.concat([pdf, pdf, pdf], ignore_index=True)
    _, test = train_test_split(dd.from_pandas(doubled, npartitions=5), test_size=0.3)
    counts = test.compute().value_counts()
    assert len(counts) > 0 and (counts == 3).all()


def test_stratify_keeps_class_proportions_in_expectation():
    pdf = rows_frame()
    _, test = train_test_split(dd.from_pandas(pdf, npartitions=3), test_size=0.25, stratify="label")
    share = test.compute(scheduler="sync")["label"].value_counts() / pdf["label"].value_counts()
    assert np.all(np.abs(share - 0.25) < 0.03)
    with pytest.raises(ValueError, match=r"\['nope'\] not found"):
        train_test_split(pdf, stratify="nope")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"test_size": 0.0}, "test_size must be in"),
        ({"test_size": 1.5}, "test_size must be in"),
        ({"test_size": 0.5, "valid_size": 0.5}, "must be < 1"),
        ({"valid_size": -0.1}, "valid_size must be in"),
        ({"random_state": None}, "random_state must be an int"),
    ],
)
def test_split_validates_sizes(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        train_test_split(rows_frame(10), **kw)


# --------------------------------------------------------------------------------------------
# Distributed: same bits as the synchronous scheduler
# --------------------------------------------------------------------------------------------


def test_distributed_fit_transform_and_split_match_sync(client):
    pdf = make_frame(2_000)
    ddf = dd.from_pandas(pdf, npartitions=6)
    params = {"label": "y", "categorical": ["city"], "split_every": 3}
    local = Preprocessor(**params).fit(ddf)
    local_out = local.transform(ddf).compute()
    local_test = train_test_split(ddf, test_size=0.2)[1].compute()
    with dask.config.set(scheduler=client):
        remote = Preprocessor(**params).fit(ddf)
        remote_out = remote.transform(ddf).compute()
        remote_test = train_test_split(ddf, test_size=0.2)[1].compute()
    # The tree pairs partials by position, so the statistics are bitwise those of the sync run.
    for attr in ("mean_", "var_", "scale_", "statistics_"):
        np.testing.assert_array_equal(getattr(remote, attr), getattr(local, attr))
    pd.testing.assert_frame_equal(remote_out, local_out)
    pd.testing.assert_frame_equal(remote_test, local_test)


def test_hash_mixing_works_on_any_array_namespace_and_device():
    # array_api_strict on a non-default device stands in for CuPy (cuDF's hashes are CuPy).
    xps = pytest.importorskip("array_api_strict", reason="array_api_strict not installed")
    from pipeline.splitting import _splitmix64, _splitmix64_array

    values = [0, 1, 2**63, 2**64 - 1, 12_345_678_901_234_567]
    expected = [_splitmix64(v) for v in values]
    assert _splitmix64_array(np.asarray(values, dtype=np.uint64)).tolist() == expected
    on_device = xps.asarray(values, dtype=xps.uint64, device=xps.Device("device1"))
    mixed = _splitmix64_array(on_device)
    assert mixed.device == on_device.device
    assert np.asarray(mixed.to_device(xps.Device("CPU_DEVICE"))).tolist() == expected


def test_transform_refuses_a_schema_change():
    import dask

    df = pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [1.0, 2, 3, 5], "y": [0, 1, 0, 1]})
    with dask.config.set(scheduler="sync"):
        prep = Preprocessor(label="y").fit(dd.from_pandas(df, npartitions=2))
        with pytest.raises(ValueError, match=r"'b': .*not numeric here"):
            prep.transform(dd.from_pandas(df.assign(b=["q"] * 4), npartitions=2))


def test_median_on_many_distinct_values_is_within_the_stated_rank_error():
    from pipeline.sketch import DEFAULT_SKETCH_SIZE, rank_error_bound

    rng = np.random.default_rng(3)
    n = 3 * DEFAULT_SKETCH_SIZE
    x = rng.lognormal(size=n)
    x[rng.random(n) < 0.1] = np.nan
    pdf = pd.DataFrame({"x": x, "y": rng.integers(0, 2, n)})
    ddf = dd.from_pandas(pdf, npartitions=6)
    pre = Preprocessor(label="y", impute="median", split_every=2).fit(ddf)
    exact = SimpleImputer(strategy="median").fit(x[:, None]).statistics_[0]
    data = np.sort(x[~np.isnan(x)])
    e = pre.rank_error_[0]
    assert 0 < e <= rank_error_bound(data.size, DEFAULT_SKETCH_SIZE, 6, 2)
    h = (data.size - 1) / 2
    lo, hi = int(np.floor(h) - e), int(np.floor(h) + 1 + e)
    assert data[max(lo, 0)] <= pre.statistics_[0] <= data[min(hi, data.size - 1)]
    assert pre.statistics_[0] != exact  # the approximate regime is really exercised


def test_distributed_median_matches_sync_in_the_approximate_regime(client):
    from pipeline.sketch import DEFAULT_SKETCH_SIZE

    rng = np.random.default_rng(4)
    n = 2 * DEFAULT_SKETCH_SIZE
    pdf = pd.DataFrame({"x": rng.normal(size=n), "y": rng.integers(0, 2, n)})
    ddf = dd.from_pandas(pdf, npartitions=5)
    params = {"label": "y", "impute": "median", "split_every": 2}
    local = Preprocessor(**params).fit(ddf)
    with dask.config.set(scheduler=client):
        remote = Preprocessor(**params).fit(ddf)
    assert local.rank_error_[0] > 0
    np.testing.assert_array_equal(remote.statistics_, local.statistics_)
    np.testing.assert_array_equal(remote.rank_error_, local.rank_error_)
