"""Convolution and pooling layers: backward vs central finite differences (NumPy and
array_api_strict), forward vs scipy.signal.correlate, direct loops and PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from array_api_compat import device

from pipeline.backend import to_host
from pipeline.nn import AvgPool2D, Context, Conv2D, Flatten, GlobalAvgPool2D, MaxPool2D

TRAIN = Context(training=True)

# (layer, per-sample input shape): small, with odd sizes, strides and both paddings.
CASES = [
    (Conv2D(3, 3), (5, 4, 2)),
    (Conv2D(2, (2, 3), stride=2, padding="same"), (5, 6, 2)),
    (Conv2D(2, 3, stride=(2, 1), padding="valid"), (7, 5, 3)),
    (Conv2D(2, 2, padding="same"), (4, 4, 1)),  # even kernel: asymmetric "same" padding
    (MaxPool2D(2), (5, 4, 2)),
    (MaxPool2D(3, stride=2, padding="same"), (5, 6, 2)),
    (MaxPool2D((2, 3), stride=1), (4, 5, 1)),
    (MaxPool2D(2), (4, 6, 2)),  # windows tile the input exactly
    (MaxPool2D(2, padding="same"), (5, 5, 2)),  # ... the padded input
    (AvgPool2D(2, padding="same"), (5, 3, 1)),
    (AvgPool2D(2), (4, 5, 2)),
    (AvgPool2D(3, stride=2, padding="same"), (5, 6, 2)),
    (GlobalAvgPool2D(), (3, 4, 2)),
    (Flatten(), (3, 2, 2)),
]
IDS = [f"{type(layer).__name__}-{i}" for i, (layer, _) in enumerate(CASES)]


def _run(layer, host_params, host_x, backend, dy=None, need_input_grad=True):
    """Forward (and backward when ``dy`` is given) on ``backend``; results on the host."""
    params = [backend.asarray(p) for p in host_params]
    x = backend.asarray(host_x)
    y, cache = layer.forward(params, x, TRAIN)
    if dy is None:
        return to_host(y)
    shapes, _ = layer.build(tuple(host_x.shape[1:]))
    grads = [backend.xp.zeros(s, dtype=x.dtype, device=backend.device) for s in shapes]
    ctx = Context(training=True, need_input_grad=need_input_grad)
    dx = layer.backward(params, cache, backend.asarray(dy), ctx, grads)
    return to_host(y), None if dx is None else to_host(dx), [to_host(g) for g in grads]


@pytest.mark.parametrize(("layer", "in_shape"), CASES, ids=IDS)
def test_backward_matches_central_differences(layer, in_shape, backend):
    rng = np.random.default_rng(1)
    params = layer.init(rng, in_shape)
    params = [p + rng.normal(scale=0.1, size=p.shape) for p in params]  # biases non-zero too
    x = rng.normal(size=(2, *in_shape))
    _, out_shape = layer.build(in_shape)
    r = rng.normal(size=(2, *out_shape))  # loss = Σ r ⊙ y, so dLoss/dy = r

    def loss(ps, xx):
        return float(np.sum(r * _run(layer, ps, xx, backend)))

    y, dx, grads = _run(layer, params, x, backend, dy=r)
    assert y.shape == (2, *out_shape)
    eps = 1e-6

    def numeric(f, a):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            up = f()
            a[i] = old - eps
            down = f()
            a[i] = old
            g[i] = (up - down) / (2 * eps)
        return g

    np.testing.assert_allclose(dx, numeric(lambda: loss(params, x), x), rtol=1e-6, atol=1e-7)
    for p, g in zip(params, grads, strict=True):
        np.testing.assert_allclose(g, numeric(lambda: loss(params, x), p), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("layer", "in_shape"), CASES, ids=IDS)
def test_outputs_stay_on_the_input_device_and_dtype(layer, in_shape, backend):
    rng = np.random.default_rng(2)
    params = [backend.xp.asarray(p, dtype=backend.xp.float32, device=backend.device)
              for p in layer.init(rng, in_shape)]
    x = backend.xp.asarray(rng.normal(size=(3, *in_shape)), dtype=backend.xp.float32,
                           device=backend.device)
    y, cache = layer.forward(params, x, TRAIN)
    shapes, out_shape = layer.build(in_shape)
    assert tuple(y.shape) == (3, *out_shape) and y.dtype == backend.xp.float32
    assert device(y) == device(x)
    grads = [backend.xp.zeros(s, dtype=x.dtype, device=backend.device) for s in shapes]
    dx = layer.backward(params, cache, backend.xp.ones_like(y), TRAIN, grads)
    assert tuple(dx.shape) == tuple(x.shape) and dx.dtype == x.dtype and device(dx) == device(x)
    skipped = layer.backward(params, cache, backend.xp.ones_like(y),
                             Context(training=True, need_input_grad=False), grads)
    assert skipped is None


def test_conv_valid_matches_scipy_correlate():
    rng = np.random.default_rng(3)
    layer = Conv2D(4, (3, 2), padding="valid")
    x = rng.normal(size=(2, 7, 6, 3))
    W, b = (p + rng.normal(size=p.shape) for p in layer.init(rng, (7, 6, 3)))
    y = _run(layer, [W, b], x, _NUMPY)
    expected = np.zeros((2, 5, 5, 4))
    for n in range(2):
        for f in range(4):
            expected[n, :, :, f] = b[f] + sum(
                scipy.signal.correlate(x[n, :, :, c], W[:, :, c, f], mode="valid")
                for c in range(3)
            )
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def _tf_same(size, k, s):
    """TensorFlow's documented "same" padding: (before, after) for one axis."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "in_shape"),
    [
        (3, 1, "same", (9, 8, 3)),
        ((3, 5), (2, 3), "same", (9, 11, 2)),
        (4, 2, "same", (8, 7, 2)),
        ((2, 3), (3, 2), "valid", (10, 9, 2)),
    ],
)
def test_conv_forward_and_gradients_match_torch(kernel, stride, padding, in_shape):
    rng = np.random.default_rng(4)
    layer = Conv2D(5, kernel, stride=stride, padding=padding)
    W, b = (p + rng.normal(scale=0.1, size=p.shape) for p in layer.init(rng, in_shape))
    x = rng.normal(size=(3, *in_shape))
    _, out_shape = layer.build(in_shape)
    dy = rng.normal(size=(3, *out_shape))
    y, dx, (dW, db) = _run(layer, [W, b], x, _NUMPY, dy=dy)

    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tW = torch.tensor(W.transpose(3, 2, 0, 1), requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    pads = (0, 0, 0, 0)
    if padding == "same":
        top, bottom = _tf_same(in_shape[0], kh, sh)
        left, right = _tf_same(in_shape[1], kw, sw)
        pads = (left, right, top, bottom)
    ty = F.conv2d(F.pad(tx, pads), tW, tb, stride=(sh, sw))
    ty.backward(torch.tensor(dy.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(y, ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dW, tW.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_conv_same_stride_one_matches_torch_padding_same():
    rng = np.random.default_rng(5)
    layer = Conv2D(3, 5)
    W, b = layer.init(rng, (8, 8, 2))
    x = rng.normal(size=(2, 8, 8, 2))
    tx, tW = torch.tensor(x.transpose(0, 3, 1, 2)), torch.tensor(W.transpose(3, 2, 0, 1))
    expected = F.conv2d(tx, tW, torch.tensor(b), padding="same")
    np.testing.assert_allclose(_run(layer, [W, b], x, _NUMPY),
                               expected.numpy().transpose(0, 2, 3, 1), rtol=1e-12, atol=1e-12)


def _pool_loop(x, k, s, padding, reduce):
    """Direct loop: every window of the (TF-padded) input, padding excluded."""
    n, h, w, c = x.shape
    if padding == "same":
        (top, _bottom), (left, _right) = _tf_same(h, k[0], s[0]), _tf_same(w, k[1], s[1])
        oh, ow = math.ceil(h / s[0]), math.ceil(w / s[1])
    else:
        top = left = 0
        oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s[0] - top, j * s[1] - left
            window = x[:, max(r0, 0) : r0 + k[0], max(c0, 0) : c0 + k[1], :]
            out[:, i, j, :] = reduce(window, axis=(1, 2))
    return out


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize(("k", "s"), [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((2, 3), (1, 2))])
@pytest.mark.parametrize(("cls", "reduce"), [(MaxPool2D, np.max), (AvgPool2D, np.mean)])
def test_pools_match_a_direct_loop(cls, reduce, k, s, padding):
    x = np.random.default_rng(6).normal(size=(2, 7, 8, 3))
    y = _run(cls(k, s, padding), [], x, _NUMPY)
    np.testing.assert_allclose(y, _pool_loop(x, k, s, padding, reduce), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("hw", [(9, 8), (8, 6)])
@pytest.mark.parametrize(("k", "s"), [(2, 2), (3, 2), (3, 1)])
def test_pools_and_gradients_match_torch(k, s, hw):
    rng = np.random.default_rng(7)
    # Integers: many ties, so the max pool's gradient must go to the first maximum, as torch's.
    x = rng.integers(0, 4, size=(2, *hw, 3)).astype(np.float64)
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    for layer, op in [(MaxPool2D(k, s), F.max_pool2d), (AvgPool2D(k, s), F.avg_pool2d)]:
        ty = op(tx, k, s)
        dy = rng.normal(size=ty.shape)
        tx.grad = None
        ty.backward(torch.tensor(dy))
        y, dx, _ = _run(layer, [], x, _NUMPY, dy=dy.transpose(0, 2, 3, 1))
        np.testing.assert_allclose(y, ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-13)
        np.testing.assert_allclose(dx, tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-13,
                                   atol=1e-14)


def test_global_pool_and_flatten_match_numpy():
    x = np.random.default_rng(8).normal(size=(3, 4, 5, 2))
    np.testing.assert_allclose(_run(GlobalAvgPool2D(), [], x, _NUMPY), x.mean(axis=(1, 2)),
                               rtol=1e-14)
    np.testing.assert_array_equal(_run(Flatten(), [], x, _NUMPY), x.reshape(3, -1))


@pytest.mark.parametrize(("kernel_init", "bound"), [
    ("glorot_uniform", lambda fan_in, fan_out: math.sqrt(6 / (fan_in + fan_out))),
    ("he_uniform", lambda fan_in, fan_out: math.sqrt(6 / fan_in)),
])
def test_conv_init_bounds_follow_torch_fans(kernel_init, bound):
    layer = Conv2D(16, (3, 5), kernel_init=kernel_init)
    W, b = layer.init(np.random.default_rng(9), (8, 8, 6))
    assert W.dtype == np.float64 and b.dtype == np.float64
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(
        torch.empty(W.transpose(3, 2, 0, 1).shape))
    limit = bound(fan_in, fan_out)
    assert np.abs(W).max() <= limit and np.abs(W).max() > 0.98 * limit
    np.testing.assert_array_equal(b, np.zeros(16))
    again = layer.init(np.random.default_rng(9), (8, 8, 6))
    np.testing.assert_array_equal(again[0], W)


def test_invalid_configurations_are_refused_with_reasons():
    with pytest.raises(ValueError, match="padding must be one of"):
        Conv2D(3, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2D(3, kernel_size=0)
    with pytest.raises(ValueError, match="filters"):
        Conv2D(0)
    with pytest.raises(ValueError, match="kernel_init"):
        Conv2D(3, kernel_init="zeros")
    with pytest.raises(ValueError, match=r"\(height, width, channels\)"):
        Conv2D(3).build((28, 28))
    with pytest.raises(ValueError, match="larger than the input"):
        MaxPool2D(4).build((3, 3, 1))
    layer = Conv2D(2)
    params = layer.init(np.random.default_rng(0), (4, 4, 1))
    with pytest.raises(TypeError, match="Rescale or Normalize"):
        layer.forward(params, np.zeros((1, 4, 4, 1), np.uint8), TRAIN)


class _Numpy:
    xp = np
    device = None

    @staticmethod
    def asarray(a):
        return np.asarray(a)


_NUMPY = _Numpy()


@pytest.mark.parametrize(("groups", "in_shape"), [(2, (3, 4, 6)), (1, (5,)), (3, (2, 3))])
def test_group_norm_backward_and_forward(groups, in_shape, backend):
    from pipeline.nn import GroupNorm

    rng = np.random.default_rng(10)
    layer = GroupNorm(groups)
    params = [p + rng.normal(scale=0.3, size=p.shape) for p in layer.init(rng, in_shape)]
    x = rng.normal(size=(3, *in_shape)) * 2 + 1
    r = rng.normal(size=x.shape)
    y, dx, grads = _run(layer, params, x, backend, dy=r)

    # Forward: torch.nn.functional.group_norm on the channels-first layout.
    tx = torch.tensor(np.moveaxis(x, -1, 1), requires_grad=True)
    tg, tb = (torch.tensor(p, requires_grad=True) for p in params)
    ty = F.group_norm(tx, groups, tg, tb, eps=layer.eps)
    np.testing.assert_allclose(y, np.moveaxis(ty.detach().numpy(), 1, -1), rtol=1e-10,
                               atol=1e-12)

    # Backward: central differences.
    eps = 1e-6

    def loss():
        return float(np.sum(r * _run(layer, params, x, backend)))

    for target, analytic in [(x, dx), *zip(params, grads, strict=True)]:
        numeric = np.zeros_like(target)
        for i in np.ndindex(target.shape):
            old = target[i]
            target[i] = old + eps
            up = loss()
            target[i] = old - eps
            numeric[i] = (up - loss()) / (2 * eps)
            target[i] = old
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_workspace_buffers_give_the_same_bits_step_after_step(padding):
    """The trainer's call (reused workspace buffers) against fresh arrays, on two different
    batches in turn, so a stale buffer (the zero border of the padding, the col2im sum) shows."""
    from pipeline.nn import Dense, MaxPool2D, ReLU, Sequential, Workspace

    net = Sequential([Conv2D(6, 3, padding=padding), ReLU(), MaxPool2D(2, padding="same"),
                      Conv2D(5, (3, 2), stride=(1, 2), padding=padding), ReLU(),
                      AvgPool2D(2, padding="same"), Flatten(), Dense(3)],
                     loss="log_loss", in_shape=(9, 8, 2))
    rng = np.random.default_rng(0)
    flat = net.init_params(0)
    ws = Workspace()
    for step in range(3):
        X = rng.normal(size=(7, 9, 8, 2)).astype(np.float32) * (step + 1)
        Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 7)]
        want_loss, want = net.loss_and_grad(flat, X, Y, ctx=Context(training=True))
        got_loss, got = net.loss_and_grad(flat, X, Y, ctx=Context(training=True, workspace=ws))
        assert got_loss == want_loss and got.tobytes() == want.tobytes()
        out = net.decision_function(flat, X, Context(workspace=ws))
        assert out.tobytes() == net.decision_function(flat, X).tobytes()
