"""Optimizers as pairs of pure functions, in the style of optax.

An optimizer is a :class:`GradientTransformation`: ``init(params) -> state`` and
``update(grads, state, params) -> (updates, state)``; :func:`apply_updates` adds the updates to
the parameters. Nothing is mutated, so a step can be retried, and the state is a NamedTuple of
arrays that ships to workers and checkpoints with ``np.savez`` (after ``backend.to_host``).

The arithmetic is scikit-learn's ``SGDOptimizer`` and ``AdamOptimizer``, operation for
operation. The current learning rate lives in the state (``state.learning_rate``) so that
schedules (:func:`set_learning_rate`, :func:`invscaling`) change it and checkpoints keep it.

Example
-------
>>> import numpy as np
>>> opt = adam(learning_rate=0.1)
>>> params = np.array([1.0, -2.0])
>>> state = opt.init(params)
>>> for _ in range(200):
...     grads = 2 * params  # gradient of ||params||²
...     updates, state = opt.update(grads, state, params)
...     params = apply_updates(params, updates)
>>> bool(np.abs(params).max() < 1e-2)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from array_api_compat import device, is_array_api_obj

from .backend import namespace

__all__ = [
    "AdamState",
    "GradientTransformation",
    "SGDState",
    "adam",
    "apply_updates",
    "get_optimizer",
    "invscaling",
    "set_learning_rate",
    "sgd",
    "state_to_device",
    "state_to_host",
]

Array = Any


class GradientTransformation(NamedTuple):
    """``init(params) -> state``; ``update(grads, state, params=None) -> (updates, state)``."""

    init: Callable[[Array], Any]
    update: Callable[..., tuple[Array, Any]]


class SGDState(NamedTuple):
    """State of :func:`sgd`. ``count`` and ``learning_rate`` are 0-d float64 arrays."""

    count: Array  # number of updates done
    learning_rate: Array  # current learning rate
    velocity: Array  # like params


class AdamState(NamedTuple):
    """State of :func:`adam`. ``count`` and ``learning_rate`` are 0-d float64 arrays."""

    count: Array  # number of updates done (Adam's t before the next step)
    learning_rate: Array  # current base learning rate (before bias correction)
    mu: Array  # first-moment estimate, like params
    nu: Array  # second-moment estimate, like params


def _scalar(value: float, like: Array) -> Array:
    """A 0-d float64 array holding ``value`` in ``like``'s namespace and device."""
    xp = namespace(like)
    return xp.asarray(float(value), dtype=xp.float64, device=device(like))


def sgd(
    learning_rate: float = 1e-3, momentum: float = 0.9, nesterov: bool = True
) -> GradientTransformation:
    """Stochastic gradient descent with (Nesterov) momentum, as scikit-learn's ``SGDOptimizer``.

    ``v <- momentum * v - lr * g``; the update is ``momentum * v - lr * g`` with Nesterov
    momentum, else ``v``. ``momentum=0`` is plain gradient descent.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    momentum = float(momentum)

    def init(params: Array) -> SGDState:
        xp = namespace(params)
        return SGDState(
            count=_scalar(0, params),
            learning_rate=_scalar(learning_rate, params),
            velocity=xp.zeros_like(params),
        )

    def update(grads: Array, state: SGDState, params: Array = None) -> tuple[Array, SGDState]:
        # Python floats, not the 0-d float64 arrays: those would promote float32 to float64.
        lr = float(state.learning_rate)
        velocity = momentum * state.velocity - lr * grads
        updates = momentum * velocity - lr * grads if nesterov else velocity
        count = _scalar(float(state.count) + 1, grads)
        return updates, SGDState(count, state.learning_rate, velocity)

    return GradientTransformation(init, update)


def adam(
    learning_rate: float = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
) -> GradientTransformation:
    """Adam (Kingma & Ba, 2014), as scikit-learn's ``AdamOptimizer``.

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g²``,
    ``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``, update ``-lr_t m / (sqrt(v) + eps)``.
    scikit-learn overwrites its ``learning_rate`` attribute with ``lr_t``; here
    ``state.learning_rate`` stays the base rate ``lr``.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    for name, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
        if not 0 <= beta < 1:
            raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    beta_1, beta_2, epsilon = float(beta_1), float(beta_2), float(epsilon)

    def init(params: Array) -> AdamState:
        xp = namespace(params)
        return AdamState(
            count=_scalar(0, params),
            learning_rate=_scalar(learning_rate, params),
            mu=xp.zeros_like(params),
            nu=xp.zeros_like(params),
        )

    def update(grads: Array, state: AdamState, params: Array = None) -> tuple[Array, AdamState]:
        xp = namespace(grads)
        t = int(float(state.count)) + 1
        mu = beta_1 * state.mu + (1 - beta_1) * grads
        nu = beta_2 * state.nu + (1 - beta_2) * (grads * grads)
        lr_t = float(state.learning_rate) * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        updates = -lr_t * mu / (xp.sqrt(nu) + epsilon)
        return updates, AdamState(_scalar(t, grads), state.learning_rate, mu, nu)

    return GradientTransformation(init, update)


def state_to_host(state: Any) -> Any:
    """``state`` (a NamedTuple of arrays, possibly nested) with host NumPy arrays."""
    from .backend import to_host

    if state is None:
        return None
    if isinstance(state, tuple):
        return type(state)(*(state_to_host(s) for s in state)) if hasattr(state, "_fields") \
            else tuple(state_to_host(s) for s in state)
    return to_host(state)


def state_to_device(state: Any, like: Array) -> Any:
    """``state`` with every array in ``like``'s namespace and on its device."""
    if state is None:
        return None
    if isinstance(state, tuple):
        parts = (state_to_device(s, like) for s in state)
        return type(state)(*parts) if hasattr(state, "_fields") else tuple(parts)
    xp = namespace(like)
    return xp.asarray(state, device=device(like))


def apply_updates(params: Array, updates: Array) -> Array:
    """``params + updates`` as a new array (the inputs are not modified)."""
    return params + updates


def set_learning_rate(state: Any, learning_rate: float) -> Any:
    """``state`` with its ``learning_rate`` replaced (same namespace and device as before).

    The training loop uses this for scikit-learn's schedules: ``'adaptive'`` divides the rate
    by 5 when training stalls, ``'invscaling'`` sets :func:`invscaling`'s value.
    """
    old = state.learning_rate
    if is_array_api_obj(old):
        new = _scalar(learning_rate, old)
    else:  # a state rebuilt from plain Python floats
        new = float(learning_rate)
    return state._replace(learning_rate=new)


def invscaling(learning_rate_init: float, power_t: float, time_step: int) -> float:
    """scikit-learn's ``'invscaling'`` rate: ``learning_rate_init / (time_step + 1) ** power_t``.

    ``time_step`` is the number of training samples seen so far.
    """
    return float(learning_rate_init) / (time_step + 1) ** power_t


_OPTIMIZERS: dict[str, Callable[..., GradientTransformation]] = {"sgd": sgd, "adam": adam}


def get_optimizer(name: str, **hyper: Any) -> GradientTransformation:
    """The optimizer called ``name`` (``"sgd"`` or ``"adam"``) built with ``hyper``."""
    try:
        factory = _OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of {sorted(_OPTIMIZERS)}"
        ) from None
    return factory(**hyper)
