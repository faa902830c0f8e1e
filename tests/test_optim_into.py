"""``update_into`` (the optimizer step in workspace buffers) gives the bits of the plain
``update`` it replaces: each building block and the tabular estimators' AdamW chain, on special
values (signed zeros, NaN payloads, infinities, subnormals, huge and tiny magnitudes) and random
ones, over several steps where the state comes back in the workspace's own buffers; inputs that
are not the workspace's are never written; namespaces without ``out=`` fall back to ``update``;
and the local-steps task hands back a state of its own."""

from __future__ import annotations

import numpy as np
import pytest
from float_bits import same, special_values

from pipeline import nn, optim
from pipeline.nn import Workspace


def same_state(a, b):
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(same(x, y) for x, y in zip(la, lb, strict=True))


def _leaves(state):
    if isinstance(state, tuple):
        return [leaf for s in state for leaf in _leaves(s)]
    return [state]


def run_both(opt, grads, params, steps_state=None):
    """The plain and the buffered update over ``grads`` (one per step, parameters fixed, the
    buffered state fed back as it came out): per step, the updates and states of both."""
    ws = Workspace()
    s_plain = s_into = opt.init(params) if steps_state is None else steps_state
    out = []
    for g in grads:
        with np.errstate(all="ignore"):
            u_plain, s_plain = opt.update(g, s_plain, params)
            u_into, s_into = opt.update_into(g.copy(), s_into, params, ws)
        # copies: the buffers are overwritten by the next step
        out.append((u_plain, s_plain, u_into.copy(), optim.state_copy(s_into)))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_by_adam_into_is_the_plain_update(dtype):
    n = 3000
    grads = [special_values(dtype, n, 10 + k) for k in range(4)]
    mu0 = special_values(dtype, n, 20)
    nu0 = np.abs(special_values(dtype, n, 21))
    params = special_values(dtype, n, 22)
    opt = optim.scale_by_adam(0.9, 0.999, 1e-8)
    start = optim.ScaleByAdamState(optim.base.scalar(3, params), mu0.copy(), nu0.copy())
    for u_p, s_p, u_i, s_i in run_both(opt, grads, params, start):
        assert same(u_i, u_p) and same_state(s_i, s_p)
    # the starting state (not the workspace's) was only read
    assert same(start.mu, mu0) and same(start.nu, nu0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_add_decayed_weights_into_is_the_plain_update(dtype, masked):
    n = 3000
    params = special_values(dtype, n, 30)
    keep = params.copy()
    mask = None
    if masked:
        mask = np.random.default_rng(31).random(n) < 0.6
        mask[:40] = np.arange(40) % 2 == 0  # each special value meets both mask states
    opt = optim.add_decayed_weights(0.05, mask)
    grads = [np.roll(special_values(dtype, n, 32 + k), k) for k in range(3)]
    for u_p, s_p, u_i, s_i in run_both(opt, grads, params):
        assert same(u_i, u_p) and s_i == s_p
    assert same(params, keep)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_by_global_norm_into_is_the_plain_update(dtype):
    rng = np.random.default_rng(40)
    small = (rng.standard_normal(500) * 1e-3).astype(dtype)  # norm < 1: passes unchanged
    large = (rng.standard_normal(500) * 10.0).astype(dtype)
    specials = special_values(dtype, 500, 41)  # NaN norm: the divide path, as in update
    zero = np.zeros(500, dtype)
    zero[3] = -0.0
    opt = optim.clip_by_global_norm(1.0)
    runs = run_both(opt, [small, large, specials, zero], np.zeros(500, dtype))
    for u_p, s_p, u_i, s_i in runs:
        assert same(u_i, u_p) and s_i == s_p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_learning_rate_into_is_the_plain_update(dtype):
    opt = optim.scale_by_learning_rate(optim.warmup_cosine_decay(0.3, 2, 6))
    grads = [special_values(dtype, 700, 50 + k) for k in range(6)]
    for u_p, s_p, u_i, s_i in run_both(opt, grads, np.zeros(700, dtype)):
        assert same(u_i, u_p) and same_state(s_i, s_p)


def tabular_adamw(n, total=12):
    """The optimizer the tabular estimators build (tabular_base): AdamW with a decay mask,
    warm-up and cosine decay, clipping at norm 1."""
    mask = np.arange(n) % 5 != 0
    return optim.from_sklearn("adamw", learning_rate_init=2e-3, learning_rate="cosine",
                              weight_decay=1e-2, clip_norm=1.0, warmup_steps=2,
                              total_steps=total, weight_mask=mask)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_chain_into_is_the_plain_update(dtype):
    """Twelve steps that move the parameters, special values in the gradients of some: the
    parameters, updates and states are the same bits at every step."""
    n = 4000
    opt = tabular_adamw(n)
    rng = np.random.default_rng(60)
    w_plain = rng.standard_normal(n).astype(dtype)
    w_into = w_plain.copy()
    ws = Workspace()
    s_plain = opt.init(w_plain)
    s_into = opt.init(w_into)
    first = [a.copy() for a in _leaves(s_into)]
    for k in range(12):
        g = (special_values(dtype, n, 61 + k) if k % 4 == 3
             else (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 2)).astype(dtype))
        with np.errstate(all="ignore"):
            u_p, s_plain = opt.update(g, s_plain, w_plain)
            w_plain = w_plain + u_p
            u_i, s_into = opt.update_into(g.copy(), s_into, w_into, ws)
            np.add(w_into, u_i, out=w_into)
        assert same(u_i, u_p) and same_state(s_into, s_plain) and same(w_into, w_plain)
    # after the first step the moments live in the workspace: no fresh arrays
    assert s_into[1][0].mu is ws.child(1).child(0).get("mu", (n,), w_into)
    # the initial state was only read
    assert all(same(a, b) for a, b in zip(_leaves(opt.init(w_into)), first, strict=True))


def test_update_into_falls_back_without_out_buffers(backend):
    """array_api_strict hands out no buffers: update_into is the plain update there."""
    n = 64
    opt = tabular_adamw(n)
    rng = np.random.default_rng(70)
    w = backend.asarray(rng.standard_normal(n).astype(np.float32))
    s_plain = s_into = opt.init(w)
    ws = Workspace()
    for _ in range(3):
        g = backend.asarray(rng.standard_normal(n).astype(np.float32))
        u_p, s_plain = opt.update(g, s_plain, w)
        u_i, s_into = opt.update_into(g, s_into, w, ws)
        assert same(np.from_dlpack(u_i), np.from_dlpack(u_p))
    assert all(same(np.from_dlpack(a), np.from_dlpack(b))
               for a, b in zip(_leaves(s_into), _leaves(s_plain), strict=True))


def test_update_into_falls_back_on_mixed_dtypes():
    """float64 moments with float32 gradients promote in the plain update: so they do here."""
    opt = optim.scale_by_adam()
    g = np.linspace(-1, 1, 50, dtype=np.float32)
    state = opt.init(np.zeros(50, np.float64))
    u_p, s_p = opt.update(g, state)
    u_i, s_i = opt.update_into(g, state, None, Workspace())
    assert u_i.dtype == np.float64 and same(u_i, u_p) and same_state(s_i, s_p)


def test_chain_has_update_into_only_when_every_part_has():
    assert optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(1e-3)).update_into
    assert optim.chain(optim.scale(2.0), optim.adamw(1e-3)).update_into is None
    assert optim.adam(1e-3).update_into is None  # scikit-learn's Adam: fresh arrays
    with pytest.raises(ValueError, match="state of 1 parts"):
        optim.adamw(1e-3).update_into(np.zeros(3), (None,), np.zeros(3), Workspace())


def test_state_copy_owns_its_arrays():
    opt = tabular_adamw(10)
    state = opt.init(np.ones(10, np.float32))
    copy = optim.state_copy(state)
    for a, b in zip(_leaves(state), _leaves(copy), strict=True):
        assert a is not b and same(a, b)


def test_local_steps_state_is_not_the_workspace():
    """Two local-steps tasks of one block on one workspace: the first task's returned state
    keeps its values after the second ran, and both match steps with the plain update."""
    from pipeline.blocks import Block
    from pipeline.train.local_steps import partition_local_steps
    from pipeline.train.tasks import _WORKSPACES, Rate

    rng = np.random.default_rng(80)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    Y = (rng.random((64, 1)) < 0.5).astype(np.float32)
    block = Block(X, Y)
    spec = nn.MLPSpec((5, 8, 1), activation="relu", loss="binary_log_loss")
    w0 = spec.init_params(0, np.float32)
    opt = tabular_adamw(w0.size)
    plain = opt._replace(update_into=None)
    schedule = tuple((0, s, 16) for s in range(4))
    _WORKSPACES.clear()
    args = (spec, opt, 1e-4, Rate(2e-3), 0, schedule, 4, 0, True)
    p1, s1 = partition_local_steps(block, w0, None, *args)
    keep = [np.array(a, copy=True) for a in _leaves(s1)]
    w1 = w0 + p1.vector / p1.n
    p2, s2 = partition_local_steps(block, w1, s1, *args)
    assert all(same(a, b) for a, b in zip(_leaves(s1), keep, strict=True))
    pargs = (spec, plain, 1e-4, Rate(2e-3), 0, schedule, 4, 0, True)
    q1, t1 = partition_local_steps(block, w0, None, *pargs)
    q2, t2 = partition_local_steps(block, w0 + q1.vector / q1.n, t1, *pargs)
    assert same(p1.vector, q1.vector) and same(p2.vector, q2.vector)
    assert same_state(s2, t2) and p2.loss == q2.loss
