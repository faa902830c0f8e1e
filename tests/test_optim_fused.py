"""The fused AdamW step (pipeline.optim.fused_adamw): against PyTorch's AdamW after optax's
global-norm clip written out in NumPy (an independent oracle), against the chain it fuses, and
its fallbacks."""

import numpy as np
import pytest

from pipeline import optim
from pipeline.nn import Workspace


def _fused(lr, mask=None, clip=1.0, wd=0.05):
    return optim.fused_adamw(lr, beta_1=0.8, beta_2=0.95, epsilon=1e-6, weight_decay=wd,
                             mask=mask, clip_norm=clip)


@pytest.mark.parametrize("masked", [False, True])
def test_fused_step_matches_torch_adamw_with_clipping(masked):
    """Float64, a warm-up and cosine schedule, a gradient of ``scale * grads`` that clipping
    rescales on some steps and not others; a mask is two PyTorch parameter groups."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    n, wd, lr, clip, scale = 40, 0.05, 0.01, 1.0, 1 / 8
    params = rng.normal(size=n)
    mask = np.r_[np.ones(25, bool), np.zeros(15, bool)] if masked else None
    sched = optim.warmup_cosine_decay(lr, warmup_steps=5, total_steps=40, end_value=1e-3)
    opt = _fused(sched, mask, clip, wd)
    decays = mask if masked else np.ones(n, dtype=bool)
    tensors = [torch.tensor(params[decays], requires_grad=True),
               torch.tensor(params[~decays], requires_grad=True)]
    ref = torch.optim.AdamW([{"params": [tensors[0]], "weight_decay": wd},
                             {"params": [tensors[1]], "weight_decay": 0.0}],
                            lr=lr, betas=(0.8, 0.95), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(ref, lambda t: sched(t) / lr)
    ws = Workspace()
    w = params.copy()
    state = opt.init(w)
    clipped = 0
    for step in range(40):
        grads = rng.normal(size=n) * (4.0 if step % 3 == 0 else 0.5)
        clipped += np.linalg.norm(scale * grads) >= clip
        out = opt.step_into(grads, scale, state, w, ws)
        assert out is not None and out[0] is w  # in place
        w, state = out
        # optax's clip, written out (torch's clip_grad_norm_ divides by norm + 1e-6)
        g = scale * grads
        norm = np.sqrt(np.sum(g * g))
        g = g if norm < clip else g / norm * clip
        tensors[0].grad = torch.tensor(g[decays])
        tensors[1].grad = torch.tensor(g[~decays])
        ref.step()
        scheduler.step()
        np.testing.assert_allclose(w[decays], tensors[0].detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(w[~decays], tensors[1].detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
    assert 0 < clipped < 40  # both branches of the clip ran


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
def test_fused_step_matches_the_chain_it_fuses(dtype, rtol):
    """The same optimizer's plain ``update`` (clip, Adam, decay, rate, then params + updates)
    from the same state: the same parameters up to rounding, and the same state fields, so
    either path continues from the other's state."""
    rng = np.random.default_rng(0)
    n = 300
    mask = np.repeat([True, False, True, False], [120, 30, 100, 50])
    opt = optim.from_sklearn("adamw", learning_rate_init=3e-3, learning_rate="cosine",
                             weight_decay=1e-2, clip_norm=1.0, warmup_steps=3, total_steps=60,
                             weight_mask=mask, fused=True)
    w_fused = rng.normal(size=n).astype(dtype)
    w_plain = w_fused.copy()
    state_f = state_p = opt.init(w_fused)
    ws = Workspace()
    for step in range(30):
        grads = (rng.normal(size=n) * (30 if step % 4 == 0 else 1)).astype(dtype)
        w_fused, state_f = opt.step_into(grads, 1 / 16, state_f, w_fused, ws)
        state_f = optim.state_copy(state_f)  # (the workspace's buffers, as _own copies them)
        updates, state_p = opt.update(grads / dtype(16), state_p, w_plain)
        w_plain = optim.apply_updates(w_plain, updates)
        assert w_fused.dtype == dtype
        np.testing.assert_allclose(w_fused, w_plain, rtol=rtol, atol=rtol * 1e-2)
    _, (adam_f, _, lr_f) = state_f
    _, (adam_p, _, lr_p) = state_p
    assert float(adam_f.count) == float(adam_p.count) == 30
    # (entries near zero after cancellation: an absolute bound at the moments' scale)
    for f, p in ((adam_f.mu, adam_p.mu), (adam_f.nu, adam_p.nu)):
        np.testing.assert_allclose(f, p, rtol=rtol, atol=rtol * float(np.abs(p).max()))
    assert optim.get_learning_rate(state_f) == optim.get_learning_rate(state_p)
    assert float(lr_f.count) == float(lr_p.count)
    # the plain path continues from the fused path's state
    updates, _ = opt.update(np.ones(n, dtype), state_f, w_fused)
    assert np.isfinite(updates).all()


def test_fused_step_leaves_its_inputs_and_a_foreign_state_unchanged():
    rng = np.random.default_rng(1)
    opt = _fused(1e-2)
    w = rng.normal(size=50)
    state = opt.init(w)
    state = opt.update(rng.normal(size=50), state, w)[1]  # a state not in the workspace
    before = optim.state_copy(state)
    grads = rng.normal(size=50)
    g0 = grads.copy()
    opt.step_into(grads, 0.5, state, w, Workspace())
    np.testing.assert_array_equal(grads, g0)
    _, (adam, _, _) = state
    np.testing.assert_array_equal(adam.mu, before[1][0].mu)
    np.testing.assert_array_equal(adam.nu, before[1][0].nu)


def test_fused_step_declines_what_it_cannot_do_in_place():
    """None, and the caller updates the plain way: another array library, mixed dtypes, a
    read-only parameter vector, a mask of many runs, a workspace without buffers."""
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(2)
    w = rng.normal(size=200)
    opt = _fused(1e-2)
    state = opt.init(w)
    ws = Workspace()
    ws_strict = Workspace()
    strict = xps.asarray(w)
    assert opt.step_into(strict, 1.0, opt.init(strict), xps.asarray(w), ws_strict) is None
    assert opt.step_into(w.astype(np.float32), 1.0, state, w, ws) is None
    frozen = w.copy()
    frozen.flags.writeable = False
    assert opt.step_into(w, 1.0, state, frozen, ws) is None
    many = _fused(1e-2, mask=np.arange(200) % 2 == 0)
    assert many.step_into(w, 1.0, many.init(w), w.copy(), ws) is None


def test_fused_needs_adamw():
    with pytest.raises(ValueError, match="fused=True needs solver='adamw'"):
        optim.from_sklearn("adam", fused=True)


def test_a_local_step_takes_the_fused_path():
    """_local_step runs step_into when the optimizer has one, with the batch's 1/m as scale:
    the parameters equal the plain step's up to rounding (float64)."""
    from pipeline import nn
    from pipeline.train.local_steps import _local_step
    from pipeline.train.tasks import _step_context, workspace_for

    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(64, 5)), rng.normal(size=(64, 1))
    model = nn.MLPSpec((5, 8, 1), "relu", "squared_error")
    w0 = nn.init_params(model, 0, dtype=np.float64)
    fused = _fused(1e-2)
    plain = optim.GradientTransformation(fused.init, fused.update, fused.update_into)
    out = {}
    for name, opt in (("fused", fused), ("plain", plain)):
        calls = []
        if name == "fused":
            inner = opt.step_into
            opt = opt._replace(step_into=lambda *a, c=calls, f=inner: c.append(a[1]) or f(*a))
        w, state = w0.copy(), opt.init(w0)
        ws = workspace_for(3, X)
        for i in range(5):
            w, state, _ = _local_step(model, opt, 0.0, w, state, X, y, 64,
                                      _step_context(ws, 0, 0, 0, i))
        out[name] = w.copy()
        if name == "fused":
            assert calls == [1 / 64] * 5
    np.testing.assert_allclose(out["fused"], out["plain"], rtol=1e-11, atol=1e-13)
