"""Helpers of the nn tests: a finite-difference check of one layer's backward and a small
tabular network using every layer kind."""

from __future__ import annotations

import math

import numpy as np

from pipeline.backend import to_host
from pipeline.nn import (
    ColumnSplit,
    Context,
    Dense,
    Dropout,
    Embedding,
    Identity,
    LayerNorm,
    Sequential,
    Tanh,
)


def central_differences(f, x, h=1e-6):
    grad = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        grad.flat[i] = (f(x + e) - f(x - e)) / (2 * h)
    return grad


def views(xp, flat, shapes):
    out, start = [], 0
    for s in shapes:
        out.append(xp.reshape(flat[start:start + math.prod(s)], s))
        start += math.prod(s)
    return out


def check_layer_gradients(layer, in_shape, x, backend, *, params=None, check_dx=True,
                          training=False, key=None, rtol=1e-6, atol=1e-8):
    """Backward of ``layer`` against central differences of ``sum(R * forward(x))`` for a fixed
    random ``R``, in float64 on ``backend``; returns (flat params, y) for further checks."""
    xp = backend.xp
    shapes, out_shape = layer.build(tuple(in_shape))
    rng = np.random.default_rng(1)
    if params is None:
        params = layer.init(rng, tuple(in_shape))
    for p, s in zip(params, shapes, strict=True):
        assert p.dtype == np.float64 and p.shape == tuple(s)
    flat = (np.concatenate([np.ravel(p) for p in params]) if params else np.zeros(0))
    # Move parameters off their init values so that e.g. LayerNorm's gamma matters.
    flat = flat + 0.3 * rng.standard_normal(flat.shape)
    R = rng.standard_normal((x.shape[0], *out_shape))
    Rb = backend.asarray(R)

    def objective(flat_h, x_h):
        ctx = Context(training=training, key=key)
        y, _ = layer.forward(views(xp, backend.asarray(flat_h), shapes), backend.asarray(x_h),
                             ctx)
        return float(np.sum(R * to_host(y)))

    ctx = Context(training=training, key=key, need_input_grad=check_dx)
    P = views(xp, backend.asarray(flat), shapes)
    xb = backend.asarray(x)
    y, cache = layer.forward(P, xb, ctx)
    assert tuple(y.shape) == (x.shape[0], *out_shape)
    grad = xp.zeros((flat.size,), dtype=xp.float64, device=backend.device)
    dx = layer.backward(P, cache, Rb, ctx, views(xp, grad, shapes))
    expected = central_differences(lambda f: objective(f, x), flat)
    np.testing.assert_allclose(to_host(grad), expected, rtol=rtol, atol=atol)
    if check_dx:
        expected_dx = central_differences(lambda v: objective(flat, v), x)
        np.testing.assert_allclose(to_host(dx), expected_dx, rtol=rtol, atol=atol)
    else:
        assert dx is None
    return flat, to_host(y)


def tabular_model(loss, n_outputs):
    """Numeric columns 0-2 and code columns 3-4 -> LayerNorm -> Dense/Tanh/Dropout -> Dense."""
    encode = ColumnSplit([((0, 1, 2), Identity()), ((3, 4), Embedding((5, 3), (2, 2)))])
    return Sequential([encode, LayerNorm(), Dense(6), Tanh(), Dropout(0.2), Dense(n_outputs)],
                      loss=loss, in_shape=(5,))


def tabular_data(rng, n, n_outputs, loss):
    X = np.concatenate([rng.standard_normal((n, 3)),
                        np.stack([rng.integers(0, 5, n), rng.integers(0, 3, n)], 1)], axis=1)
    if loss == "log_loss":
        Y = np.eye(n_outputs)[rng.integers(0, n_outputs, n)]
    elif loss == "binary_log_loss":
        Y = rng.integers(0, 2, (n, n_outputs)).astype(np.float64)
    else:
        Y = rng.standard_normal((n, n_outputs))
    return X, Y


def small_layout():
    """A tabular layout with every kind of column: 3 numeric, 1 indicator, a one-hot and an
    embedded categorical."""
    from pipeline.tabular_prep import TabularLayout

    return TabularLayout(n_features=6, numeric=(0, 3), numeric_features=("a", "b", "c"),
                         numeric_encoding="quantile_normal", numeric_width=1, indicators=(3, 4),
                         indicator_features=("a",), categorical=(4, 6),
                         categorical_features=("p", "q"), cardinalities=(3, 12),
                         embedding_dims=(2, 5), one_hot=(True, False))


def tabular_rows(rng, n):
    """``n`` float32 rows of :func:`small_layout`."""
    X = np.concatenate([rng.standard_normal((n, 3)), rng.integers(0, 2, (n, 1)),
                        rng.integers(0, 3, (n, 1)), rng.integers(0, 12, (n, 1))], axis=1)
    return X.astype(np.float32)
