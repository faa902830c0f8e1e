"""Every layer's backward against central finite differences (float64, NumPy and
array_api_strict on a non-default device), forward oracles for LayerNorm (PyTorch) and
Embedding (NumPy indexing), Dropout's randomness, and Sequential with each loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from array_api_compat import device
from layer_check import (
    central_differences,
    check_layer_gradients,
    tabular_data,
    tabular_model,
    views,
)

from pipeline.backend import to_host
from pipeline.nn import (
    LOSSES,
    Chain,
    ColumnSplit,
    Context,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    LayerNorm,
    Logistic,
    Periodic,
    ReLU,
    Sequential,
    Tanh,
    Workspace,
)

ACTIVATION_LAYERS = [Identity, ReLU, Tanh, Logistic]


@pytest.fixture
def x(rng):
    return rng.standard_normal((6, 5))


def test_dense(x, backend):
    check_layer_gradients(Dense(4), (5,), x, backend)


def test_dense_input_layer_skips_dx(x, backend):
    check_layer_gradients(Dense(3), (5,), x, backend, check_dx=False)


@pytest.mark.parametrize("cls", ACTIVATION_LAYERS, ids=lambda c: c.__name__)
def test_activation(cls, x, backend):
    _, y = check_layer_gradients(cls(), (5,), x, backend)
    expected = {Identity: x, ReLU: np.maximum(x, 0), Tanh: np.tanh(x),
                Logistic: 1 / (1 + np.exp(-x))}[cls]
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("training", [False, True])
def test_dropout(training, x, backend):
    _, y = check_layer_gradients(Dropout(0.4), (5,), x, backend, training=training,
                                 key=(3, 0, 1, 2))
    if not training:
        np.testing.assert_array_equal(y, x)
    else:
        kept = y != 0
        np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-15)


def test_dropout_randomness(backend):
    ones = backend.asarray(np.ones((400, 500), dtype=np.float32))
    layer = Dropout(0.3)
    layer.build((500,))

    def draw(key):
        return to_host(layer.forward([], ones, Context(training=True, key=key))[0])

    a = draw((1, 2, 3, 4))
    np.testing.assert_array_equal(a, draw((1, 2, 3, 4)))
    assert not np.array_equal(a, draw((1, 2, 3, 5)))
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.7)}
    # 200,000 Bernoulli(0.7) draws: the kept fraction within 5 standard deviations of 0.7, and
    # the mean (the expectation dropout preserves) within 5 of 1.
    n = a.size
    assert abs((a != 0).mean() - 0.7) < 5 * np.sqrt(0.7 * 0.3 / n)
    assert abs(a.mean() - 1.0) < 5 * np.sqrt(0.3 / 0.7 / n)
    # The mask: the key's generator's raw 64-bit outputs as 16-bit values, kept from
    # round(0.3 * 65536) up.
    raw = np.random.default_rng((1, 2, 3, 4)).bit_generator.random_raw(400 * 500 // 4)
    bits = np.array([(int(r) >> (16 * i)) & 0xFFFF for r in raw for i in range(4)])
    np.testing.assert_array_equal((a != 0).ravel(), bits >= round(0.3 * 65536))
    # Float32 and float64 data drop the same units for the same key.
    ones64 = backend.asarray(np.ones((400, 500)))
    b = to_host(layer.forward([], ones64, Context(training=True, key=(1, 2, 3, 4)))[0])
    np.testing.assert_array_equal(a != 0, b != 0)
    with pytest.raises(ValueError, match=r"needs Context\.key"):
        layer.forward([], ones, Context(training=True))


def test_chained_dropouts_draw_different_masks():
    model = Sequential([Dropout(0.5), Dropout(0.5), Dense(1)], loss="squared_error",
                       in_shape=(2000,))
    ones = np.ones((1, 2000))
    chain = model.body
    ctx = Context(training=True, key=(0, 0, 0, 0))
    _, caches = chain.forward([np.eye(2000)[:, :1], np.zeros(1)], ones, ctx)
    assert not np.array_equal(caches[0], caches[1])


def test_layer_norm(backend, rng):
    x = rng.standard_normal((7, 6)) * 3 + 1
    flat, y = check_layer_gradients(LayerNorm(), (6,), x, backend, rtol=1e-5, atol=1e-7)
    gamma, beta = flat[:6], flat[6:]
    expected = torch.nn.functional.layer_norm(
        torch.from_numpy(x), (6,), torch.from_numpy(gamma), torch.from_numpy(beta), eps=1e-5)
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-12, atol=1e-12)


def test_layer_norm_over_the_last_of_several_axes(backend, rng):
    x = rng.standard_normal((3, 4, 5))
    flat, y = check_layer_gradients(LayerNorm(eps=1e-3), (4, 5), x, backend, rtol=1e-5,
                                    atol=1e-7)
    expected = torch.nn.functional.layer_norm(
        torch.from_numpy(x), (5,), torch.from_numpy(flat[:5]), torch.from_numpy(flat[5:]),
        eps=1e-3)
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-12, atol=1e-12)


def test_embedding(backend, rng):
    vocab, dims = (4, 7, 3), (2, 3, 1)
    codes = np.stack([rng.integers(0, v, size=9) for v in vocab], axis=1).astype(np.float64)
    layer = Embedding(vocab, dims)
    flat, y = check_layer_gradients(layer, (3,), codes, backend, check_dx=False)
    tables = views(np, flat, [(4, 2), (7, 3), (3, 1)])
    expected = np.concatenate([T[codes[:, j].astype(int)] for j, T in enumerate(tables)], 1)
    np.testing.assert_array_equal(y, expected)
    # Codes are not differentiable: the input gradient is zero.
    P = views(backend.xp, backend.asarray(flat), [(4, 2), (7, 3), (3, 1)])
    ctx = Context(need_input_grad=True)
    codes_b = backend.asarray(codes)
    out, cache = layer.forward(P, codes_b, ctx)
    grad = backend.xp.zeros((flat.size,), dtype=backend.xp.float64, device=backend.device)
    dx = layer.backward(P, cache, out, ctx, views(backend.xp, grad, [(4, 2), (7, 3), (3, 1)]))
    assert device(dx) == device(codes_b)
    np.testing.assert_array_equal(to_host(dx), 0.0)


@pytest.mark.parametrize("n", [0, 1, 300])
def test_embedding_gradient_is_the_scatter_add_on_every_backend(backend, rng, n):
    """The tables' gradient, ``dT_j[c] = sum of dy_j over the rows whose code is c``, against
    ``np.add.at`` in float64 written out here: NumPy's sorted-runs path and the one-hot product
    of the other namespaces alike (float32; codes repeated, some never used)."""
    vocab, dims = (1, 5, 1001), (2, 3, 7)
    codes = np.stack([rng.integers(0, v, size=n) for v in vocab], axis=1).astype(np.float32)
    layer = Embedding(vocab, dims)
    shapes = list(zip(vocab, dims, strict=True))
    P = [backend.asarray(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    ctx = Context(need_input_grad=False)
    _, cache = layer.forward(P, backend.asarray(codes), ctx)
    dy = rng.standard_normal((n, sum(dims))).astype(np.float32)
    grads = [backend.xp.zeros(s, dtype=backend.xp.float32, device=backend.device)
             for s in shapes]
    for g in grads:  # stale values: the backward overwrites, it does not add
        g[...] = 3.0
    assert layer.backward(P, cache, backend.asarray(dy), ctx, grads) is None
    start = 0
    for j, (v, d) in enumerate(shapes):
        expected = np.zeros((v, d))
        np.add.at(expected, codes[:, j].astype(int), dy[:, start:start + d].astype(np.float64))
        np.testing.assert_allclose(to_host(grads[j]), expected, rtol=1e-6, atol=1e-6)
        start += d


def test_periodic(backend, rng):
    layer = Periodic(n_frequencies=3, sigma=0.5)
    x = rng.standard_normal((7, 4))
    flat, y = check_layer_gradients(layer, (4,), x, backend)
    # the paper's formula written out: every feature's sines, then every feature's cosines
    c = flat.reshape(4, 3)
    z = 2 * np.pi * x[:, :, None] * c[None]
    expected = np.concatenate([np.sin(z).reshape(7, 12), np.cos(z).reshape(7, 12)], axis=1)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert layer.penalized([(4, 3)]) == [False]
    assert np.std(layer.init(np.random.default_rng(0), (400,))[0]) == pytest.approx(0.5, rel=0.05)


def test_periodic_frequency_counts_per_feature(backend, rng):
    """Features of different frequency counts in one layer: the paper's formula written out
    feature by feature (every feature's sines, then every feature's cosines), gradients against
    central differences, one (features, k) parameter per run of equal counts; ``order="groups"``
    is each run's sines then its cosines."""
    counts = (3, 3, 1, 2, 2, 2)
    x = rng.standard_normal((7, 6))
    layer = Periodic(n_frequencies=counts, sigma=0.5)
    assert layer.build((6,)) == ([(2, 3), (1, 1), (3, 2)], (2 * 13,))
    flat, y = check_layer_gradients(layer, (6,), x, backend)
    c = [flat[:6].reshape(2, 3), flat[6:7].reshape(1, 1), flat[7:].reshape(3, 2)]
    per_feature = [c[0][0], c[0][1], c[1][0], c[2][0], c[2][1], c[2][2]]
    z = [2 * np.pi * x[:, [j]] * per_feature[j][None] for j in range(6)]
    sines = np.concatenate([np.sin(zj) for zj in z], axis=1)
    cosines = np.concatenate([np.cos(zj) for zj in z], axis=1)
    np.testing.assert_allclose(y, np.concatenate([sines, cosines], axis=1), rtol=1e-12,
                               atol=1e-12)
    grouped = Periodic(n_frequencies=counts, sigma=0.5, order="groups")
    _, yg = check_layer_gradients(grouped, (6,), x, backend)
    runs = [(0, 6), (6, 7), (7, 13)]  # each run's columns among the 13 frequencies
    expected = np.concatenate([part for a, b in runs for part in (sines[:, a:b],
                                                                  cosines[:, a:b])], axis=1)
    np.testing.assert_allclose(yg, expected, rtol=1e-12, atol=1e-12)
    assert layer.penalized([(2, 3), (1, 1), (3, 2)]) == [False] * 3
    assert [p.shape for p in layer.init(np.random.default_rng(0), (6,))] == [(2, 3), (1, 1),
                                                                               (3, 2)]
    with pytest.raises(ValueError, match="frequency counts for 6 features; its input has 5"):
        Periodic(counts).build((5,))
    with pytest.raises(ValueError, match="n_frequencies must be"):
        Periodic((3, 0))
    with pytest.raises(ValueError, match="order must be"):
        Periodic(3, order="interleaved")


def test_embedding_rejects_codes_out_of_range(backend):
    layer = Embedding((3, 5), (2, 2))
    layer.build((2,))
    P = [backend.asarray(np.zeros((3, 2))), backend.asarray(np.zeros((5, 2)))]
    for bad, ctx in itertools.product((5.0, -1.0, np.nan, -0.5),
                                      (Context(), Context(workspace=Workspace()))):
        codes = backend.asarray(np.array([[0.0, 1.0], [2.0, bad]]))
        with pytest.raises(ValueError, match=r"input column 1 must lie in \[0, 5\)"):
            layer.forward(P, codes, ctx)


def test_column_split(backend, rng):
    # A numeric branch on non-contiguous, repeated columns and an embedding branch.
    layer = ColumnSplit([((0, 3, 0), Chain([Dense(3), Tanh()])), ((1, 2), Dense(2)),
                         ((4,), Identity())])
    x = rng.standard_normal((8, 5))
    _, y = check_layer_gradients(layer, (5,), x, backend)
    assert y.shape == (8, 6)
    np.testing.assert_array_equal(y[:, 5], x[:, 4])


def test_column_split_with_embedding(backend, rng):
    layer = ColumnSplit([((0, 1), Identity()), ((2, 3), Embedding((3, 4), (2, 2)))])
    x = np.concatenate([rng.standard_normal((6, 2)),
                        np.stack([rng.integers(0, 3, 6), rng.integers(0, 4, 6)], 1)], axis=1)
    check_layer_gradients(layer, (4,), x, backend, check_dx=False)


def test_flatten(backend, rng):
    check_layer_gradients(Chain([Flatten(), Dense(3)]), (2, 3), rng.standard_normal((4, 2, 3)),
                          backend)


@pytest.mark.parametrize("loss", LOSSES)
def test_sequential_gradient(loss, backend, rng):
    model = tabular_model(loss, 3)
    X, Y = tabular_data(rng, 10, 3, loss)
    sw = rng.uniform(0.5, 2.0, 10)
    flat = model.init_params(0, np.float64)
    assert flat.shape == (model.n_params,) and model.n_outputs == 3 and model.loss == loss
    ctx = Context(training=True, key=(0, 1, 2, 3), need_input_grad=False)
    Xb, Yb, swb = backend.asarray(X), backend.asarray(Y), backend.asarray(sw)
    _, grad = model.loss_and_grad(flat, Xb, Yb, swb, ctx=ctx)
    assert device(grad) == device(Xb) and grad.dtype == backend.xp.float64

    def objective(f):
        return model.loss_and_grad(f, Xb, Yb, swb, ctx=ctx)[0]

    np.testing.assert_allclose(to_host(grad), central_differences(objective, flat),
                               rtol=1e-5, atol=1e-7)
    # The loss is the summed per-row loss of the forward outputs (Dropout off in both).
    P = to_host(model.forward(flat, Xb))
    eval_value, _ = model.loss_and_grad(flat, Xb, Yb, swb, ctx=Context(training=False))
    if loss == "log_loss":
        rows = -np.sum(Y * np.log(P), axis=1)
    elif loss == "binary_log_loss":
        rows = -np.sum(Y * np.log(P) + (1 - Y) * np.log1p(-P), axis=1)
    else:
        rows = 0.5 * np.sum((P - Y) ** 2, axis=1)
    assert eval_value == pytest.approx(float(np.sum(sw * rows)), rel=1e-10)


def test_sequential_l2_penalty_covers_weights_only(backend):
    model = tabular_model("squared_error", 2)
    flat = model.init_params(1, np.float64)
    alpha, n = 0.7, 13.0
    value, grad = model.l2_penalty(backend.asarray(flat), alpha, n)
    # Weights: the embedding tables and the two dense kernels, by position in the flat buffer.
    shapes = model.param_shapes
    assert shapes == [(5, 2), (3, 2), (7,), (7,), (7, 6), (6,), (6, 2), (2,)]
    weight = np.zeros(flat.size, dtype=bool)
    start = 0
    for s in shapes:
        size = int(np.prod(s))
        weight[start:start + size] = len(s) == 2
        start += size
    assert value == pytest.approx(0.5 * alpha * np.sum(flat[weight] ** 2) / n, rel=1e-12)
    expected = central_differences(lambda f: model.l2_penalty(f, alpha, n)[0], flat)
    np.testing.assert_allclose(to_host(grad), expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(to_host(grad)[~weight], 0.0)


def test_sequential_validation(rng):
    model = tabular_model("log_loss", 3)
    flat = model.init_params(0)
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 5\)"):
        model.forward(flat, np.ones((2, 4)))
    with pytest.raises(ValueError, match=rf"flat parameters must have shape \({model.n_params},"):
        model.forward(flat[:-1], np.zeros((2, 5)))
    with pytest.raises(ValueError, match="loss must be one of"):
        Sequential([Dense(1)], loss="hinge", in_shape=2)
    with pytest.raises(ValueError, match="Flatten"):
        Sequential([Dense(1)], loss="squared_error", in_shape=(2, 3))
    with pytest.raises(ValueError, match="branch 0 selects columns"):
        ColumnSplit([((0, 9), Identity())]).build((5,))
