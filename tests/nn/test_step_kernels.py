"""The tabular training step's cheaper kernels (issue 13) give the bits of the expressions they
replace: the L2 penalty at ``alpha = 0``, the ensemble loss in buffers, weight decay run by run of its mask, ... Oracles: the plain (workspace-free) paths, which
evaluate the textbook expressions, compared bit for bit (``view`` as unsigned integers, so
signed zeros and NaN payload positions count)."""

from __future__ import annotations

import math
import warnings
from itertools import pairwise

import numpy as np
import pytest
from float_bits import special_values
from layer_check import small_layout, tabular_rows

from pipeline import backend as bk
from pipeline import nn, optim


def _bits(a):
    a = np.asarray(bk.to_host(a))
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _same(a, b) -> bool:
    return np.array_equal(_bits(a), _bits(b))


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                  math.copysign(1, b))


@pytest.mark.parametrize("alpha", [0.0, -0.0, 1e-4])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf, 2e19, -3e19, 1e19, -0.0])
def test_penalty_at_alpha_zero_is_the_plain_penalty(alpha, bad):
    # 2e19 squared overflows float32 (the float64 total is inf, the penalty 0 * inf = NaN);
    # 1e19 squared does not
    spec = nn.MLPSpec((4, 6, 1), "relu", "squared_error")
    flat = spec.init_params(0, np.float32)
    flat[:5] = -np.abs(flat[:5])  # negative weights: their gradient W * 0.0 is -0.0
    if bad is not None:
        flat[3] = bad
    ws = nn.Workspace()
    ctx = nn.Context(training=True, workspace=ws, need_input_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf * 0, overflowing squares
        want_pen, want_grad = spec.l2_penalty(flat, alpha, 10)
        for _ in range(2):  # the second call reuses the buffers
            pen, grad = spec.l2_penalty(flat, alpha, 10, ctx)
            assert _same_float(pen, want_pen)
            assert _same(grad, want_grad)


def test_penalty_at_alpha_zero_on_every_backend(backend):
    spec = nn.MLPSpec((4, 6, 3, 1), "relu", "binary_log_loss")
    flat = backend.asarray(spec.init_params(1, np.float32))
    ctx = nn.Context(training=True, workspace=nn.Workspace(), need_input_grad=False)
    want_pen, want_grad = spec.l2_penalty(flat, 0.0, 7)
    pen, grad = spec.l2_penalty(flat, 0.0, 7, ctx)
    assert _same_float(pen, want_pen) and want_pen == 0.0
    assert _same(grad, want_grad)




@pytest.mark.parametrize("loss,n_outputs", [("binary_log_loss", 1), ("binary_log_loss", 2),
                                            ("log_loss", 3), ("squared_error", 1),
                                            ("squared_error", 2)])
@pytest.mark.parametrize("weights", ["none", "column", "argument"])
def test_ensemble_loss_in_buffers_is_the_plain_loss(loss, n_outputs, weights, rng):
    # the oracle: the same model without a workspace (fresh arrays, the plain expressions)
    from pipeline.tabular_net import build_network
    model = build_network(small_layout(), n_outputs, loss, hidden_layer_sizes=(16,), dropout=0.1,
                          layer_norm=False, n_members=3)
    flat = model.init_params(0).astype(np.float32)
    ws = nn.Workspace()
    for step, n in enumerate((40, 40, 7, 40)):
        X = tabular_rows(rng, n)
        if loss == "log_loss":
            Y = np.eye(n_outputs, dtype=np.float32)[rng.integers(0, n_outputs, n)]
        elif loss == "binary_log_loss":
            Y = rng.integers(0, 2, (n, n_outputs)).astype(np.float32)
        else:
            Y = rng.standard_normal((n, n_outputs)).astype(np.float32)
        sw = rng.uniform(0.5, 2.0, n).astype(np.float32)
        kw = {}
        if weights == "column":
            Y = np.concatenate([Y, sw[:, None]], axis=1)
        elif weights == "argument":
            kw = {"sample_weight": sw}
        key = (0, 0, 0, step)
        want = model.loss_and_grad(flat, X, Y, ctx=nn.Context(training=True, key=key,
                                                              need_input_grad=False), **kw)
        got = model.loss_and_grad(flat, X, Y, ctx=nn.Context(
            training=True, key=key, workspace=ws, need_input_grad=False), **kw)
        assert _same_float(got[0], want[0]) and _same(got[1], want[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("edges", [(0, 40, 41, 900, 1000, 2990), (7,), (), tuple(range(1, 200, 2))])
@pytest.mark.parametrize("first", [True, False])
def test_decay_run_by_run_is_the_plain_update(dtype, edges, first):
    # a mask of few runs (the tabular weight mask: kernels and tables decay, biases do not),
    # one run, and one of 199 runs (the masked copy instead); every special value meets both
    # mask states in the shifted gradients
    n = 3000
    mask = np.zeros(n, bool)
    value = first
    for a, b in pairwise((0, *edges, n)):
        mask[a:b] = value
        value = not value
    params = special_values(dtype, n, 60)
    keep = params.copy()
    opt = optim.add_decayed_weights(0.05, mask)
    ws = nn.Workspace()
    state = opt.init(params)
    for k in range(3):
        g = np.roll(special_values(dtype, n, 61 + k), 7 * k)
        with np.errstate(all="ignore"):
            want, _ = opt.update(g, state, params)
            got, _ = opt.update_into(g.copy(), state, params, ws)
        assert _same(got, want)
    assert _same(params, keep)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacked_outer_product_is_numpys_matmul(dtype):
    # an ensemble's one-output layer: dx = dy (k, n, 1) @ W^T (k, 1, d), on special values
    from pipeline.nn.layers import _matmul
    col = special_values(dtype, 3 * 64, 70).reshape(3, 64, 1)
    W = special_values(dtype, 3 * 40, 71).reshape(3, 40, 1)
    with np.errstate(all="ignore"):
        want = np.matmul(col, np.transpose(W, (0, 2, 1)))
        got = _matmul(col, np.transpose(W, (0, 2, 1)), np.empty((3, 64, 40), dtype))
        products = col * np.transpose(W, (0, 2, 1))
    assert _same(got, want)
    # a product of -0.0 comes out +0.0 (NumPy's loop adds it to 0), as the fast path must
    assert np.any(np.signbit(products) & ~np.signbit(want) & (want == 0))
    # other stacks are left to matmul: unequal stack shapes, k > 1
    a, b = np.ones((2, 5, 1), dtype), np.ones((1, 1, 4), dtype)
    assert _same(_matmul(a, b, np.empty((2, 5, 4), dtype)), np.matmul(a, b))
    a = special_values(dtype, 30, 72).reshape(2, 5, 3)
    b = special_values(dtype, 24, 73).reshape(2, 3, 4)
    with np.errstate(all="ignore"):
        assert _same(_matmul(a, b, np.empty((2, 5, 4), dtype)), np.matmul(a, b))


def test_one_workspace_serves_networks_of_other_vocabularies(rng):
    # a worker's block workspace outlives a fit: the next network (other vocabularies for its
    # one-hot and embedded columns) must not see the previous one's code ranges
    from dataclasses import replace

    from pipeline.tabular_net import build_network
    ws = nn.Workspace()
    small = small_layout()
    big = replace(small, cardinalities=(2, 30), embedding_dims=(2, 7))
    for layout, top in ((small, (3, 12)), (big, (2, 30)), (small, (3, 12))):
        model = build_network(layout, 1, "binary_log_loss", hidden_layer_sizes=(8,),
                              dropout=0.0, layer_norm=False, n_members=2)
        flat = model.init_params(1).astype(np.float32)
        X = tabular_rows(rng, 30)
        X[:, 4] = rng.integers(0, top[0], 30)
        X[:, 5] = rng.integers(0, top[1], 30)
        Y = rng.integers(0, 2, (30, 1)).astype(np.float32)
        want = model.loss_and_grad(flat, X, Y, ctx=nn.Context(training=True, key=(0,),
                                                              need_input_grad=False))
        got = model.loss_and_grad(flat, X, Y, ctx=nn.Context(training=True, key=(0,),
                                                             workspace=ws,
                                                             need_input_grad=False))
        assert _same_float(got[0], want[0]) and _same(got[1], want[1])
