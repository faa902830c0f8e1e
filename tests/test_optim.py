"""Optimizers: convergence table (as optax's), bit-for-bit agreement with the previous
implementation and with scikit-learn's MLP optimizers, AdamW against PyTorch, state purity,
devices and checkpoint round trips (chained states included)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

from pipeline import optim
from pipeline.backend import to_host

# --- the previous implementation (pipeline/optim.py before the package), kept as an oracle ----


def _legacy_sgd(learning_rate, momentum=0.9, nesterov=True):
    def init(params):
        return {"count": 0.0, "learning_rate": float(learning_rate),
                "velocity": np.zeros_like(params)}

    def update(grads, state):
        lr = float(state["learning_rate"])
        velocity = momentum * state["velocity"] - lr * grads
        updates = momentum * velocity - lr * grads if nesterov else velocity
        return updates, {**state, "count": state["count"] + 1, "velocity": velocity}

    return init, update


def _legacy_adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    def init(params):
        return {"count": 0.0, "learning_rate": float(learning_rate),
                "mu": np.zeros_like(params), "nu": np.zeros_like(params)}

    def update(grads, state):
        t = int(state["count"]) + 1
        mu = beta_1 * state["mu"] + (1 - beta_1) * grads
        nu = beta_2 * state["nu"] + (1 - beta_2) * (grads * grads)
        lr_t = float(state["learning_rate"]) * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        updates = -lr_t * mu / (np.sqrt(nu) + epsilon)
        return updates, {**state, "count": float(t), "mu": mu, "nu": nu}

    return init, update


def _leaves(state):
    """The arrays of a (nested) state, depth first."""
    if isinstance(state, tuple):
        return [leaf for s in state for leaf in _leaves(s)]
    return [state]


def _count(state):
    """The update count of the first node that keeps one."""
    if "count" in getattr(state, "_fields", ()):
        return float(state.count)
    return next(_count(s) for s in state if "count" in getattr(s, "_fields", ("count",)))


# --- convergence table -------------------------------------------------------------------------


def parabola():
    target = np.array([1.0, -1.0, 1.0])
    return np.array([-1.0, 10.0, 1.0]), target, lambda x: 2.0 * (x - target.astype(x.dtype))


def rosenbrock(a=1.0, b=100.0):
    def grad(x):
        dx = -2.0 * (a - x[0]) - 4.0 * b * x[0] * (x[1] - x[0] ** 2)
        dy = 2.0 * b * (x[1] - x[0] ** 2)
        return np.stack([dx, dy])

    return np.array([0.0, 0.0]), np.array([a, a * a]), grad


# (name, factory, learning rate on the parabola, learning rate on Rosenbrock)
OPTIMIZERS = [
    ("sgd", lambda lr: optim.sgd(lr, momentum=0.9, nesterov=False), 1e-2, 1e-3),
    ("sgd_nesterov", lambda lr: optim.sgd(lr, momentum=0.9, nesterov=True), 1e-2, 1e-3),
    ("adam", lambda lr: optim.adam(lr), 1e-1, 3e-3),
    ("adamw", lambda lr: optim.adamw(lr, weight_decay=1e-4), 1e-1, 3e-3),
    ("clip_sgd", lambda lr: optim.chain(optim.clip_by_global_norm(10.0),
                                        optim.sgd(lr, nesterov=True)), 1e-2, 1e-3),
    ("clip_adamw", lambda lr: optim.chain(optim.clip_by_global_norm(1.0),
                                          optim.adamw(lr, weight_decay=1e-4)),
     1e-1, 3e-3),
    ("adam_warmup", lambda lr: optim.adam(optim.linear_warmup(lr, 100)), 1e-1, 3e-3),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("problem", ["parabola", "rosenbrock"])
@pytest.mark.parametrize(("name", "factory", "lr_parabola", "lr_rosenbrock"), OPTIMIZERS)
def test_optimizers_converge(name, factory, lr_parabola, lr_rosenbrock, problem, dtype):
    x0, optimum, grad = parabola() if problem == "parabola" else rosenbrock()
    opt = factory(lr_parabola if problem == "parabola" else lr_rosenbrock)
    params = x0.astype(dtype)
    state = opt.init(params)
    for _ in range(3000):
        updates, state = opt.update(grad(params), state, params)
        params = optim.apply_updates(params, updates)
    assert params.dtype == dtype
    assert _count(state) == 3000
    np.testing.assert_allclose(params, optimum, atol=1e-3)


# --- bit-for-bit: the previous implementation and scikit-learn -------------------------------


def _noisy_quadratic(dtype, n_steps, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(6, 6))
    A = (A @ A.T / 6 + np.eye(6)).astype(dtype)
    x0 = rng.normal(size=6).astype(dtype)
    noise = [rng.normal(size=6).astype(dtype) for _ in range(n_steps)]
    return A, x0, noise


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("ours", "legacy"),
    [
        (lambda: optim.sgd(0.05, momentum=0.9, nesterov=True), lambda: _legacy_sgd(0.05)),
        (lambda: optim.sgd(0.05, momentum=0.5, nesterov=False),
         lambda: _legacy_sgd(0.05, momentum=0.5, nesterov=False)),
        (lambda: optim.adam(0.05, beta_1=0.8, beta_2=0.99, epsilon=1e-7),
         lambda: _legacy_adam(0.05, beta_1=0.8, beta_2=0.99, epsilon=1e-7)),
        (lambda: optim.from_sklearn("sgd", learning_rate_init=0.05), lambda: _legacy_sgd(0.05)),
        (lambda: optim.from_sklearn("adam", learning_rate_init=0.05),
         lambda: _legacy_adam(0.05)),
    ],
    ids=["sgd_nesterov", "sgd", "adam", "from_sklearn_sgd", "from_sklearn_adam"],
)
def test_bit_identical_to_the_previous_implementation(ours, legacy, dtype):
    """Same updates, bit for bit, including a learning-rate change every 7 steps."""
    opt = ours()
    init, update = legacy()
    A, params, noise = _noisy_quadratic(dtype, 40)
    old_params, state, old = params.copy(), opt.init(params), init(params)
    for step, eps in enumerate(noise):
        updates, state = opt.update(A @ params + eps, state, params)
        params = optim.apply_updates(params, updates)
        old_updates, old = update(A @ old_params + eps, old)
        old_params = old_params + old_updates
        assert np.array_equal(updates, old_updates) and updates.dtype == dtype
        assert np.array_equal(params, old_params)
        if step % 7 == 6:
            lr = optim.get_learning_rate(state) / 5
            state = optim.set_learning_rate(state, lr)
            old = {**old, "learning_rate": lr}
    assert float(state.count) == old["count"] == len(noise)


def run_against_sklearn(ours, theirs, dtype, n_steps=25, lr_change=None):
    """Drive both optimizers on the same gradient field; return the two parameter trajectories.

    ``lr_change(step, sklearn_optimizer)`` may change scikit-learn's learning rate and return
    the new one (or None), which is then applied to our state with ``set_learning_rate``.
    """
    A, params, noise = _noisy_quadratic(dtype, n_steps)
    theirs_params = [params.copy()]
    sk = theirs(theirs_params)
    state = ours.init(params)
    ours_path, theirs_path = [], []
    for step in range(n_steps):
        # A quadratic's gradient at the current point, plus noise, so both paths must stay
        # together for the comparison to hold.
        updates, state = ours.update(A @ params + noise[step], state, params)
        params = optim.apply_updates(params, updates)
        sk.update_params(theirs_params, [A @ theirs_params[0] + noise[step]])
        ours_path.append(params)
        theirs_path.append(theirs_params[0].copy())
        if lr_change is not None:
            new = lr_change(step, sk)
            if new is not None:
                state = optim.set_learning_rate(state, new)
    return np.array(ours_path), np.array(theirs_path)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_matches_sklearn(momentum, nesterov, dtype):
    ours, theirs = run_against_sklearn(
        optim.sgd(0.05, momentum=momentum, nesterov=nesterov),
        lambda p: SGDOptimizer(p, learning_rate_init=0.05, momentum=momentum, nesterov=nesterov),
        dtype,
    )
    # Same operations in the same order: bit-for-bit.
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_matches_sklearn(dtype):
    hyper = {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-7}
    ours, theirs = run_against_sklearn(
        optim.adam(0.05, **hyper),
        lambda p: AdamOptimizer(p, learning_rate_init=0.05, **hyper),
        dtype,
    )
    if dtype == np.float64:
        np.testing.assert_array_equal(ours, theirs)
    else:
        # scikit-learn's step size is a NumPy float64 scalar, which promotes its float32 update
        # to float64 before `param +=` rounds it back; ours stays float32 throughout.
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_adaptive_schedule_matches_sklearn():
    """'adaptive': scikit-learn divides the rate by 5 in trigger_stopping; we set it."""

    def stall_every_5th(step, sk):
        if step % 5 == 4:
            assert not sk.trigger_stopping("stalled", verbose=False)
            return sk.learning_rate
        return None

    ours, theirs = run_against_sklearn(
        optim.sgd(0.05),
        lambda p: SGDOptimizer(p, learning_rate_init=0.05, lr_schedule="adaptive"),
        np.float64,
        lr_change=stall_every_5th,
    )
    np.testing.assert_array_equal(ours, theirs)


def test_invscaling_schedule_matches_sklearn():
    batch = 32

    def decay(step, sk):
        time_step = (step + 1) * batch
        sk.iteration_ends(time_step)
        rate = optim.invscaling(0.05, 0.5, time_step)
        assert rate == sk.learning_rate == optim.invscaling(0.05, 0.5)(time_step)
        return rate

    ours, theirs = run_against_sklearn(
        optim.sgd(0.05),
        lambda p: SGDOptimizer(p, learning_rate_init=0.05, lr_schedule="invscaling", power_t=0.5),
        np.float64,
        lr_change=decay,
    )
    np.testing.assert_array_equal(ours, theirs)


# --- AdamW against PyTorch ---------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_adamw_matches_torch(masked, schedule):
    """Step by step on random gradients, float64; a mask is two PyTorch parameter groups."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    n, wd, lr = 12, 0.05, 0.01
    params = rng.normal(size=n)
    mask = rng.random(n) < 0.5 if masked else np.ones(n, dtype=bool)
    sched = optim.warmup_cosine_decay(lr, warmup_steps=5, total_steps=40, end_value=1e-3)
    opt = optim.adamw(sched if schedule else lr, beta_1=0.8, beta_2=0.95, epsilon=1e-6,
                      weight_decay=wd, mask=mask if masked else None)

    decayed = torch.tensor(params[mask], requires_grad=True)
    plain = torch.tensor(params[~mask], requires_grad=True)
    groups = [{"params": [decayed], "weight_decay": wd}, {"params": [plain], "weight_decay": 0.0}]
    ref = torch.optim.AdamW(groups, lr=lr, betas=(0.8, 0.95), eps=1e-6)
    # LambdaLR multiplies the base rate by the factor; ours evaluates the schedule itself.
    if schedule:
        scheduler = torch.optim.lr_scheduler.LambdaLR(ref, lambda t: sched(t) / lr)

    state = opt.init(params)
    for _ in range(50):
        grads = rng.normal(size=n)
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
        decayed.grad = torch.tensor(grads[mask])
        plain.grad = torch.tensor(grads[~mask])
        ref.step()
        if schedule:
            scheduler.step()
        np.testing.assert_allclose(params[mask], decayed.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(params[~mask], plain.detach().numpy(), rtol=1e-12, atol=1e-12)
        assert optim.get_learning_rate(state) == pytest.approx(ref.param_groups[0]["lr"],
                                                               rel=1e-12)


# --- state: purity, devices, checkpoints -------------------------------------------------------

FACTORIES = {
    "sgd": lambda: optim.sgd(0.1),
    "adam": lambda: optim.adam(0.1),
    "adamw": lambda: optim.adamw(0.1, mask=np.array([True, False, True, True, False])),
    "clip_adam_keep": lambda: optim.chain(
        optim.clip_by_global_norm(0.5), optim.adam(optim.cosine_decay(0.1, 10)),
        optim.keep_mask(np.array([True, True, False, True, True]))),
    "schedule": lambda: optim.chain(optim.scale_by_schedule(optim.linear_warmup(1.0, 3)),
                                    optim.scale(-0.1)),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_update_is_pure(name):
    opt = FACTORIES[name]()
    params = np.array([1.0, 2.0, 3.0, -1.0, 0.5])
    grads = np.array([0.5, -0.5, 1.0, 2.0, -1.0])
    state = opt.update(grads, opt.init(params), params)[1]
    before = [np.array(f, copy=True) for f in _leaves(state)]
    params_before, grads_before = params.copy(), grads.copy()
    first = opt.update(grads, state, params)
    second = opt.update(grads, state, params)
    for a, b in zip(_leaves(first[1]), _leaves(second[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first[0], second[0])
    for a, b in zip(_leaves(state), before, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(params, params_before)
    np.testing.assert_array_equal(grads, grads_before)


def _run(opt, params, state, grads):
    for g in grads:
        updates, state = opt.update(g, state, params)
        params = optim.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("name", list(FACTORIES))
def test_namespace_device_and_dtype_preserved(name, backend):
    from array_api_compat import device

    opt = FACTORIES[name]()
    rng = np.random.default_rng(2)
    host_params = rng.normal(size=5).astype(np.float32)
    host_grads = [rng.normal(size=5).astype(np.float32) for _ in range(4)]
    params = backend.asarray(host_params)
    state = opt.init(params)
    new, state = _run(opt, params, state, [backend.asarray(g) for g in host_grads])
    if name != "schedule":
        state = optim.set_learning_rate(state, 0.01)
    assert new.dtype == backend.xp.float32 and device(new) == device(params)
    for leaf in _leaves(state):
        assert device(leaf) == device(params)
        # 0-d bookkeeping is float64; everything shaped like the parameters stays float32.
        assert leaf.dtype == (backend.xp.float64 if leaf.shape == () else backend.xp.float32)

    # Same numbers as the NumPy run.
    ref = FACTORIES[name]()
    ref_params, _ = _run(ref, host_params, ref.init(host_params), host_grads)
    np.testing.assert_allclose(to_host(new), ref_params, rtol=1e-6)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_to_host_and_back(name, backend):
    opt = FACTORIES[name]()
    params = backend.asarray(np.linspace(-1, 1, 5, dtype=np.float32))
    _, state = _run(opt, params, opt.init(params), [params * 0.3, params * -0.2])
    host = optim.state_to_host(state)
    assert all(isinstance(leaf, np.ndarray) for leaf in _leaves(host))
    back = optim.state_to_device(host, params)
    assert type(back) is type(state)
    for a, b in zip(_leaves(back), _leaves(state), strict=True):
        assert type(a) is type(b) and a.dtype == b.dtype
        np.testing.assert_array_equal(to_host(a), to_host(b))


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_flat_state_round_trips_through_savez(name, backend):
    """Checkpoint mid-run, restore, continue: same result as never stopping."""
    opt = optim.get_optimizer(name, learning_rate=0.1)
    rng = np.random.default_rng(1)
    grads = [backend.asarray(rng.normal(size=4).astype(np.float32)) for _ in range(6)]
    params = backend.asarray(np.zeros(4, dtype=np.float32))

    params, state = _run(opt, params, opt.init(params), grads[:3])
    state = optim.set_learning_rate(state, 0.02)
    straight, _ = _run(opt, params, state, grads[3:])

    buf = io.BytesIO()
    np.savez(buf, **{k: to_host(v) for k, v in state._asdict().items()})
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as saved:
        restored = type(state)(*(backend.asarray(saved[f]) for f in state._fields))
    assert float(restored.learning_rate) == 0.02
    assert float(restored.count) == 3
    resumed, _ = _run(opt, params, restored, grads[3:])
    np.testing.assert_array_equal(to_host(resumed), to_host(straight))


@pytest.mark.parametrize("name", ["adamw", "clip_adam_keep", "schedule"])
def test_chained_state_round_trips_through_a_checkpoint(name, tmp_path):
    """The checkpoint format (pipeline.serialization, used by pipeline.checkpoint) restores a
    chained state exactly: the resumed run ends with the same bits as the uninterrupted one."""
    from pipeline.estimators import saveable_classes
    from pipeline.serialization import dump_objects, read_objects, write_dir

    opt = FACTORIES[name]()
    rng = np.random.default_rng(4)
    grads = [rng.normal(size=5).astype(np.float32) for _ in range(8)]
    params = np.zeros(5, dtype=np.float32)
    params, state = _run(opt, params, opt.init(params), grads[:4])
    if name != "schedule":
        state = optim.set_learning_rate_scale(state, 0.5)
    straight, _ = _run(opt, params, state, grads[4:])

    manifest, npz = dump_objects({}, saveable_classes(),
                                 extra={"state": optim.state_to_host(state)}, kind="checkpoint")
    write_dir(tmp_path / "ckpt", manifest, npz)
    _, extra, _ = read_objects(tmp_path / "ckpt", saveable_classes(), kind="checkpoint")
    restored = extra["state"]

    assert type(restored) is type(state)
    assert [type(s) for s in restored] == [type(s) for s in state]
    for a, b in zip(_leaves(restored), _leaves(state), strict=True):
        assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    resumed, _ = _run(opt, params, optim.state_to_device(restored, params), grads[4:])
    np.testing.assert_array_equal(resumed, straight)


# --- factories and validation ------------------------------------------------------------------


def test_get_optimizer():
    assert isinstance(optim.get_optimizer("sgd", momentum=0.5).init(np.zeros(2)), optim.SGDState)
    assert isinstance(optim.get_optimizer("adam").init(np.zeros(2)), optim.AdamState)
    assert isinstance(optim.get_optimizer("adamw").init(np.zeros(2))[0], optim.ScaleByAdamState)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        optim.get_optimizer("lbfgs")
    with pytest.raises(TypeError):
        optim.get_optimizer("adam", momentum=0.9)


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (optim.sgd, {"learning_rate": 0.0}, "learning_rate"),
        (optim.sgd, {"momentum": 1.5}, "momentum"),
        (optim.adam, {"learning_rate": -1.0}, "learning_rate"),
        (optim.adam, {"beta_1": 1.0}, "beta_1"),
        (optim.adam, {"beta_2": -0.1}, "beta_2"),
        (optim.adam, {"epsilon": 0.0}, "epsilon"),
        (optim.adamw, {"weight_decay": -1.0}, "weight_decay"),
        (optim.adamw, {"beta_1": 1.0}, "beta_1"),
        (optim.clip_by_global_norm, {"max_norm": 0.0}, "max_norm"),
        (optim.cosine_decay, {"peak": 1.0, "decay_steps": 0}, "decay_steps"),
        (optim.warmup_cosine_decay, {"peak": 1.0, "warmup_steps": 5, "total_steps": 5},
         "total_steps"),
        (optim.from_sklearn, {"solver": "lbfgs"}, "solver"),
        (optim.from_sklearn, {"solver": "sgd", "learning_rate": "optimal"}, "learning_rate"),
        (optim.from_sklearn, {"solver": "sgd", "weight_decay": 0.1}, "adamw"),
        (optim.from_sklearn, {"solver": "adam", "learning_rate": "cosine"}, "total_steps"),
        (optim.from_sklearn, {"solver": "adam", "clip_norm": -1.0}, "clip_norm"),
        (optim.from_sklearn, {"solver": "adam", "warmup_steps": -1}, "warmup_steps"),
    ],
)
def test_hyperparameter_validation(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_masks_are_checked_against_the_parameters():
    with pytest.raises(ValueError, match=r"keep_mask: mask has shape \(3,\).*shape \(4,\)"):
        optim.keep_mask(np.ones(3, dtype=bool)).init(np.zeros(4))
    with pytest.raises(ValueError, match="add_decayed_weights: mask must be a boolean array"):
        optim.add_decayed_weights(0.1, mask=np.ones(4))


def test_from_sklearn_builds_the_requested_chain():
    rng = np.random.default_rng(5)
    params = rng.normal(size=6)
    grads = [rng.normal(size=6) * 10 for _ in range(30)]
    mask = np.array([True, True, False, True, False, True])
    built = optim.from_sklearn("adamw", learning_rate_init=0.01, learning_rate="cosine",
                               beta_1=0.8, weight_decay=0.1, clip_norm=1.0, warmup_steps=5,
                               total_steps=30, weight_mask=mask)
    by_hand = optim.chain(
        optim.clip_by_global_norm(1.0),
        optim.adamw(optim.warmup_cosine_decay(0.01, 5, 30), beta_1=0.8, weight_decay=0.1,
                    mask=mask),
    )
    a, state = _run(built, params, built.init(params), grads)
    b, _ = _run(by_hand, params, by_hand.init(params), grads)
    np.testing.assert_array_equal(a, b)
    assert optim.get_learning_rate(state) == optim.warmup_cosine_decay(0.01, 5, 30)(30) == 0.0

    # The warm-up alone, on the constant rate the adaptive rule then scales.
    warm = optim.from_sklearn("sgd", learning_rate_init=0.1, learning_rate="adaptive",
                              warmup_steps=4)
    state = warm.init(params)
    rates = []
    for g in grads[:6]:
        rates.append(optim.get_learning_rate(state))
        state = warm.update(g, state, params)[1]
    assert rates == [0.1 * min(t, 4) / 4 for t in range(6)]
