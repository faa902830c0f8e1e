"""The per-step fast paths of the training kernel give the bits of the plain expressions they
replace (issue 9): buffered L2 penalty, boolean-mask multiply, whole-array sums, memoised views,
and local steps that update a working copy in place without touching the caller's arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import backend as bk
from pipeline import nn, optim
from pipeline.blocks import Block
from pipeline.train import local_steps, tasks
from pipeline.train import order as epoch


def _host(a):
    return np.asarray(bk.to_host(a))


def _model(hidden: int = 5) -> nn.MLPSpec:
    return nn.MLPSpec((4, hidden, 3, 1), "relu", "binary_log_loss")


def test_buffered_penalty_is_the_plain_penalty(backend):
    xp = backend.xp
    spec = _model()
    flat = backend.asarray(spec.init_params(0, dtype=np.float32))
    ws = nn.Workspace()
    ctx = nn.Context(training=True, workspace=ws, need_input_grad=False)
    plain_pen, plain_grad = spec.l2_penalty(flat, 1e-3, 37)
    for _ in range(2):  # the second call reuses the buffers
        pen, grad = spec.l2_penalty(flat, 1e-3, 37, ctx)
        assert pen == plain_pen
        assert np.array_equal(_host(grad), _host(plain_grad))
    # the oracle: 0.5 * alpha / n * sum(W**2) (float64 sums of float32 squares), alpha W / n
    host = _host(flat)
    weights = [np.asarray(W) for W, _ in nn.unpack(spec, host)]
    want = 0.5 * (1e-3 / 37) * sum(float(np.sum(W * W, dtype=np.float64)) for W in weights)
    assert math.isclose(plain_pen, want, rel_tol=1e-12)
    assert xp.all(xp.isfinite(grad))


def test_buffered_penalty_rezeroes_after_another_model_used_the_buffer():
    # two models with 37 parameters each, laid out differently, share a workspace: the buffer
    # holds a's weights where b keeps biases, which must read 0 again for b (and back)
    a, b = nn.MLPSpec((4, 6, 1), "relu", "squared_error"), nn.MLPSpec((1, 12, 1), "relu",
                                                                      "squared_error")
    assert a.n_params == b.n_params
    ws = nn.Workspace()
    ctx = nn.Context(training=True, workspace=ws, need_input_grad=False)
    flats = {a: a.init_params(0, np.float32), b: b.init_params(1, np.float32)}
    for spec in (a, b, a, b):
        pen, grad = spec.l2_penalty(flats[spec], 0.5, 10, ctx)
        plain_pen, plain_grad = spec.l2_penalty(flats[spec], 0.5, 10)
        assert pen == plain_pen
        assert np.array_equal(grad, plain_grad)


def test_masked_multiply_is_multiply_by_the_cast_mask(backend):
    xp = backend.xp
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((7, 5)).astype(np.float32))
    mask = x > 0.3
    want = x * xp.astype(mask, x.dtype)
    assert np.array_equal(_host(bk.masked(x, mask)), _host(want))
    out = xp.empty((7, 5), dtype=xp.float32, device=backend.device)
    got = bk.masked(x, mask, out=out,
                    scratch=xp.empty((7, 5), dtype=xp.float32, device=backend.device))
    assert np.array_equal(_host(got), _host(want))


def test_total_is_the_float64_sum(backend):
    xp = backend.xp
    x = backend.asarray(np.random.default_rng(1).standard_normal((33, 17)).astype(np.float32))
    assert bk.total(x, xp.float64) == float(xp.sum(x, dtype=xp.float64))
    assert math.isclose(bk.total(x, xp.float64),
                        math.fsum(_host(x).astype(np.float64).ravel()), rel_tol=1e-12)


def test_take_rows_in_range_skips_only_the_check():
    X = np.arange(20.0, dtype=np.float32).reshape(10, 2)
    idx = np.array([9, 0, 4], dtype=np.int32)
    out = np.empty((3, 2), np.float32)
    assert np.array_equal(bk.take_rows(X, idx, out=out, in_range=True), X[idx])
    with pytest.raises(IndexError):
        bk.take_rows(X, np.array([10]), out=np.empty((1, 2), np.float32))


def test_memo_rebuilds_for_another_source():
    ws = nn.Workspace()
    a, b = np.zeros(3), np.zeros(3)
    calls = []

    def build(model, arr):
        calls.append(arr)
        return [arr[:1]]

    first = ws.memo("v", ("m", a), build)
    assert ws.memo("v", ("m", a), build) is first and len(calls) == 1
    assert ws.memo("v", ("m", b), build) is not first and len(calls) == 2
    assert ws.memo("v", ("other", b), build) is not None and len(calls) == 3


def _plain_local_steps(spec, params, X, Y, batch, alpha, seed):
    """The kernel written with fresh arrays: w <- w + adam(grad / m + pen_grad)."""
    opt = optim.from_sklearn("adam", learning_rate_init=1e-3)
    n = X.shape[0]
    steps = math.ceil(n / batch)
    order = epoch.epoch_order(n, seed, 0, 0, True)
    w, state, loss_total = params, opt.init(params), 0.0
    for s in range(steps):
        lo, hi = epoch.step_rows(n, s, steps)
        rows = order[lo:hi]
        m = hi - lo
        loss, grad = spec.loss_and_grad(w, X[rows], Y[rows])
        pen, pen_grad = spec.l2_penalty(w, alpha, epoch.span(n, s, steps))
        updates, state = opt.update(grad / float(m) + pen_grad, state, w)
        w = optim.apply_updates(w, updates)
        loss_total += loss + pen * m
    return w, state, loss_total


def test_local_steps_match_fresh_arrays_and_leave_the_callers_arrays_alone():
    spec = _model(8)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 4)).astype(np.float32)
    Y = (rng.random((300, 1)) < 0.5).astype(np.float32)
    params = spec.init_params(0, dtype=np.float32)
    opt = optim.from_sklearn("adam", learning_rate_init=1e-3)
    state = opt.init(params)
    keep_params, keep_state = params.copy(), [np.array(s, copy=True) for s in state]
    steps = math.ceil(300 / 64)
    schedule = tuple((0, s, epoch.span(300, s, steps)) for s in range(steps))
    part, new_state = local_steps.partition_local_steps(
        Block(X, Y), params, state, spec, opt, 1e-4, tasks.Rate(1e-3), 0, schedule, steps, 7,
        True)
    assert np.array_equal(params, keep_params)
    assert all(np.array_equal(s, k) for s, k in zip(state, keep_state, strict=True))
    w, plain_state, loss = _plain_local_steps(spec, params, X, Y, 64, 1e-4, 7)
    assert part.loss == loss
    assert np.array_equal(part.vector, (w - params) * float(part.n))
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(new_state, plain_state, strict=True))


def test_local_steps_twice_on_one_block_give_the_same_result():
    # the second call reuses the block's workspace (the working copy among its buffers):
    # the first call's results must not change, and the second must equal the first
    spec = _model(6)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((200, 4)).astype(np.float32)
    Y = (rng.random((200, 1)) < 0.5).astype(np.float32)
    params = spec.init_params(1, dtype=np.float32)
    opt = optim.from_sklearn("adam", learning_rate_init=1e-3)
    steps = 4
    schedule = tuple((0, s, epoch.span(200, s, steps)) for s in range(steps))

    def run():
        return local_steps.partition_local_steps(Block(X, Y), params, None, spec, opt, 1e-4,
                                           tasks.Rate(1e-3), 11, schedule, steps, 3, True)

    first, first_state = run()
    kept = first.vector.copy(), [np.array(s, copy=True) for s in first_state]
    second, second_state = run()
    assert np.array_equal(first.vector, kept[0]) and np.array_equal(second.vector, kept[0])
    assert all(np.array_equal(a, b) for a, b in zip(first_state, kept[1], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(second_state, kept[1], strict=True))
    assert first.loss == second.loss
