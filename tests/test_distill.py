"""Distillation: soft targets computed per partition, and a student fitted on them.

Oracles: PyTorch's cross-entropy with probability targets and binary cross-entropy with soft
targets (loss and gradient of :func:`pipeline.nn.loss_and_grad`), ``scipy.special.softmax`` /
``expit`` on a plain NumPy forward of the teacher, and the same distillation on a 1-worker
cluster (bit-identical parameters).
"""

from __future__ import annotations

import warnings

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning

import pipeline as pl
from pipeline import nn
from pipeline.distill import distill, soft_targets

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("n_out", [1, 3])
def test_log_losses_accept_soft_targets(n_out):
    rng = np.random.default_rng(0)
    spec = nn.MLPSpec((4, 5, n_out), "tanh", "binary_log_loss" if n_out == 1 else "log_loss")
    flat = nn.init_params(spec, 0, dtype=np.float64)
    X = rng.standard_normal((30, 4))
    Y = rng.random((30, n_out)) if n_out == 1 else softmax(rng.standard_normal((30, 3)), 1)
    loss, grad = nn.loss_and_grad(spec, flat, X, Y)

    tflat = torch.tensor(flat, requires_grad=True)
    h, offset = torch.tensor(X), 0
    for i, (fan_in, fan_out) in enumerate(zip(spec.layer_sizes[:-1], spec.layer_sizes[1:],
                                              strict=True)):
        W = tflat[offset:offset + fan_in * fan_out].reshape(fan_in, fan_out)
        b = tflat[offset + fan_in * fan_out:offset + fan_in * fan_out + fan_out]
        offset += fan_in * fan_out + fan_out
        h = h @ W + b
        if i < len(spec.layer_sizes) - 2:
            h = torch.tanh(h)
    target = torch.tensor(Y)
    if n_out == 1:
        ref = torch.nn.functional.binary_cross_entropy_with_logits(h, target, reduction="sum")
    else:
        ref = torch.nn.functional.cross_entropy(h, target, reduction="sum")
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-10)
    np.testing.assert_allclose(grad, tflat.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def problem(client):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((4_000, 5)), columns=list("abcde"))
    score = X["a"] + X["b"] * X["c"]
    y = pd.Series(np.digitize(score, [-0.5, 0.5]), name="y")  # 3 classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a short budget is enough here
        teacher = pl.MLPClassifier((32,), max_iter=8, random_state=0, batch_size=128).fit(X, y)
    return X, y, teacher


def _teacher_logits(teacher, X):
    a = np.asarray(X, dtype=np.float64)
    for W, b in zip(teacher.coefs_[:-1], teacher.intercepts_[:-1], strict=True):
        a = np.maximum(a @ W + b, 0.0)
    return a @ teacher.coefs_[-1] + teacher.intercepts_[-1]


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_soft_targets_of_a_partition(problem, alpha):
    X, y, teacher = problem
    out = soft_targets(X, y, teacher.params_, teacher.spec_, teacher.classes_, 2.0, alpha,
                       "float64")
    expected = alpha * softmax(_teacher_logits(teacher, X) / 2.0, axis=1) + (
        1 - alpha) * np.eye(3)[y.to_numpy()]
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=1e-6, atol=1e-7)
    assert list(out.index) == list(X.index)


def test_binary_soft_targets_are_one_column():
    rng = np.random.default_rng(1)
    spec = nn.MLPSpec((3, 4, 1), "relu", "binary_log_loss")
    flat = nn.init_params(spec, 1, dtype=np.float64)
    X = pd.DataFrame(rng.standard_normal((10, 3)))
    out = soft_targets(X, None, flat, spec, np.array([0, 1]), 3.0, 1.0, "float64")
    z = nn.decision_function(spec, flat, X.to_numpy())
    np.testing.assert_allclose(out.to_numpy(), expit(z / 3.0), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budget
def test_student_is_bit_identical_on_1_and_2_workers(problem, client):
    from distributed import Client, LocalCluster

    X, y, teacher = problem
    Xd, yd = dd.from_pandas(X, npartitions=4, sort=False), dd.from_pandas(y, npartitions=4,
                                                                          sort=False)

    def student():
        return pl.MLPClassifier((16,), max_iter=5, random_state=1, batch_size=256, sync="gradient",
                                learning_rate_init=0.01, min_block_rows=500)

    two = distill(teacher, student(), Xd, yd, temperature=2.0, alpha=0.5,
                  validation_data=(X, y), client=client)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as one_client:
        one = distill(teacher, student(), Xd, yd, temperature=2.0, alpha=0.5, client=one_client)
    np.testing.assert_array_equal(one.params_, two.params_)
    np.testing.assert_array_equal(two.classes_, teacher.classes_)
    assert two.validation_scores_ and len(two.validation_scores_) == 5
    # The student learned the teacher's decision: it agrees with it on most rows.
    agree = np.mean(two.predict(X.to_numpy()) == teacher.predict(X.to_numpy()))
    assert agree > 0.8, (agree, two.validation_scores_, teacher.score(X, y))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_soft_targets_of_a_cudf_partition(n_classes):
    """A cuDF partition (tests/fake_cudf.py: device arrays are array_api_strict on "device1",
    which np.asarray refuses as it refuses CuPy) with string labels: the logits come to the
    host through to_host and the labels through values_of; the targets equal the pandas ones."""
    from fake_cudf import DataFrame, Series

    from pipeline.distill import soft_targets

    xs = pytest.importorskip("array_api_strict")
    dev = xs.Device("device1")
    rng = np.random.default_rng(2)
    classes = np.array(["a", "b", "c"][:n_classes], dtype=object)
    spec = nn.MLPSpec((3, 4, 1 if n_classes == 2 else n_classes), "tanh",
                      "binary_log_loss" if n_classes == 2 else "log_loss")
    params = nn.init_params(spec, 0, dtype=np.float64)
    part = pd.DataFrame(rng.standard_normal((8, 3)), columns=["p", "q", "r"])
    labels = pd.Series(rng.choice(classes, 8), dtype=object)
    args = (params, spec, classes, 2.0, 0.7, "float64")
    want = soft_targets(part, labels, *args)
    got = soft_targets(DataFrame(dict(part.items()), dev), Series(labels, dev), *args)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)


def test_narrow_params_keeps_the_units_that_carry_signal():
    """Units whose outgoing weights are zero carry nothing: a teacher with such units, cut to
    the others, computes exactly what the teacher computes (NumPy forward written out here)."""
    from pipeline.distill import narrow_params, narrows

    rng = np.random.default_rng(5)
    t_spec = nn.MLPSpec((5, 8, 6, 3), "tanh", "log_loss")
    s_spec = nn.MLPSpec((5, 4, 3, 3), "tanh", "log_loss")
    flat = nn.init_params(t_spec, 0, dtype=np.float64)
    _, (W2, _), (W3, _) = nn.unpack(t_spec, flat)
    dead1, dead2 = rng.choice(8, 4, replace=False), rng.choice(6, 3, replace=False)
    W2[dead1, :] = 0.0  # layer-1 units that feed nothing
    W3[dead2, :] = 0.0
    assert narrows(t_spec, s_spec)
    student = narrow_params(t_spec, flat, s_spec)
    (S1, c1), (S2, c2), (S3, c3) = nn.unpack(s_spec, student)
    live1, live2 = np.setdiff1d(np.arange(8), dead1), np.setdiff1d(np.arange(6), dead2)
    layers = nn.unpack(t_spec, flat)
    np.testing.assert_array_equal(S1, layers[0][0][:, live1])
    np.testing.assert_array_equal(S2, layers[1][0][np.ix_(live1, live2)])
    np.testing.assert_array_equal(S3, layers[2][0][live2])
    X = rng.standard_normal((50, 5))

    def logits(layers, X):
        a = X
        for W, b in layers[:-1]:
            a = np.tanh(a @ W + b)
        return a @ layers[-1][0] + layers[-1][1]

    np.testing.assert_allclose(logits([(S1, c1), (S2, c2), (S3, c3)], X), logits(layers, X),
                               rtol=1e-12, atol=1e-12)
    # same widths: the teacher itself, units in their order
    np.testing.assert_array_equal(narrow_params(t_spec, flat, t_spec), flat)


def test_narrows_refuses_other_shapes():
    from pipeline.distill import narrow_params, narrows

    t = nn.MLPSpec((5, 8, 3), "relu", "log_loss")
    flat = nn.init_params(t, 0, dtype=np.float64)
    for other in (nn.MLPSpec((5, 9, 3), "relu", "log_loss"),      # wider
                  nn.MLPSpec((5, 4, 4, 3), "relu", "log_loss"),   # deeper
                  nn.MLPSpec((5, 4, 3), "tanh", "log_loss"),      # other activation
                  nn.MLPSpec((6, 4, 3), "relu", "log_loss")):     # other inputs
        assert not narrows(t, other)
        with pytest.raises(ValueError, match="not a narrower copy of the teacher"):
            narrow_params(t, flat, other)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budget
def test_distill_init_choices(problem, client):
    X, _, teacher = problem
    Xd = dd.from_pandas(X, npartitions=2, sort=False)

    def student(hidden=(16,)):
        return pl.MLPClassifier(hidden, max_iter=1, random_state=1, batch_size=256)

    with pytest.raises(ValueError, match="init must be"):
        distill(teacher, student(), Xd, init="best")
    with pytest.raises(ValueError, match="not a narrower copy"):
        distill(teacher, student((64,)), Xd, init="teacher")
    # "auto" starts a narrower student from the teacher, a wider one at random
    auto, cut = distill(teacher, student(), Xd), distill(teacher, student(), Xd, init="teacher")
    np.testing.assert_array_equal(auto.params_, cut.params_)
    wide = distill(teacher, student((64,)), Xd)
    fresh = distill(teacher, student((64,)), Xd, init="random")
    np.testing.assert_array_equal(wide.params_, fresh.params_)
    assert not np.array_equal(auto.params_, distill(teacher, student(), Xd,
                                                    init="random").params_)
