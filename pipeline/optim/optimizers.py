"""Complete optimizers: scikit-learn's SGD and Adam, operation for operation, and AdamW as
PyTorch computes it.

:func:`sgd` and :func:`adam` are single nodes (scikit-learn applies the learning rate inside the
momentum and the bias correction, so they do not split into a direction and a rate without
changing bits); :func:`adamw` is a chain of the building blocks, as in optax.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..backend import namespace
from .base import Array, EmptyState, GradientTransformation, Schedule, chain
from .into import moments_into
from .learning_rate import Rate, ScaleByLearningRateState, scale_by_learning_rate
from .transforms import (
    ScaleByAdamState,
    ScaleByScheduleState,
    add_decayed_weights,
    check_adam_hyperparameters,
    scale_by_adam,
)

__all__ = ["STATE_TYPES", "AdamState", "SGDState", "adam", "adamw", "get_optimizer", "sgd"]


class SGDState(NamedTuple):
    """State of :func:`sgd`. ``count``, ``learning_rate`` and ``learning_rate_scale`` are 0-d
    float64 arrays (see :mod:`pipeline.optim.learning_rate`)."""

    count: Array  # number of updates done
    learning_rate: Array  # rate of the next update
    learning_rate_scale: Array  # factor on a schedule
    velocity: Array  # like params


class AdamState(NamedTuple):
    """State of :func:`adam`. ``count``, ``learning_rate`` and ``learning_rate_scale`` are 0-d
    float64 arrays."""

    count: Array  # number of updates done (Adam's t before the next step)
    learning_rate: Array  # base rate of the next update (before bias correction)
    learning_rate_scale: Array  # factor on a schedule
    mu: Array  # first-moment estimate, like params
    nu: Array  # second-moment estimate, like params


def sgd(
    learning_rate: float | Schedule = 1e-3, momentum: float = 0.9, nesterov: bool = True
) -> GradientTransformation:
    """Stochastic gradient descent with (Nesterov) momentum, as scikit-learn's ``SGDOptimizer``.

    ``v <- momentum * v - lr * g``; the update is ``momentum * v - lr * g`` with Nesterov
    momentum, else ``v``. ``momentum=0`` is plain gradient descent. ``learning_rate`` is a
    float or a schedule ``step -> rate``.
    """
    rate = Rate(learning_rate)
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    momentum = float(momentum)

    def init(params: Array) -> SGDState:
        xp = namespace(params)
        return SGDState(*rate.init(params), velocity=xp.zeros_like(params))

    def update(grads: Array, state: SGDState, params: Array = None) -> tuple[Array, SGDState]:
        lr, count, nxt = rate.step(state, grads)
        velocity = momentum * state.velocity - lr * grads
        updates = momentum * velocity - lr * grads if nesterov else velocity
        return updates, SGDState(count, nxt, state.learning_rate_scale, velocity)

    return GradientTransformation(init, update)


def adam(
    learning_rate: float | Schedule = 1e-3,
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
    rate = Rate(learning_rate)
    check_adam_hyperparameters(beta_1, beta_2, epsilon)
    beta_1, beta_2, epsilon = float(beta_1), float(beta_2), float(epsilon)

    def init(params: Array) -> AdamState:
        xp = namespace(params)
        return AdamState(*rate.init(params), mu=xp.zeros_like(params), nu=xp.zeros_like(params))

    def update(grads: Array, state: AdamState, params: Array = None) -> tuple[Array, AdamState]:
        lr, count, nxt = rate.step(state, grads)
        t = int(float(state.count)) + 1
        lr_t = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        if _fresh_outputs(grads, state.mu, state.nu):
            mu, nu, updates = _adam_numpy(grads, state.mu, state.nu, beta_1, beta_2, lr_t,
                                          epsilon)
        else:
            xp = namespace(grads)
            mu = beta_1 * state.mu + (1 - beta_1) * grads
            nu = beta_2 * state.nu + (1 - beta_2) * (grads * grads)
            updates = -lr_t * mu / (xp.sqrt(nu) + epsilon)
        return updates, AdamState(count, nxt, state.learning_rate_scale, mu, nu)

    return GradientTransformation(init, update)


def _fresh_outputs(grads: Array, *moments: Array) -> bool:
    """Whether the update can write its results into fresh NumPy arrays with ``out=``: host
    arrays of one floating dtype and shape (else it evaluates the plain expressions)."""
    if type(grads) is not np.ndarray or grads.dtype.kind != "f":
        return False
    for m in moments:
        if type(m) is not np.ndarray or m.dtype != grads.dtype or m.shape != grads.shape:
            return False
    return True


def _adam_numpy(g: np.ndarray, mu0: np.ndarray, nu0: np.ndarray, beta_1: float, beta_2: float,
                lr_t: float, epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's Adam step (see :func:`adam`): the ufuncs that the expressions call, in
    the same order with the same operands (Python floats stay weak scalars), written into 4
    fresh arrays instead of 10 temporaries. ``mu0``/``nu0`` are not modified."""
    mu, nu, s = np.empty_like(g), np.empty_like(g), np.empty_like(g)
    moments_into(g, mu0, nu0, beta_1, beta_2, mu, nu, s)
    np.multiply(-lr_t, mu, out=s)
    u = np.sqrt(nu, out=np.empty_like(g))
    np.add(u, epsilon, out=u)
    return mu, nu, np.divide(s, u, out=u)


def adamw(
    learning_rate: float | Schedule = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    weight_decay: float = 1e-2,
    mask: Array | None = None,
) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``.

    Per step: ``p <- p - lr * (m̂ / (sqrt(v) / sqrt(1 - b2^t) + eps) + weight_decay * p)``;
    ``mask`` (boolean, shaped like the parameters) limits the decay to its True entries, as
    two PyTorch parameter groups would. Defaults are PyTorch's.

    The state is ``(ScaleByAdamState, EmptyState, ScaleByLearningRateState)``.
    """
    return chain(
        scale_by_adam(beta_1, beta_2, epsilon),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# Every optimizer state type, for loaders that rebuild NamedTuples from an allow-list by name.
STATE_TYPES: tuple[type, ...] = (
    SGDState,
    AdamState,
    ScaleByAdamState,
    ScaleByLearningRateState,
    ScaleByScheduleState,
    EmptyState,
)

_OPTIMIZERS: dict[str, Callable[..., GradientTransformation]] = {
    "sgd": sgd, "adam": adam, "adamw": adamw,
}


def get_optimizer(name: str, **hyper: Any) -> GradientTransformation:
    """The optimizer called ``name`` (``"sgd"``, ``"adam"`` or ``"adamw"``) built with
    ``hyper``."""
    try:
        factory = _OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of {sorted(_OPTIMIZERS)}"
        ) from None
    return factory(**hyper)
