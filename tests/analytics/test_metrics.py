"""analytics.metrics against sklearn.metrics on the concatenated data (the oracle).

Inputs are split into partitions of arbitrary sizes (empty ones included) as Dask Arrays, Dask
Series or plain NumPy; results, raised exception types and emitted warnings must equal sklearn's.
"""

from __future__ import annotations

import functools
import itertools
import warnings

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import UndefinedMetricWarning

from analytics import metric_graph, metrics

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Building partitioned inputs
# --------------------------------------------------------------------------------------------


@st.composite
def partition_sizes(draw, n):
    """Sizes of 1-6 partitions summing to n; empty partitions are likely."""
    k = draw(st.integers(1, 6))
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=k - 1, max_size=k - 1)))
    return tuple(int(b - a) for a, b in zip([0, *cuts], [*cuts, n], strict=True))


def as_collection(values, sizes, kind):
    values = np.asarray(values)
    if kind == "numpy":
        return values
    if kind == "array":
        return da.from_array(values, chunks=(sizes, *((s,) for s in values.shape[1:])))
    if kind == "rechunked":  # different chunks than y_true: rechunked to y_true's
        return da.from_array(values, chunks=max(1, values.shape[0] // 3 + 1))
    if kind == "series":
        starts = np.cumsum([0, *sizes])
        pieces = [pd.Series(values[a:b]) for a, b in itertools.pairwise(starts)]
        meta = pd.Series(values[:0])
        return dd.from_delayed([dask.delayed(p) for p in pieces], meta=meta, verify_meta=False)
    raise AssertionError(kind)


@st.composite
def containers(draw):
    """Kinds for (y_true, y_other, sample_weight) that can be row-aligned."""
    true = draw(st.sampled_from(["array", "series", "numpy"]))
    other = draw(st.sampled_from(["array", "series", "numpy"]))
    if true == "array" and other == "array" and draw(st.booleans()):
        other = "rechunked"
    weight = draw(st.sampled_from(["array", "numpy"] if true != "series" else ["numpy"]))
    return true, other, weight


def outcome(fn, *args, **kwargs):
    """(result, exception type, sorted warnings) of a call, warnings recorded not raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = fn(*args, **kwargs), None
        except (ValueError, TypeError, ZeroDivisionError) as exc:
            result, error = None, type(exc)
    messages = sorted({(w.category.__name__, str(w.message)) for w in caught})
    return result, error, messages


def assert_same(ours, theirs, rtol=1e-10):
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys()
        for key in theirs:
            assert_same(ours[key], theirs[key], rtol)
    elif isinstance(theirs, tuple | list):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert_same(a, b, rtol)
    elif theirs is None:
        assert ours is None
    else:
        a, b = np.asarray(ours), np.asarray(theirs)
        assert a.shape == b.shape
        if b.dtype.kind in "iub":
            assert a.dtype.kind in "iub" and a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, equal_nan=True)


def check_against_sklearn(name, args, oracle_args, **kwargs):
    ours = outcome(getattr(metrics, name), *args, **kwargs)
    if name == "classification_summary":
        oracle = functools.partial(skm.classification_report, output_dict=True)
    else:
        oracle = getattr(skm, name)
    theirs = outcome(oracle, *oracle_args, **kwargs)
    assert ours[1] == theirs[1], (name, kwargs, ours, theirs)
    assert ours[2] == theirs[2], (name, kwargs)
    if theirs[1] is None:
        assert_same(ours[0], theirs[0])


# --------------------------------------------------------------------------------------------
# Confusion-matrix metrics
# --------------------------------------------------------------------------------------------


@st.composite
def classification_data(draw):
    n = draw(st.integers(1, 40))
    sizes = draw(partition_sizes(n))
    n_classes = draw(st.integers(2, 4))
    # y_true draws from a subset of the classes, so some classes are absent from it
    true_classes = draw(st.integers(1, n_classes))
    y_true = np.array(draw(st.lists(st.integers(0, true_classes - 1), min_size=n, max_size=n)))
    y_pred = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)))
    if draw(st.booleans()):
        names = np.array(["cat", "dog", "eel", "fox"], dtype=object)
        y_true, y_pred = names[y_true], names[y_pred]
    weight = None
    if draw(st.booleans()):
        weight = np.array(draw(st.lists(st.floats(0.0, 3.0), min_size=n, max_size=n)))
    return sizes, y_true, y_pred, weight, draw(containers())


@SETTINGS
@given(
    data=classification_data(),
    zero_division=st.sampled_from(["warn", 0.0, 1.0, np.nan]),
    average=st.sampled_from(["micro", "macro", "weighted", None, "binary"]),
    name=st.sampled_from(["precision_score", "recall_score", "f1_score"]),
)
def test_confusion_metrics_match_sklearn(data, zero_division, average, name):
    sizes, y_true, y_pred, _, (k_true, k_pred, _) = data
    t = as_collection(y_true, sizes, k_true)
    p = as_collection(y_pred, sizes, k_pred)
    args, oracle = (t, p), (y_true, y_pred)
    labels = sorted(set(y_true) | set(y_pred))

    check_against_sklearn("accuracy_score", args, oracle)
    check_against_sklearn("accuracy_score", args, oracle, normalize=False)
    check_against_sklearn("confusion_matrix", args, oracle)
    # a label list with an extra, absent class, in reverse order
    extra = "zebra" if isinstance(labels[0], str) else 9
    check_against_sklearn("confusion_matrix", args, oracle, labels=[extra, *labels[::-1]])
    kwargs = {"average": average, "zero_division": zero_division}
    if average == "binary":
        kwargs["pos_label"] = labels[-1]
    check_against_sklearn(name, args, oracle, **kwargs)
    check_against_sklearn(
        "precision_recall_fscore_support", args, oracle, beta=2.0, labels=labels[:2], **kwargs
    )
    check_against_sklearn("classification_summary", args, oracle, zero_division=zero_division)


@SETTINGS
@given(data=classification_data())
def test_weighted_confusion_metrics_match_sklearn(data):
    sizes, y_true, y_pred, weight, (k_true, k_pred, k_weight) = data
    if weight is None:
        weight = np.linspace(0.5, 2.0, y_true.shape[0])
    t = as_collection(y_true, sizes, k_true)
    p = as_collection(y_pred, sizes, k_pred)
    w = as_collection(weight, sizes, k_weight)
    oracle = {"sample_weight": weight}
    for name, kwargs in [
        ("accuracy_score", {"normalize": False}),
        ("confusion_matrix", {"normalize": "pred"}),
        ("precision_recall_fscore_support", {"zero_division": 1.0}),
        ("classification_summary", {"zero_division": 0.0}),
    ]:
        ours = outcome(getattr(metrics, name), t, p, sample_weight=w, **kwargs)
        sk_name = "classification_report" if name == "classification_summary" else name
        extra = {"output_dict": True} if name == "classification_summary" else {}
        theirs = outcome(getattr(skm, sk_name), y_true, y_pred, **oracle, **kwargs, **extra)
        assert ours[1:] == theirs[1:], name
        if theirs[1] is None:
            assert_same(ours[0], theirs[0])


def test_zero_division_warns_like_sklearn():
    y_true = da.from_array(np.array([0, 0, 1, 1]), chunks=2)
    y_pred = da.from_array(np.array([0, 0, 0, 0]), chunks=((1, 0, 3),))
    with pytest.warns(UndefinedMetricWarning, match="Precision is ill-defined"):
        assert metrics.precision_score(y_true, y_pred) == 0.0
    # explicit zero_division: the value, and no warning (warnings are errors here)
    assert metrics.precision_score(y_true, y_pred, zero_division=1.0) == 1.0
    assert metrics.precision_score(y_true, y_pred, zero_division=0.0) == 0.0


def test_continuous_y_pred_is_rejected_naming_the_partition():
    y_true = da.from_array(np.array([0, 1, 1, 0]), chunks=2)
    y_pred = da.from_array(np.array([0.0, 1.0, 0.5, 0.0]), chunks=2)
    with pytest.raises(ValueError, match="partition 1: y_pred holds non-integer floats"):
        metrics.accuracy_score(y_true, y_pred)


def test_misaligned_series_partitions_are_reported():
    a = as_collection(np.array([0, 1, 1, 0, 1]), (2, 3), "series")
    b = as_collection(np.array([0, 1, 1, 0, 1]), (3, 2), "series")
    with pytest.raises(ValueError, match=r"partition \d: inputs have different lengths"):
        metrics.accuracy_score(a, b)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        metrics.accuracy_score(da.from_array(np.arange(5), chunks=2), np.arange(4))


def test_one_compute_with_named_partials_and_small_root(monkeypatch):
    """Partials are named for the dashboard, merged by one tree and computed once; the root
    holds one entry per label pair, not per row."""
    calls = []
    compute = dask.compute

    def counting_compute(*args, **kwargs):
        calls.append({str(k) for a in args for k in dict(a.__dask_graph__())})
        return compute(*args, **kwargs)

    monkeypatch.setattr(dask, "compute", counting_compute)
    rng = np.random.default_rng(0)
    y_true = da.from_array(rng.integers(0, 3, 20_000), chunks=1_000)
    y_pred = da.from_array(rng.integers(0, 3, 20_000), chunks=1_000)
    metrics.f1_score(y_true, y_pred, average="macro")
    assert len(calls) == 1
    assert any(k.startswith("partition_pairs-") for k in calls[0])
    assert any("combine_pairs-" in k for k in calls[0])
    summary = metric_graph.pair_summary(y_true, y_pred, None, 8)
    assert summary.first.shape[0] <= 9 and summary.weight.sum() == 20_000


# --------------------------------------------------------------------------------------------
# Ranking metrics (binary)
# --------------------------------------------------------------------------------------------


@st.composite
def ranking_data(draw):
    n = draw(st.integers(1, 40))
    sizes = draw(partition_sizes(n))
    negative = draw(st.sampled_from([0, -1]))
    y_true = np.array(draw(st.lists(st.sampled_from([negative, 1]), min_size=n, max_size=n)))
    # few distinct values, so ties are common
    y_score = np.array(
        draw(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0]), min_size=n,
                      max_size=n))
    )  # fmt: skip
    y_score = y_score + draw(st.sampled_from([0.0, 1e-3])) * np.arange(n) % 3
    weight = None
    if draw(st.booleans()):  # integer-valued weights keep sklearn's collinearity test exact
        weight = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), float)
    return sizes, y_true, y_score, weight, draw(containers())


@SETTINGS
@given(data=ranking_data())
def test_ranking_metrics_match_sklearn(data):
    sizes, y_true, y_score, weight, (k_true, k_score, k_weight) = data
    t = as_collection(y_true, sizes, k_true)
    s = as_collection(y_score, sizes, k_score)
    w = None if weight is None else as_collection(weight, sizes, k_weight)
    args, oracle = (t, s), (y_true, y_score)
    for name, kwargs in [
        ("roc_curve", {}),
        ("roc_curve", {"drop_intermediate": False}),
        ("precision_recall_curve", {"pos_label": 1}),
        ("precision_recall_curve", {"pos_label": 1, "drop_intermediate": True}),
        ("roc_auc_score", {}),
        ("roc_auc_score", {"max_fpr": 0.5}),
        ("average_precision_score", {}),
    ]:
        ours = outcome(getattr(metrics, name), *args, sample_weight=w, **kwargs)
        theirs = outcome(getattr(skm, name), *oracle, sample_weight=weight, **kwargs)
        assert ours[1:] == theirs[1:], (name, kwargs, ours, theirs)
        if theirs[1] is None:
            assert_same(ours[0], theirs[0])


def test_auc_with_ties_and_string_labels_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.choice(np.array(["no", "yes"], dtype=object), 5_000)
    score = np.round(rng.random(5_000) + (y == "yes") * 0.3, 2)  # many ties
    t = as_collection(y, (1_000, 0, 2_500, 1_500), "series")
    s = as_collection(score, (1_000, 0, 2_500, 1_500), "array")
    assert metrics.roc_auc_score(t, s) == pytest.approx(skm.roc_auc_score(y, score), rel=1e-12)
    ours = metrics.roc_curve(t, s, pos_label="yes")
    assert_same(ours, skm.roc_curve(y, score, pos_label="yes"))


def test_binned_curves_are_points_of_the_exact_curve_and_auc_within_bound():
    rng = np.random.default_rng(2)
    n = 20_000
    y = rng.integers(0, 2, n)
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y)))
    t, s = da.from_array(y, chunks=3_000), da.from_array(score, chunks=3_000)
    max_bins = 16
    fpr_b, tpr_b, thr_b = metrics.roc_curve(t, s, max_bins=max_bins, drop_intermediate=False)
    fpr, tpr, thr = skm.roc_curve(y, score, drop_intermediate=False)
    exact_points = dict(zip(thr, zip(fpr, tpr, strict=True), strict=True))
    for point in zip(thr_b[1:], fpr_b[1:], tpr_b[1:], strict=True):
        assert exact_points[point[0]] == pytest.approx(point[1:], abs=1e-15)
    assert len(thr_b) <= max_bins + 1

    bins = np.clip(np.floor(score * max_bins), 0, max_bins - 1).astype(int)
    pos = np.bincount(bins, weights=y, minlength=max_bins)
    neg = np.bincount(bins, weights=1 - y, minlength=max_bins)
    bound = 0.5 * np.sum(pos * neg) / (pos.sum() * neg.sum())
    error = abs(metrics.roc_auc_score(t, s, max_bins=max_bins) - skm.roc_auc_score(y, score))
    assert 0 < error <= bound <= 0.5 * neg.max() / neg.sum()

    precision_b, recall_b, thr_pr = metrics.precision_recall_curve(t, s, max_bins=max_bins)
    precision, recall, thr_exact = skm.precision_recall_curve(y, score)
    exact_pr = dict(zip(thr_exact, zip(precision, recall, strict=False), strict=False))
    for th, p, r in zip(thr_pr, precision_b, recall_b, strict=False):
        assert exact_pr[th] == pytest.approx((p, r), abs=1e-15)


def test_single_class_auc_warns_like_sklearn():
    y_true = da.from_array(np.ones(6, dtype=int), chunks=2)
    y_score = da.from_array(np.linspace(0, 1, 6), chunks=2)
    with pytest.warns(UndefinedMetricWarning, match="Only one class is present"):
        assert np.isnan(metrics.roc_auc_score(y_true, y_score))


def test_multiclass_auc_raises_and_the_named_alternative_works():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 600)
    proba = rng.dirichlet([1, 1, 1], 600) + np.eye(3)[y] * 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    t, p = da.from_array(y, chunks=100), da.from_array(proba, chunks=(100, 3))
    with pytest.raises(NotImplementedError, match="one-vs-rest"):
        metrics.roc_auc_score(t, p)
    with pytest.raises(NotImplementedError, match="one-vs-rest"):
        metrics.roc_auc_score(t, p[:, 0])  # 1-D scores, three classes
    ovr = np.mean([metrics.roc_auc_score(t == c, p[:, c]) for c in range(3)])
    assert ovr == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"), rel=1e-12)


# --------------------------------------------------------------------------------------------
# log_loss
# --------------------------------------------------------------------------------------------


@st.composite
def proba_data(draw):
    n = draw(st.integers(1, 40))
    sizes = draw(partition_sizes(n))
    n_classes = draw(st.integers(2, 4))
    present = draw(st.integers(1, n_classes))
    y_true = np.array(draw(st.lists(st.integers(0, present - 1), min_size=n, max_size=n)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(n_classes), n)
    proba[rng.random(n) < 0.2, 0] = 0.0  # exact zeros: clipped to eps
    proba /= proba.sum(axis=1, keepdims=True)
    if n_classes == 2 and draw(st.booleans()):
        proba = proba[:, 1]  # 1-D: probability of the larger class
    weight = None
    if draw(st.booleans()):
        weight = rng.random(n) * 2
    labels = list(range(n_classes)) if draw(st.booleans()) else None
    return sizes, y_true, proba, weight, labels, draw(containers())


@SETTINGS
@given(data=proba_data(), normalize=st.booleans())
def test_log_loss_matches_sklearn(data, normalize):
    sizes, y_true, proba, weight, labels, (k_true, k_proba, k_weight) = data
    if proba.ndim == 2 and k_proba == "series":
        k_proba = "array"
    t = as_collection(y_true, sizes, k_true)
    p = as_collection(proba, sizes, k_proba)
    w = None if weight is None else as_collection(weight, sizes, k_weight)
    ours = outcome(metrics.log_loss, t, p, normalize=normalize, sample_weight=w, labels=labels)
    theirs = outcome(
        skm.log_loss, y_true, proba, normalize=normalize, sample_weight=weight, labels=labels
    )
    assert ours[1:] == theirs[1:], (ours, theirs)
    if theirs[1] is None:
        assert ours[0] == pytest.approx(theirs[0], rel=1e-10)


def test_log_loss_checks_like_sklearn():
    y = np.array([0, 1, 1, 0])
    p = np.array([[0.6, 0.4], [0.2, 0.9], [0.5, 0.5], [0.9, 0.1]])  # row 1 sums to 1.1
    t, dp = da.from_array(y, chunks=2), da.from_array(p, chunks=(2, 2))
    with pytest.warns(UserWarning, match="do not sum to one"):
        ours = metrics.log_loss(t, dp)
    with pytest.warns(UserWarning, match="do not sum to one"):
        assert ours == pytest.approx(skm.log_loss(y, p), rel=1e-12)
    with pytest.raises(ValueError, match="greater than 1"):
        metrics.log_loss(t, dp * 2)
    with pytest.raises(ValueError, match="only one label"):
        metrics.log_loss(da.zeros(4, chunks=2, dtype=int), dp[:, 1])


# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------


@st.composite
def regression_data(draw):
    n = draw(st.integers(1, 40))
    sizes = draw(partition_sizes(n))
    outputs = draw(st.sampled_from([None, 1, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (n,) if outputs is None else (n, outputs)
    offset = draw(st.sampled_from([0.0, 1e6]))  # a large mean tests the stable M2 merge
    y_true = rng.normal(size=shape) + offset
    constant = draw(st.booleans())
    if constant:
        y_true[:] = offset  # constant target: sklearn's edge cases
    y_pred = y_true + rng.normal(size=shape) * draw(st.sampled_from([0.0, 0.5]))
    # (sklearn's weighted mean of a constant is not always exact, so M2 would be noise there)
    weight = rng.random(n) * 2 if not constant and draw(st.booleans()) else None
    return sizes, y_true, y_pred, weight, draw(containers())


@SETTINGS
@given(data=regression_data())
def test_regression_metrics_match_sklearn(data):
    sizes, y_true, y_pred, weight, (k_true, k_pred, k_weight) = data
    if y_true.ndim == 2:
        k_true = "array" if k_true == "series" else k_true
        k_pred = "array" if k_pred == "series" else k_pred
    t = as_collection(y_true, sizes, k_true)
    p = as_collection(y_pred, sizes, k_pred)
    w = None if weight is None else as_collection(weight, sizes, k_weight)
    multioutputs = ["uniform_average", "raw_values"]
    if y_true.ndim == 2:
        multioutputs.append(np.arange(1, y_true.shape[1] + 1))
    for name in ("mean_squared_error", "root_mean_squared_error", "mean_absolute_error",
                 "r2_score"):  # fmt: skip
        for multioutput in multioutputs + (["variance_weighted"] if name == "r2_score" else []):
            kwargs = {"multioutput": multioutput}
            ours = outcome(getattr(metrics, name), t, p, sample_weight=w, **kwargs)
            theirs = outcome(getattr(skm, name), y_true, y_pred, sample_weight=weight, **kwargs)
            assert ours[1:] == theirs[1:], (name, ours, theirs)
            if theirs[1] is None:
                # r2 on a 1e6 offset: sklearn's own two-pass sums carry ~1e-10 relative error
                assert_same(ours[0], theirs[0], rtol=1e-7)
    ours = outcome(metrics.r2_score, t, p, sample_weight=w, force_finite=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        theirs = outcome(skm.r2_score, y_true, y_pred, sample_weight=weight, force_finite=False)
    assert ours[1:] == theirs[1:]
    if theirs[1] is None:
        assert_same(ours[0], theirs[0], rtol=1e-7)


# --------------------------------------------------------------------------------------------
# Plain in-memory inputs and the distributed scheduler
# --------------------------------------------------------------------------------------------


def test_in_memory_input_is_sliced_to_series_partitions_inside_the_graph():
    y_true = np.array([0, 1, 1, 0, 1, 1, 0])
    y_pred = as_collection(np.array([0, 1, 0, 0, 1, 1, 1]), (3, 0, 4), "series")
    weight = np.arange(1.0, 8.0)
    assert metrics.accuracy_score(y_true, y_pred, sample_weight=weight) == pytest.approx(
        skm.accuracy_score(y_true, [0, 1, 0, 0, 1, 1, 1], sample_weight=weight), rel=1e-12
    )
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        metrics.accuracy_score(y_true[:-1], y_pred)


@pytest.mark.parametrize(
    "partial, args",
    [
        (metrics.partition_pairs, ([0, 2, 1, 2, 2], [0, 1, 1, 2, 0], None)),
        (metrics.partition_pairs, ([0, 1, 1, 0, 1], [0.5, 0.2, 0.5, 0.9, 0.1], [1.0, 2, 0, 1, 1])),
        (metrics.partition_binned_scores, ([0, 1, 1, 0, 1], [0.5, 0.2, 0.5, 0.9, 0.1], None)),
        (metrics.partition_log_loss, ([0, 2, 1, 2, 2], np.full((5, 3), 1 / 3), [1.0, 2, 0, 1, 1])),
        (metrics.partition_regression, ([0.5, 0.2, 0.5, 0.9, 0.1], [0.4, 0.2, 0.7, 1, 0], None)),
    ],
)
def test_partials_run_on_any_array_namespace_and_device(partial, args):
    """array_api_strict on a non-default device stands in for CuPy: arrays created without
    the input's device, or NumPy-only calls, would fail here."""
    xps = pytest.importorskip("array_api_strict")
    extra = ("y_score",) if partial is metrics.partition_pairs and args[2] is not None else ()
    if partial is metrics.partition_binned_scores:
        extra = (4, 0.0, 1.0)
    host = [None if a is None else np.asarray(a) for a in args]
    strict = [None if a is None else xps.asarray(a, device=xps.Device("device1")) for a in host]
    assert_same(partial(0, *strict, *extra), partial(0, *host, *extra))


def test_numpy_and_pandas_inputs():
    y_true = pd.Series([0, 1, 2, 2, 1, 0])
    y_pred = np.array([0, 2, 2, 2, 1, 1])
    assert metrics.accuracy_score(y_true, y_pred) == skm.accuracy_score(y_true, y_pred)
    assert_same(
        metrics.confusion_matrix(list(y_true), y_pred), skm.confusion_matrix(y_true, y_pred)
    )
    assert metrics.r2_score([1.0, 2.0, 4.0], np.array([1.5, 2.0, 3.0])) == pytest.approx(
        skm.r2_score([1.0, 2.0, 4.0], [1.5, 2.0, 3.0]), rel=1e-12
    )


def test_metrics_through_the_distributed_client(client):
    rng = np.random.default_rng(4)
    n = 4_000
    y = rng.integers(0, 2, n)
    score = np.round(rng.random(n) * 0.7 + 0.3 * y, 3)
    t = as_collection(y, (1_000, 0, 1_500, 1_500), "series")
    s = as_collection(score, (1_000, 0, 1_500, 1_500), "array")
    pred = (score > 0.5).astype(int)
    assert metrics.roc_auc_score(t, s) == pytest.approx(skm.roc_auc_score(y, score), rel=1e-12)
    assert metrics.average_precision_score(t, s) == pytest.approx(
        skm.average_precision_score(y, score), rel=1e-12
    )
    # an array with other chunks than y_true's is rechunked to them
    t_array = da.from_array(y, chunks=1_000)
    pred_array = da.from_array(pred, chunks=700)
    assert_same(metrics.confusion_matrix(t_array, pred_array), skm.confusion_matrix(y, pred))
    assert metrics.log_loss(t, s) == pytest.approx(skm.log_loss(y, score), rel=1e-10)
    assert metrics.r2_score(s, da.from_array(y * 0.3, chunks=500)) == pytest.approx(
        skm.r2_score(score, y * 0.3), rel=1e-10
    )


# --- cuDF inputs and inputs on different devices ---------------------------------------------
# tests/fake_cudf.py stands in for cuDF (its device arrays are array_api_strict on "device1",
# which np.asarray refuses, as it refuses CuPy). String labels cannot live on a GPU: they come
# to the host and meet scores computed on the device.


def _dev1():
    xps = pytest.importorskip("array_api_strict")
    return xps, xps.Device("device1")


def test_cudf_string_labels_meet_device_scores():
    from fake_cudf import Series

    xps, dev = _dev1()
    rng = np.random.default_rng(5)
    y = rng.choice(np.array(["ham", "spam"], dtype=object), 40)
    score = np.round(rng.random(40) * 0.6 + 0.4 * (y == "spam"), 2)
    y_cudf, s_dev = Series(y, dev), xps.asarray(score, device=dev)
    assert metrics.roc_auc_score(y_cudf, s_dev) == pytest.approx(skm.roc_auc_score(y, score),
                                                                rel=1e-12)
    for ours, theirs in zip(metrics.roc_curve(y_cudf, s_dev, pos_label="spam"),
                            skm.roc_curve(y, score, pos_label="spam"), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert metrics.average_precision_score(y_cudf, s_dev, pos_label="spam") == pytest.approx(
        skm.average_precision_score(y, score, pos_label="spam"), rel=1e-12)
    assert metrics.log_loss(y_cudf, s_dev) == pytest.approx(skm.log_loss(y, score), rel=1e-12)
    binned = metrics.roc_auc_score(y_cudf, s_dev, max_bins=1000, score_range=(0.0, 1.0))
    assert binned == pytest.approx(skm.roc_auc_score(y, score), abs=1e-2)
    pred = np.where(score > 0.5, "spam", "ham").astype(object)
    assert_same(metrics.confusion_matrix(y_cudf, Series(pred, dev)),
                skm.confusion_matrix(y, pred))


def test_cudf_numeric_labels_stay_on_the_device_and_meet_host_numbers():
    from fake_cudf import Series

    _, dev = _dev1()
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 30)
    pred = rng.integers(0, 3, 30)
    weight = rng.random(30)
    assert metrics.accuracy_score(Series(y, dev), pred, sample_weight=weight) == pytest.approx(
        skm.accuracy_score(y, pred, sample_weight=weight), rel=1e-12)
    assert_same(metrics.confusion_matrix(Series(y, dev), pred),
                skm.confusion_matrix(y, pred))
    t = rng.standard_normal(30)
    p = t + 0.1 * rng.standard_normal(30)
    assert metrics.r2_score(Series(t, dev), p, sample_weight=weight) == pytest.approx(
        skm.r2_score(t, p, sample_weight=weight), rel=1e-12)
    assert metrics.mean_squared_error(Series(t, dev), p) == pytest.approx(
        skm.mean_squared_error(t, p), rel=1e-12)


def test_cudf_categorical_and_nullable_labels():
    from fake_cudf import Series

    _, dev = _dev1()
    y = pd.Series(["b", "a", "c", "a", "b", "b"], dtype="category")
    pred = np.array(["b", "a", "a", "a", "c", "b"], dtype=object)
    assert metrics.accuracy_score(Series(y, dev), pred) == pytest.approx(
        skm.accuracy_score(y.astype(object), pred))
    y_int = pd.Series([1, 0, 1, 1], dtype="Int64")  # a nullable dtype without nulls
    assert metrics.accuracy_score(Series(y_int, dev), np.array([1, 0, 0, 1])) == 0.75
