"""MLPSpec on the layer library gives the bits of the pre-refactor implementation
(``legacy_mlp.py``, a frozen copy of ``pipeline/nn.py`` before it became a package): init,
forward, decision function, loss, gradient and L2 penalty, with and without a workspace."""

from __future__ import annotations

import legacy_mlp as old
import numpy as np
import pytest
from array_api_compat import device

from pipeline import nn
from pipeline.backend import to_host


def problem(layer_sizes, activation, loss, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, layer_sizes[0])).astype(dtype)
    k = layer_sizes[-1]
    if loss == "log_loss":
        Y = np.eye(k, dtype=dtype)[rng.integers(0, k, n)]
    elif loss == "binary_log_loss":
        Y = rng.integers(0, 2, (n, k)).astype(dtype)
    else:
        Y = rng.standard_normal((n, k)).astype(dtype)
    return X, Y, rng.uniform(0.1, 3.0, n)


def same(a, b):
    return a[0] == b[0] and np.array_equal(to_host(a[1]), to_host(b[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", nn.LOSSES)
@pytest.mark.parametrize("activation", nn.ACTIVATIONS)
@pytest.mark.parametrize("layer_sizes", [(20, 3), (20, 64, 33, 3)], ids=["linear", "deep"])
def test_matches_the_old_implementation_bit_for_bit(layer_sizes, activation, loss, dtype):
    spec = nn.MLPSpec(layer_sizes, activation, loss)
    ref = old.MLPSpec(layer_sizes, activation, loss)
    flat = nn.init_params(spec, 3, dtype=dtype)
    assert np.array_equal(flat, old.init_params(ref, 3, dtype=dtype))
    assert np.array_equal(spec.init_params(3, dtype), flat)
    assert spec.layout() == ref.layout() and spec.n_params == ref.n_params
    ws = nn.Workspace()
    ctx = nn.Context(training=True, workspace=ws, need_input_grad=False)
    for n in (1, 7, 300, 7):  # shapes change and come back: buffers per shape
        X, Y, sw = problem(layer_sizes, activation, loss, n, dtype, seed=n)
        for weights in (None, sw):
            expected = old.loss_and_grad(ref, flat, X, Y, weights)
            assert same(nn.loss_and_grad(spec, flat, X, Y, weights), expected)
            assert same(spec.loss_and_grad(flat, X, Y, weights, ctx=ctx), expected)
        # float64 host parameters, data of another dtype (cast into the workspace).
        flat64 = flat.astype(np.float64) * 1.1
        assert same(spec.loss_and_grad(flat64, X, Y, ctx=ctx),
                    old.loss_and_grad(ref, flat64, X, Y))
        assert np.array_equal(nn.forward(spec, flat, X), old.forward(ref, flat, X))
        assert np.array_equal(nn.decision_function(spec, flat, X),
                              old.decision_function(ref, flat, X))
        assert same(nn.l2_penalty(spec, flat, 0.3, n), old.l2_penalty(ref, flat, 0.3, n))
    for (W, b), (W0, b0) in zip(nn.unpack(spec, flat), old.unpack(ref, flat), strict=True):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


@pytest.mark.parametrize("loss", nn.LOSSES)
def test_matches_the_old_implementation_on_other_namespaces(loss, backend):
    spec = nn.MLPSpec((5, 8, 3), "tanh", loss)
    ref = old.MLPSpec((5, 8, 3), "tanh", loss)
    flat = nn.init_params(spec, 0, dtype=np.float64)
    X, Y, sw = problem((5, 8, 3), "tanh", loss, 9, np.float32)
    Xb, Yb, swb = backend.asarray(X), backend.asarray(Y), backend.asarray(sw)
    ctx = nn.Context(training=True, workspace=nn.Workspace(), need_input_grad=False)
    got = spec.loss_and_grad(flat, Xb, Yb, swb, ctx=ctx)
    assert device(got[1]) == device(Xb)
    assert same(got, old.loss_and_grad(ref, flat, Xb, Yb, swb))
    assert np.array_equal(to_host(spec.forward(flat, Xb)), to_host(old.forward(ref, flat, Xb)))


def test_spec_is_a_model():
    """MLPSpec and Sequential answer the same protocol with the same numbers."""
    spec = nn.MLPSpec((4, 6, 2), "logistic", "log_loss")
    model = spec.sequential
    assert isinstance(model, nn.Sequential) and spec.sequential is model  # memoised
    assert (spec.n_params, spec.n_outputs, spec.loss) == (model.n_params, model.n_outputs,
                                                          model.loss)
    # Glorot factor 2 before logistic units, as scikit-learn.
    assert [layer.init_factor for layer in model.layers if isinstance(layer, nn.Dense)] == [2, 2]
    flat = spec.init_params(1)
    X, Y, _ = problem((4, 6, 2), "logistic", "log_loss", 5, np.float32)
    assert same(spec.loss_and_grad(flat, X, Y), model.loss_and_grad(flat, X, Y))
    assert same(nn.loss_and_grad(model, flat, X, Y), model.loss_and_grad(flat, X, Y))
    assert same(spec.l2_penalty(flat, 0.1, 5), model.l2_penalty(flat, 0.1, 5))
    assert np.array_equal(spec.forward(flat, X), model.forward(flat, X))
