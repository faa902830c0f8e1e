"""Optimizers: convergence table (as optax's), step-for-step agreement with scikit-learn's MLP
optimizers, schedules, checkpoint round trips and namespace cleanliness."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

from pipeline import optim
from pipeline.backend import to_host

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
    assert float(state.count) == 3000
    np.testing.assert_allclose(params, optimum, atol=1e-3)


# --- agreement with scikit-learn ---------------------------------------------------------------


def run_against_sklearn(ours, theirs, dtype, n_steps=25, lr_change=None):
    """Drive both optimizers on the same gradient field; return the two parameter trajectories.

    ``lr_change(step, sklearn_optimizer)`` may change scikit-learn's learning rate and return
    the new one (or None), which is then applied to our state with ``set_learning_rate``.
    """
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    A = (A @ A.T / 6 + np.eye(6)).astype(dtype)
    params = rng.normal(size=6).astype(dtype)
    theirs_params = [params.copy()]
    sk = theirs(theirs_params)
    state = ours.init(params)
    ours_path, theirs_path = [], []
    for step in range(n_steps):
        # A quadratic's gradient at the current point, plus noise, so both paths must stay
        # together for the comparison to hold.
        noise = rng.normal(size=6).astype(dtype)
        updates, state = ours.update(A @ params + noise, state, params)
        params = optim.apply_updates(params, updates)
        sk.update_params(theirs_params, [A @ theirs_params[0] + noise])
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
        assert rate == sk.learning_rate
        return rate

    ours, theirs = run_against_sklearn(
        optim.sgd(0.05),
        lambda p: SGDOptimizer(p, learning_rate_init=0.05, lr_schedule="invscaling", power_t=0.5),
        np.float64,
        lr_change=decay,
    )
    np.testing.assert_array_equal(ours, theirs)


# --- state: purity, checkpoints, namespaces ----------------------------------------------------


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_update_is_pure(name):
    opt = optim.get_optimizer(name, learning_rate=0.1)
    params = np.array([1.0, 2.0, 3.0])
    grads = np.array([0.5, -0.5, 1.0])
    state = opt.init(params)
    state = opt.update(grads, state, params)[1]
    before = [np.array(f, copy=True) for f in state]
    params_before, grads_before = params.copy(), grads.copy()
    first = opt.update(grads, state, params)
    second = opt.update(grads, state, params)
    for a, b in zip(first[1], second[1], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first[0], second[0])
    for a, b in zip(state, before, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(params, params_before)
    np.testing.assert_array_equal(grads, grads_before)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_state_round_trips_through_savez(name, backend):
    """Checkpoint mid-run, restore, continue: same result as never stopping."""
    opt = optim.get_optimizer(name, learning_rate=0.1)
    rng = np.random.default_rng(1)
    grads = [backend.asarray(rng.normal(size=4).astype(np.float32)) for _ in range(6)]
    params = backend.asarray(np.zeros(4, dtype=np.float32))

    def run(params, state, gs):
        for g in gs:
            updates, state = opt.update(g, state, params)
            params = optim.apply_updates(params, updates)
        return params, state

    params, state = run(params, opt.init(params), grads[:3])
    state = optim.set_learning_rate(state, 0.02)
    straight, _ = run(params, state, grads[3:])

    buf = io.BytesIO()
    np.savez(buf, **{k: to_host(v) for k, v in state._asdict().items()})
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as saved:
        restored = type(state)(*(backend.asarray(saved[f]) for f in state._fields))
    assert float(restored.learning_rate) == 0.02
    assert float(restored.count) == 3
    resumed, _ = run(params, restored, grads[3:])
    np.testing.assert_array_equal(to_host(resumed), to_host(straight))


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_namespace_device_and_dtype_preserved(name, backend):
    from array_api_compat import device

    opt = optim.get_optimizer(name, learning_rate=0.1)
    rng = np.random.default_rng(2)
    host_params = rng.normal(size=5).astype(np.float32)
    host_grads = rng.normal(size=5).astype(np.float32)
    params = backend.asarray(host_params)
    state = opt.init(params)
    for field in state:
        assert device(field) == device(params)
    assert state.count.dtype == backend.xp.float64 and state.count.shape == ()
    updates, state = opt.update(backend.asarray(host_grads), state, params)
    new = optim.apply_updates(params, updates)
    state = optim.set_learning_rate(state, 0.01)
    for arr in (updates, new, *state[2:]):
        assert arr.dtype == backend.xp.float32  # no silent float64 promotion
        assert device(arr) == device(params)
    for field in state[:2]:
        assert device(field) == device(params)

    # Same numbers as the NumPy run.
    ref = optim.get_optimizer(name, learning_rate=0.1)
    ref_updates, _ = ref.update(host_grads, ref.init(host_params), host_params)
    np.testing.assert_allclose(to_host(updates), ref_updates, rtol=1e-6)


def test_set_learning_rate_keeps_other_fields():
    opt = optim.sgd(0.1)
    state = opt.update(np.ones(3), opt.init(np.zeros(3)), None)[1]
    new = optim.set_learning_rate(state, 0.02)
    assert float(new.learning_rate) == 0.02 and float(state.learning_rate) == 0.1
    assert new.count is state.count and new.velocity is state.velocity


def test_invscaling_formula():
    assert optim.invscaling(0.1, 0.5, 0) == 0.1
    assert optim.invscaling(0.1, 0.5, 99) == pytest.approx(0.01)
    assert optim.invscaling(0.1, 0.0, 1000) == 0.1


def test_get_optimizer():
    assert isinstance(optim.get_optimizer("sgd", momentum=0.5).init(np.zeros(2)), optim.SGDState)
    assert isinstance(optim.get_optimizer("adam").init(np.zeros(2)), optim.AdamState)
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
    ],
)
def test_hyperparameter_validation(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)
