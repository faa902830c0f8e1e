"""The NumPy fast paths of the training step give the bits of the expressions they replace:
Dense's ``(m, 1) @ (1, p)`` products against ``np.matmul`` itself, ReLU against a zeros buffer
against ``np.maximum(x, 0.0)``, Adam's ``out=`` update against its plain expressions, on
special values (signed zeros, NaN payloads, infinities, subnormals, products that underflow)
and random ones; and a network step on NumPy against the same step on array_api_strict (which
takes the generic paths)."""

from __future__ import annotations

import numpy as np
import pytest
from float_bits import bits, special_values

from pipeline import nn, optim
from pipeline.nn import Context, Workspace
from pipeline.nn.layers import _matmul
from pipeline.optim.optimizers import _adam_numpy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outer_product_is_numpys_matmul(dtype):
    col = special_values(dtype, 64, 0)[:, None]  # (64, 1)
    row = special_values(dtype, 40, 1)[None, :]  # (1, 40)
    with np.errstate(all="ignore"):
        want = np.matmul(col, row)
        got = _matmul(col, row, np.empty((64, 40), dtype))
        # a transposed view, as Dense.backward passes W.T
        W = np.ascontiguousarray(row.T)
        want_t = np.matmul(col, W.T)
        got_t = _matmul(col, W.T, np.empty((64, 40), dtype))
    assert np.array_equal(bits(got), bits(want))
    assert np.array_equal(bits(got_t), bits(want_t))
    # the case that tells "+ 0" apart: a product of -0.0 is +0.0 in NumPy's loop
    assert (bits(got[1, 12]) == bits(dtype(0.0))) and np.signbit(col[1, 0] * row[0, 12])


def test_outer_product_leaves_other_shapes_to_matmul():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((3, 4))
    assert np.array_equal(_matmul(a, b, np.empty((5, 4))), a @ b)
    a1, b1 = rng.standard_normal((1, 1)), rng.standard_normal((1, 4))  # vector @ matrix
    assert np.array_equal(_matmul(a1, b1, np.empty((1, 4))), a1 @ b1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_forward_is_maximum_with_zero(dtype):
    x = special_values(dtype, 4000, 3).reshape(40, 100)
    ctx = Context(training=True, workspace=Workspace())
    a, cache = nn.ReLU().forward([], x, ctx)
    assert np.array_equal(bits(a), bits(np.maximum(x, 0.0)))
    assert cache is a
    # the zeros buffer is never written: a second call on other data gives its own maximum
    y = -x
    assert np.array_equal(bits(nn.ReLU().forward([], y, ctx)[0]), bits(np.maximum(y, 0.0)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_out_update_is_the_plain_expressions(dtype):
    g = special_values(dtype, 3000, 4)
    mu0 = special_values(dtype, 3000, 5)
    nu0 = np.abs(special_values(dtype, 3000, 6))
    keep = mu0.copy(), nu0.copy()
    for lr_t in (1e-3, 0.37):
        with np.errstate(all="ignore"):
            mu = 0.9 * mu0 + (1 - 0.9) * g
            nu = 0.999 * nu0 + (1 - 0.999) * (g * g)
            want = (mu, nu, -lr_t * mu / (np.sqrt(nu) + 1e-8))
            got = _adam_numpy(g, mu0, nu0, 0.9, 0.999, lr_t, 1e-8)
        for w, o in zip(want, got, strict=True):
            assert o.dtype == w.dtype
            assert np.array_equal(bits(o), bits(w))
    assert np.array_equal(bits(mu0), bits(keep[0])) and np.array_equal(bits(nu0), bits(keep[1]))


def test_adam_steps_match_across_namespaces():
    """Ten Adam steps of a one-output network (both fast paths) on NumPy with a workspace and
    on array_api_strict (plain expressions, no buffers) end at the same bits."""
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(7)
    X = rng.standard_normal((50, 6)).astype(np.float32)
    X[0, :] = -0.0
    Y = (rng.random((50, 1)) < 0.5).astype(np.float32)
    spec = nn.MLPSpec((6, 16, 1), activation="relu", loss="binary_log_loss")
    opt = optim.adam(0.05)

    def run(Xa, Ya, w, ctx):
        state = opt.init(w)
        for _ in range(10):
            _, grad = spec.loss_and_grad(w, Xa, Ya, ctx=ctx)
            updates, state = opt.update(grad / 50.0, state, w)
            w = w + updates
        return w

    w0 = spec.init_params(0)
    ws = Workspace()
    fast = run(X, Y, w0, Context(training=True, workspace=ws, need_input_grad=False))
    plain = run(xps.asarray(X), xps.asarray(Y), xps.asarray(w0),
                Context(training=True, need_input_grad=False))
    assert np.array_equal(bits(fast), bits(np.from_dlpack(plain)))


def test_make_context_is_the_constructors_context():
    import dataclasses

    from pipeline.nn.layers import make_context

    ws = Workspace()
    fast = make_context(True, (1, 2, 3, 4), ws, False)
    slow = Context(training=True, key=(1, 2, 3, 4), workspace=ws, need_input_grad=False)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert vars(fast) == vars(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.training = False


def test_mlpspec_keeps_its_sequential_but_does_not_pickle_it():
    import pickle

    spec = nn.MLPSpec((3, 4, 2))
    seq = spec.sequential
    assert spec.sequential is seq
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec and hash(copy) == hash(spec)
    assert "_sequential" not in copy.__dict__
    assert copy.sequential is seq  # the memo of equal specs
