"""MLP math: finite differences for every backward pass, scikit-learn for every forward pass and
for the linear special case (logistic regression), on NumPy, array_api_strict and CuPy."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from array_api_compat import device
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, mean_squared_error
from sklearn.neural_network import MLPClassifier, MLPRegressor

from pipeline import nn
from pipeline.backend import to_host

N_OUTPUTS = {"binary_log_loss": 2, "log_loss": 3, "squared_error": 2}


def make_targets(loss, n, n_outputs, rng):
    if loss == "binary_log_loss":  # independent 0/1 per output (multilabel)
        return rng.integers(0, 2, size=(n, n_outputs)).astype(np.float64)
    if loss == "log_loss":
        return np.eye(n_outputs)[rng.integers(0, n_outputs, size=n)]
    return rng.normal(size=(n, n_outputs))


def make_problem(hidden, activation, loss, n=11, seed=0):
    rng = np.random.default_rng(seed)
    spec = nn.MLPSpec((3, *hidden, N_OUTPUTS[loss]), activation=activation, loss=loss)
    # Twice the Glorot scale so that hidden units leave their linear regime.
    flat = 2.0 * nn.init_params(spec, rng, dtype=np.float64)
    X = rng.normal(size=(n, 3))
    Y = make_targets(loss, n, spec.n_outputs, rng)
    return spec, flat, X, Y, rng


def central_differences(f, x, h=1e-6):
    grad = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        grad[i] = (f(x + e) - f(x - e)) / (2 * h)
    return grad


def flat_from_sklearn(model):
    return np.concatenate(
        [a for W, b in zip(model.coefs_, model.intercepts_, strict=True) for a in (W.ravel(), b)]
    )


# --- spec and layout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer_sizes": (3,)}, "at least"),
        ({"layer_sizes": (3, 0, 2)}, ">= 1"),
        ({"layer_sizes": (3, 2), "activation": "softmax"}, "activation must be one of"),
        ({"layer_sizes": (3, 2), "loss": "hinge"}, "loss must be one of"),
        ({"layer_sizes": (3, 1), "loss": "log_loss"}, "binary_log_loss"),
    ],
)
def test_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.MLPSpec(**kwargs)


def test_layout_tiles_the_buffer():
    spec = nn.MLPSpec([4, 5, 3, 2], loss="squared_error")
    assert spec.layer_sizes == (4, 5, 3, 2)
    layout = spec.layout()
    assert [s.w_shape for s in layout] == [(4, 5), (5, 3), (3, 2)]
    stop = 0
    for s in layout:
        assert s.w_start == stop
        assert s.w_stop - s.w_start == math.prod(s.w_shape)
        assert s.b_start == s.w_stop and s.b_stop - s.b_start == s.w_shape[1]
        stop = s.b_stop
    assert stop == spec.n_params == (4 * 5 + 5) + (5 * 3 + 3) + (3 * 2 + 2)


def test_unpack_gives_views_in_layout_order():
    spec = nn.MLPSpec((2, 3, 1), loss="binary_log_loss")
    flat = np.arange(spec.n_params, dtype=np.float64)
    (W1, b1), (W2, b2) = nn.unpack(spec, flat)
    np.testing.assert_array_equal(W1, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(b1, [6, 7, 8])
    np.testing.assert_array_equal(W2, [[9], [10], [11]])
    np.testing.assert_array_equal(b2, [12])
    W2[0, 0] = -1.0
    assert flat[9] == -1.0
    with pytest.raises(ValueError, match=r"shape \(13,\)"):
        nn.unpack(spec, flat[:-1])


@pytest.mark.parametrize("activation", nn.ACTIVATIONS)
def test_init_params_glorot_bounds(activation):
    spec = nn.MLPSpec((30, 50, 40, 3), activation=activation, loss="log_loss")
    flat = nn.init_params(spec, random_state=0)
    assert flat.dtype == np.float32 and flat.shape == (spec.n_params,)
    factor = 2.0 if activation == "logistic" else 6.0
    for W, b in nn.unpack(spec, flat):
        bound = math.sqrt(factor / sum(W.shape))
        for values in (W, b):
            assert np.abs(values).max() <= bound
        # Uniform on the whole interval, not on a narrower one (fixed seed: deterministic).
        assert scipy.stats.kstest(W.ravel(), "uniform", args=(-bound, 2 * bound)).pvalue > 1e-3


def test_init_params_random_state():
    spec = nn.MLPSpec((4, 3, 2))
    a = nn.init_params(spec, 7, dtype=np.float64)
    np.testing.assert_array_equal(a, nn.init_params(spec, 7, dtype=np.float64))
    np.testing.assert_array_equal(a, nn.init_params(spec, np.random.default_rng(7), np.float64))
    assert not np.array_equal(a, nn.init_params(spec, 8, dtype=np.float64))
    assert nn.init_params(spec, None).shape == (spec.n_params,)
    # Draws are float64, then cast.
    np.testing.assert_array_equal(nn.init_params(spec, 7), a.astype(np.float32))
    # W then b, layer by layer, from one generator.
    rng = np.random.default_rng(7)
    bound = math.sqrt(6.0 / 7)
    np.testing.assert_array_equal(a[:12], rng.uniform(-bound, bound, (4, 3)).ravel())
    np.testing.assert_array_equal(a[12:15], rng.uniform(-bound, bound, 3))


# --- backward passes: finite differences -------------------------------------------------------


# Without hidden layers the activation is unused: one linear case per loss is enough.
ARCHITECTURES = [pytest.param((), "identity", id="linear")] + [
    pytest.param((4, 3), activation, id=f"two_hidden-{activation}") for activation in nn.ACTIVATIONS
]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("loss", nn.LOSSES)
@pytest.mark.parametrize(("hidden", "activation"), ARCHITECTURES)
def test_gradient_matches_finite_differences(hidden, activation, loss, weighted, backend):
    spec, flat, X, Y, rng = make_problem(hidden, activation, loss)
    sw = rng.uniform(0.1, 3.0, size=X.shape[0]) if weighted else None
    Xb, Yb = backend.asarray(X), backend.asarray(Y)
    swb = None if sw is None else backend.asarray(sw)

    loss_value, grad = nn.loss_and_grad(spec, flat, Xb, Yb, sample_weight=swb)
    assert isinstance(loss_value, float)
    assert device(grad) == device(Xb) and grad.dtype == Xb.dtype

    expected = central_differences(lambda f: nn.loss_and_grad(spec, f, Xb, Yb, swb)[0], flat)
    np.testing.assert_allclose(to_host(grad), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss", nn.LOSSES)
def test_loss_values_match_sklearn_metrics(loss, backend):
    """The summed loss is scikit-learn's loss of the forward output, times the row count."""
    spec, flat, X, Y, rng = make_problem((5,), "tanh", loss, n=20)
    sw = rng.uniform(0.5, 2.0, size=20)
    Xb = backend.asarray(X)
    value, _ = nn.loss_and_grad(spec, flat, Xb, backend.asarray(Y), backend.asarray(sw))
    P = to_host(nn.forward(spec, flat, Xb))
    if loss == "log_loss":
        expected = log_loss(Y, P, sample_weight=sw, normalize=False)
    elif loss == "binary_log_loss":
        expected = sum(
            log_loss(Y[:, k], P[:, k], sample_weight=sw, normalize=False) for k in range(Y.shape[1])
        )
    else:  # scikit-learn's MLP squared loss averages over outputs; ours sums them.
        per_output = mean_squared_error(Y, P, sample_weight=sw, multioutput="raw_values")
        expected = 0.5 * sw.sum() * per_output.sum()
    assert value == pytest.approx(expected, rel=1e-10)


def test_sample_weight_is_row_repetition():
    spec, flat, X, Y, rng = make_problem((4,), "logistic", "log_loss", n=9)
    counts = rng.integers(0, 4, size=9)
    weighted = nn.loss_and_grad(spec, flat, X, Y, sample_weight=counts.astype(np.float64))
    repeated = nn.loss_and_grad(spec, flat, np.repeat(X, counts, 0), np.repeat(Y, counts, 0))
    assert weighted[0] == pytest.approx(repeated[0], rel=1e-12)
    np.testing.assert_allclose(weighted[1], repeated[1], rtol=1e-12, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 17), max_size=4),
    loss=st.sampled_from(nn.LOSSES),
)
def test_loss_is_a_sum_over_rows(cuts, loss):
    """Any split of the rows into chunks (empty ones too) gives the same total and gradient."""
    spec, flat, X, Y, _ = make_problem((4,), "relu", loss, n=17)
    total, grad = nn.loss_and_grad(spec, flat, X, Y)
    bounds = [0, *sorted(cuts), 17]
    parts = [nn.loss_and_grad(spec, flat, X[a:b], Y[a:b]) for a, b in pairwise(bounds)]
    assert sum(p[0] for p in parts) == pytest.approx(total, rel=1e-12)
    np.testing.assert_allclose(sum(p[1] for p in parts), grad, rtol=1e-10, atol=1e-12)


def test_empty_partition(backend):
    spec = nn.MLPSpec((3, 4, 2), loss="log_loss")
    flat = nn.init_params(spec, 0)
    X = backend.asarray(np.zeros((0, 3), dtype=np.float32))
    Y = backend.asarray(np.zeros((0, 2), dtype=np.float32))
    value, grad = nn.loss_and_grad(spec, flat, X, Y, sample_weight=backend.asarray(np.zeros(0)))
    assert value == 0.0
    assert grad.shape == (spec.n_params,) and grad.dtype == backend.xp.float32
    assert device(grad) == device(X)
    np.testing.assert_array_equal(to_host(grad), 0.0)


@pytest.mark.parametrize("loss", nn.LOSSES)
def test_float32_stays_float32_on_the_data_device(loss, backend):
    """Host float64 parameters meet float32 device data: everything follows the data."""
    spec, flat, X, Y, _ = make_problem((4,), "logistic", loss)
    Xb = backend.asarray(X.astype(np.float32))
    Yb = backend.asarray(Y.astype(np.float32))
    value, grad = nn.loss_and_grad(spec, flat, Xb, Yb)
    for out in (grad, nn.forward(spec, flat, Xb), nn.decision_function(spec, flat, Xb)):
        assert out.dtype == backend.xp.float32 and device(out) == device(Xb)
    ref_value, ref_grad = nn.loss_and_grad(spec, flat, X, Y)
    assert value == pytest.approx(ref_value, rel=1e-5)
    np.testing.assert_allclose(to_host(grad), ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", ["binary_log_loss", "log_loss"])
def test_extreme_logits_stay_finite(loss):
    """Saturated outputs: no overflow warning (warnings are errors), exact finite losses."""
    spec = nn.MLPSpec((1, 2), loss=loss)
    # W = [[1, -1]], b = 0, so z = (1000, -1000) on row 1 and (-1000, 1000) on row 2.
    flat = np.array([1.0, -1.0, 0.0, 0.0])
    X = np.array([[1000.0], [-1000.0]])
    Y = np.array([[1.0, 0.0], [1.0, 0.0]])
    value, grad = nn.loss_and_grad(spec, flat, X, Y)
    # Row 1 is right with certainty (loss 0); row 2 is wrong by a margin of 2000 in both
    # losses (binary: 1000 per output; softmax: logsumexp(z) - z_0 = 1000 + 1000).
    assert value == pytest.approx(2000.0)
    assert np.isfinite(grad).all()
    P = nn.forward(spec, flat, X)
    assert np.isfinite(P).all() and ((P >= 0) & (P <= 1)).all()


def test_input_validation():
    spec = nn.MLPSpec((3, 2), loss="squared_error")
    flat = nn.init_params(spec, 0, dtype=np.float64)
    X, Y = np.ones((4, 3)), np.ones((4, 2))
    with pytest.raises(ValueError, match=r"flat parameters must have shape \(8,\)"):
        nn.loss_and_grad(spec, flat[:5], X, Y)
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 3\)"):
        nn.forward(spec, flat, np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"Y must have shape \(4, 2\)"):
        nn.loss_and_grad(spec, flat, X, np.ones(4))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(4,\)"):
        nn.loss_and_grad(spec, flat, X, Y, sample_weight=np.ones(3))


# --- forward passes: scikit-learn ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sklearn_data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 4))
    score = X @ rng.normal(size=4)
    return {
        "binary": (X, (score > 0).astype(int)),
        "multiclass": (X, np.digitize(score, [-1.0, 1.0])),
        "multilabel": (X, np.stack([score > 0, X[:, 0] > 0.3, X[:, 1] < 0], axis=1).astype(int)),
        "regression": (X, np.stack([score, np.sin(X[:, 0])], axis=1)),
    }


@pytest.mark.filterwarnings(
    # Deliberately brief fits: we need trained, not converged, weights.
    "ignore::sklearn.exceptions.ConvergenceWarning"
)
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel", "regression"])
@pytest.mark.parametrize("activation", nn.ACTIVATIONS)
def test_forward_matches_sklearn(activation, task, sklearn_data, backend):
    X, y = sklearn_data[task]
    Estimator = MLPRegressor if task == "regression" else MLPClassifier
    model = Estimator(
        hidden_layer_sizes=(6, 5), activation=activation, max_iter=15, random_state=0
    ).fit(X, y)
    loss = {"logistic": "binary_log_loss", "softmax": "log_loss", "identity": "squared_error"}[
        model.out_activation_
    ]
    spec = nn.MLPSpec((4, 6, 5, model.n_outputs_), activation=activation, loss=loss)
    flat = flat_from_sklearn(model)

    ours = to_host(nn.forward(spec, flat, backend.asarray(X)))
    if task == "regression":
        expected = model.predict(X)
    else:
        expected = model.predict_proba(X)
        if task == "binary":  # sklearn reports [1 - p, p] for its single logistic output
            expected = expected[:, 1:]
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


def test_logistic_regression_is_the_linear_case():
    """No hidden layer + binary_log_loss + l2_penalty(alpha) == LogisticRegression(C=1/alpha)."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(80, 3))
    y = (X @ [1.5, -2.0, 0.5] + 0.3 + rng.normal(size=80) > 0).astype(np.float64)
    alpha = 2.0
    spec = nn.MLPSpec((3, 1), loss="binary_log_loss")
    n = X.shape[0]

    def objective(flat):  # what the data-parallel trainer minimises
        data_loss, data_grad = nn.loss_and_grad(spec, flat, X, y[:, None])
        penalty, penalty_grad = nn.l2_penalty(spec, flat, alpha, n)
        return data_loss / n + penalty, data_grad / n + penalty_grad

    result = scipy.optimize.minimize(
        objective, np.zeros(spec.n_params), jac=True, method="L-BFGS-B", tol=1e-12
    )
    assert result.success
    ((W, b),) = nn.unpack(spec, result.x)
    reference = LogisticRegression(C=1.0 / alpha, tol=1e-12, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(W[:, 0], reference.coef_[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, reference.intercept_, rtol=1e-5, atol=1e-6)


# --- L2 penalty --------------------------------------------------------------------------------


def test_l2_penalty(backend):
    spec, flat, *_ = make_problem((4, 3), "relu", "log_loss")
    alpha, n = 0.3, 17.0
    value, grad = nn.l2_penalty(spec, backend.asarray(flat), alpha, n)
    assert isinstance(value, float)
    assert device(grad) == device(backend.asarray(flat)) and grad.dtype == backend.xp.float64

    weights = sum(float((W**2).sum()) for W, _ in nn.unpack(spec, flat))
    assert value == pytest.approx(0.5 * alpha * weights / n, rel=1e-12)
    expected = central_differences(lambda f: nn.l2_penalty(spec, f, alpha, n)[0], flat)
    grad = to_host(grad)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)
    for s in spec.layout():  # biases are not penalised
        np.testing.assert_array_equal(grad[s.b_start : s.b_stop], 0.0)
    with pytest.raises(ValueError, match="n_samples"):
        nn.l2_penalty(spec, flat, alpha, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, 7])
def test_misaligned_inputs_give_the_same_bits(dtype, rows):
    """Dask hands workers arrays at arbitrary byte offsets (views into message frames); NumPy
    then skips BLAS for some products (one-row batches) and rounds differently."""
    rng = np.random.default_rng(0)
    spec = nn.MLPSpec((20, 64, 64, 1), "relu", "binary_log_loss")
    flat = nn.init_params(spec, 0, dtype=dtype)
    X = rng.standard_normal((rows, 20)).astype(dtype)
    Y = (rng.random((rows, 1)) > 0.5).astype(dtype)
    ref_loss, ref_grad = nn.loss_and_grad(spec, flat, X, Y)

    def misaligned(a):
        raw = np.empty(a.nbytes + 1, dtype=np.uint8)
        view = raw[1:].view(a.dtype).reshape(a.shape)
        view[...] = a
        assert not view.flags.aligned
        return view

    loss, grad = nn.loss_and_grad(spec, misaligned(flat), misaligned(X), Y)
    assert loss == ref_loss
    assert np.array_equal(grad, ref_grad)
    assert np.array_equal(nn.forward(spec, misaligned(flat), misaligned(X)),
                          nn.forward(spec, flat, X))
