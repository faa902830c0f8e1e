"""Gradient transformations and schedules: clipping against NumPy, masks, decoupled weight
decay, schedules against their closed forms and PyTorch's schedulers, and the learning rate in
the state of chained optimizers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import optim
from pipeline.backend import to_host

# --- clipping, masks, weight decay -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm", [0.0, 0.3, 0.999, 1.0, 5.0, 1e6])
def test_clip_by_global_norm_matches_numpy(norm, dtype):
    rng = np.random.default_rng(0)
    g = rng.normal(size=7)
    g = (g * (norm / np.linalg.norm(g))).astype(dtype)
    clip = optim.clip_by_global_norm(1.0)
    out, state = clip.update(g, clip.init(g))
    assert state == optim.EmptyState() and out.dtype == dtype
    # optax's rule, with the norm computed in the gradient's dtype.
    g_norm = np.sqrt(np.sum(g * g))
    expected = g if g_norm < 1.0 else g / g_norm * 1.0
    np.testing.assert_allclose(out, expected, rtol=1e-6 if dtype == np.float32 else 1e-14)
    if g_norm < 1.0:
        assert out is g
    else:
        assert np.linalg.norm(out.astype(np.float64)) == pytest.approx(1.0, rel=1e-6)


def test_clip_by_global_norm_on_the_backend(backend):
    g = np.arange(1.0, 6.0, dtype=np.float32)
    clip = optim.clip_by_global_norm(2.0)
    out, _ = clip.update(backend.asarray(g), clip.init(backend.asarray(g)))
    np.testing.assert_allclose(to_host(out), g / np.linalg.norm(g) * 2.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keep_mask_freezes_masked_entries_exactly(dtype, backend):
    rng = np.random.default_rng(1)
    mask = rng.random(20) < 0.6
    host = rng.normal(size=20).astype(dtype)
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(0.05, weight_decay=0.1),
                      optim.keep_mask(mask))
    params = backend.asarray(host)
    state = opt.init(params)
    for _ in range(300):
        g = backend.asarray(rng.normal(size=20).astype(dtype))
        updates, state = opt.update(g, state, params)
        params = optim.apply_updates(params, updates)
    out = to_host(params)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out[~mask], host[~mask])
    assert np.all(out[mask] != host[mask])


def test_masked_optimizer_pickles_after_use(backend):
    """Dask pickles the optimizer into tasks; a used one (mask cached on a device) still ships."""
    import cloudpickle

    mask = np.array([True, False, True])
    opt = optim.chain(optim.adamw(0.1, mask=mask), optim.keep_mask(~mask))
    params = backend.asarray(np.ones(3, dtype=np.float32))
    grads = backend.asarray(np.full(3, 0.5, dtype=np.float32))
    used = opt.update(grads, opt.init(params), params)[0]
    shipped = cloudpickle.loads(cloudpickle.dumps(opt))
    again = shipped.update(grads, shipped.init(params), params)[0]
    np.testing.assert_array_equal(to_host(again), to_host(used))
    assert to_host(again)[0] == 0 and to_host(again)[2] == 0


@pytest.mark.parametrize("masked", [False, True])
def test_add_decayed_weights_matches_numpy(masked, backend):
    rng = np.random.default_rng(2)
    p, u = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
    mask = rng.random(8) < 0.5
    t = optim.add_decayed_weights(0.3, mask=mask if masked else None)
    params = backend.asarray(p)
    out, _ = t.update(backend.asarray(u), t.init(params), params)
    expected = u + np.float32(0.3) * p
    if masked:
        expected = np.where(mask, expected, u)
    np.testing.assert_array_equal(to_host(out), expected)
    with pytest.raises(ValueError, match="needs the parameters"):
        t.update(backend.asarray(u), t.init(params))


def test_scale_by_adam_matches_the_formula():
    """Adam's direction written out in NumPy (PyTorch's epsilon placement)."""
    rng = np.random.default_rng(3)
    b1, b2, eps = 0.8, 0.9, 1e-3
    t = optim.scale_by_adam(b1, b2, eps)
    state = t.init(np.zeros(4))
    m = v = np.zeros(4)
    for step in range(1, 6):
        g = rng.normal(size=4)
        out, state = t.update(g, state)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        expected = (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)
        np.testing.assert_allclose(out, expected, rtol=1e-14)
    assert float(state.count) == 5


# --- schedules ---------------------------------------------------------------------------------


def test_schedules_follow_their_closed_forms():
    peak, W, T, end = 0.3, 7, 40, 0.01
    for t in range(60):
        assert optim.constant(peak)(t) == peak
        assert optim.invscaling(peak, 0.25)(t) == peak / (t + 1) ** 0.25
        assert optim.linear_warmup(peak, W)(t) == pytest.approx(peak * min(t / W, 1.0),
                                                               rel=1e-15, abs=0)
        c = 0.5 * (1 + math.cos(math.pi * min(t, T) / T))
        assert optim.cosine_decay(peak, T, alpha=0.2)(t) == pytest.approx(
            0.2 * peak + (1 - 0.2) * peak * c, rel=1e-14)
        expected = (peak * t / W if t < W else
                    end + (peak - end) * 0.5 * (1 + math.cos(math.pi * min(t - W, T - W)
                                                            / (T - W))))
        assert optim.warmup_cosine_decay(peak, W, T, end)(t) == pytest.approx(expected,
                                                                               rel=1e-14)
    assert optim.linear_warmup(peak, 0)(0) == peak
    assert optim.invscaling(peak, 0.5, 99) == optim.invscaling(peak, 0.5)(99)


def _torch_rates(make_scheduler, n):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler(torch.optim.lr_scheduler, opt)
    rates = []
    for _ in range(n):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_cosine_decay_matches_torch():
    T = 25
    theirs = _torch_rates(lambda s, o: s.CosineAnnealingLR(o, T_max=T, eta_min=0.1), T + 1)
    ours = [optim.cosine_decay(1.0, T, alpha=0.1)(t) for t in range(T + 1)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_warmup_cosine_decay_matches_torch():
    W, T = 4, 20

    def make(s, o):
        return s.SequentialLR(o, [s.LambdaLR(o, lambda t: t / W),
                                  s.CosineAnnealingLR(o, T_max=T - W, eta_min=0.05)],
                              milestones=[W])

    # Past T, PyTorch's cosine rises again; optax's (and ours) stays at the end value.
    theirs = _torch_rates(make, T + 1)
    ours = [optim.warmup_cosine_decay(1.0, W, T, end_value=0.05)(t) for t in range(T + 1)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert optim.warmup_cosine_decay(1.0, W, T, end_value=0.05)(T + 10) == pytest.approx(0.05)


def test_scale_by_schedule_multiplies_each_update():
    sched = optim.linear_warmup(2.0, 3)
    t = optim.scale_by_schedule(sched)
    state = t.init(np.zeros(2))
    for step in range(6):
        out, state = t.update(np.ones(2), state)
        np.testing.assert_array_equal(out, np.full(2, sched(step)))


# --- the learning rate in the state ------------------------------------------------------------


CHAINS = {
    "clip_sgd": lambda lr: optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(lr)),
    "clip_adamw": lambda lr: optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(lr)),
    "nested": lambda lr: optim.chain(
        optim.clip_by_global_norm(1.0),
        optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(lr))),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_set_learning_rate_on_chains(name):
    """Setting the rate of a (nested) chained state equals building the chain with that rate,
    bit for bit, and leaves every other part of the state as it was."""
    rng = np.random.default_rng(4)
    params = rng.normal(size=5)
    grads = [rng.normal(size=5) for _ in range(10)]
    opt, ref = CHAINS[name](0.1), CHAINS[name](0.02)
    state, ref_state = opt.init(params), ref.init(params)
    assert optim.get_learning_rate(state) == 0.1
    state = optim.set_learning_rate(state, 0.02)
    for g in grads:
        assert optim.get_learning_rate(state) == 0.02
        updates, state = opt.update(g, state, params)
        ref_updates, ref_state = ref.update(g, ref_state, params)
        np.testing.assert_array_equal(updates, ref_updates)
        params = optim.apply_updates(params, updates)

    changed = optim.set_learning_rate(state, 0.5)
    old, new = _leaves_with_names(state), _leaves_with_names(changed)
    assert [n for n, _ in old] == [n for n, _ in new]
    for (field, a), (_, b) in zip(old, new, strict=True):
        assert (float(b) == 0.5) if field == "learning_rate" else (a is b)
    assert optim.get_learning_rate(state) == 0.02
    with pytest.raises(ValueError, match="carries no learning rate"):
        optim.set_learning_rate(optim.clip_by_global_norm(1.0).init(params), 0.1)


def _leaves_with_names(state, name=""):
    if hasattr(state, "_fields"):
        return [leaf for f, s in zip(state._fields, state, strict=True)
                for leaf in _leaves_with_names(s, f)]
    if isinstance(state, tuple):
        return [leaf for s in state for leaf in _leaves_with_names(s, name)]
    return [(name, state)]


def test_set_learning_rate_keeps_other_fields():
    opt = optim.sgd(0.1)
    state = opt.update(np.ones(3), opt.init(np.zeros(3)), None)[1]
    new = optim.set_learning_rate(state, 0.02)
    assert float(new.learning_rate) == 0.02 and float(state.learning_rate) == 0.1
    assert new.count is state.count and new.velocity is state.velocity


def test_schedule_drives_the_state_and_the_scale_lasts():
    sched = optim.warmup_cosine_decay(0.5, 3, 20)
    opt = optim.chain(optim.clip_by_global_norm(10.0), optim.sgd(sched, momentum=0.0))
    params = np.zeros(2)
    state = opt.init(params)
    g = np.array([1.0, -2.0])
    for step in range(20):
        scale = 1.0 if step < 8 else 0.2
        if step == 8:
            state = optim.set_learning_rate_scale(state, 0.2)
            assert optim.get_learning_rate_scale(state) == 0.2
        if step == 12:  # a one-step override: the schedule resumes afterwards
            state = optim.set_learning_rate(state, 1e-3)
            updates, state = opt.update(g, state, params)
            np.testing.assert_array_equal(updates, -1e-3 * g)
            continue
        assert optim.get_learning_rate(state) == pytest.approx(scale * sched(step), rel=1e-15)
        updates, state = opt.update(g, state, params)
        np.testing.assert_allclose(updates, -scale * sched(step) * g, rtol=1e-15)


def test_scale_on_a_constant_rate_divides_it():
    """The adaptive rule as a scale: after two stalls, a constant rate is lr / 25."""
    opt = optim.adam(0.1)
    state = opt.init(np.zeros(2))
    state = optim.set_learning_rate_scale(state, 0.2)
    state = optim.set_learning_rate_scale(state, 0.04)
    assert optim.get_learning_rate(state) == pytest.approx(0.1 / 25, rel=1e-15)
    state = opt.update(np.ones(2), state)[1]
    assert optim.get_learning_rate(state) == pytest.approx(0.1 / 25, rel=1e-15)
    with pytest.raises(ValueError, match="learning_rate_scale"):
        optim.set_learning_rate_scale(state, 0.0)
