"""Parameters and data on different devices: the network moves the parameters to the data's
namespace and device, through the host when they are on another one (a CuPy parameter vector
meeting NumPy data used to raise: np.asarray refuses device memory)."""

import numpy as np
import pytest

from pipeline import nn
from pipeline.backend import device, to_host

xs = pytest.importorskip("array_api_strict")


def _problem(dtype=np.float64):
    rng = np.random.default_rng(0)
    spec = nn.MLPSpec((4, 5, 3), "tanh", "log_loss")
    X = rng.standard_normal((7, 4)).astype(dtype)
    Y = np.eye(3, dtype=dtype)[rng.integers(0, 3, 7)]
    w = rng.standard_normal(7).astype(dtype)
    return spec, nn.init_params(spec, 0, dtype=dtype), X, Y, w


def test_device_parameters_with_host_data():
    spec, flat, X, Y, w = _problem()
    dev_flat = xs.asarray(flat, device=xs.Device("device1"))
    np.testing.assert_array_equal(nn.forward(spec, dev_flat, X), nn.forward(spec, flat, X))
    loss, grad = nn.loss_and_grad(spec, dev_flat, X, Y, w)
    want_loss, want_grad = nn.loss_and_grad(spec, flat, X, Y, w)
    assert isinstance(grad, np.ndarray)
    assert loss == want_loss
    np.testing.assert_array_equal(grad, want_grad)


def test_host_parameters_targets_and_weights_with_device_data(backend):
    spec, flat, X, Y, w = _problem()
    Xb = backend.asarray(X)
    loss, grad = nn.loss_and_grad(spec, flat, Xb, Y, w)  # Y, w on the host
    assert device(grad) == device(Xb)
    want_loss, want_grad = nn.loss_and_grad(spec, flat, X, Y, w)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(to_host(grad), want_grad, rtol=1e-12, atol=1e-15)
