"""The learning rate kept in the optimizer state, so that checkpoints keep it and the training
loop can change it (scikit-learn's ``'adaptive'`` and ``'invscaling'`` rules).

Every node that applies a learning rate (:func:`~pipeline.optim.sgd`, :func:`~pipeline.optim.adam`,
:func:`scale_by_learning_rate`) carries three 0-d float64 arrays in its state:

``count``
    updates done so far;
``learning_rate``
    the rate the next update uses;
``learning_rate_scale``
    a factor on the schedule (1 unless :func:`set_learning_rate_scale` changed it).

Built from a float, the node keeps ``learning_rate`` until :func:`set_learning_rate` replaces it.
Built from a schedule, the node sets ``learning_rate = learning_rate_scale * schedule(count)``
after each update, so :func:`set_learning_rate` overrides one update only and
:func:`set_learning_rate_scale` is the lasting change (e.g. divide by 5 when training stalls, on
top of a warm-up). These functions find the node inside any chained state.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from array_api_compat import is_array_api_obj

from .base import Array, GradientTransformation, Schedule, scalar
from .into import scaled

__all__ = [
    "ScaleByLearningRateState",
    "get_learning_rate",
    "get_learning_rate_scale",
    "scale_by_learning_rate",
    "set_learning_rate",
    "set_learning_rate_scale",
]


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate`: three 0-d float64 arrays."""

    count: Array  # updates done
    learning_rate: Array  # rate of the next update
    learning_rate_scale: Array  # factor on the schedule


class Rate:
    """A learning rate given as a positive float or as a schedule ``step -> rate``.

    The optimizers hold one and ask it for the state's rate fields and for each update's rate.
    """

    def __init__(self, learning_rate: float | Schedule):
        if callable(learning_rate):
            self.schedule: Schedule | None = learning_rate
            self.initial = float(learning_rate(0))
        else:
            if not learning_rate > 0:
                raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
            self.schedule = None
            self.initial = float(learning_rate)

    def init(self, like: Array) -> tuple[Array, Array, Array]:
        """``(count, learning_rate, learning_rate_scale)`` before the first update."""
        return scalar(0, like), scalar(self.initial, like), scalar(1.0, like)

    def step(self, state: Any, like: Array) -> tuple[float, Array, Array]:
        """This update's rate (a Python float: a 0-d float64 array would promote float32
        updates to float64) and the state's next ``count`` and ``learning_rate``."""
        rate = float(state.learning_rate)
        done = float(state.count) + 1
        count = scalar(done, like)
        if self.schedule is None:
            return rate, count, state.learning_rate
        nxt = float(state.learning_rate_scale) * float(self.schedule(int(done)))
        return rate, count, scalar(nxt, like)


def scale_by_learning_rate(learning_rate: float | Schedule,
                           flip_sign: bool = True) -> GradientTransformation:
    """Multiply the updates by the learning rate (by minus it when ``flip_sign``, so that the
    result is a descent step), keeping the rate in the state."""
    rate = Rate(learning_rate)
    sign = -1.0 if flip_sign else 1.0

    def init(params: Array) -> ScaleByLearningRateState:
        return ScaleByLearningRateState(*rate.init(params))

    def update(updates: Array, state: ScaleByLearningRateState,
               params: Array = None) -> tuple[Array, ScaleByLearningRateState]:
        lr, count, nxt = rate.step(state, updates)
        return (sign * lr) * updates, ScaleByLearningRateState(
            count, nxt, state.learning_rate_scale)

    def update_into(updates: Array, state: ScaleByLearningRateState, params: Array,
                    workspace: Any) -> tuple[Array, ScaleByLearningRateState]:
        lr, count, nxt = rate.step(state, updates)
        out = scaled(updates, sign * lr, workspace)
        if out is None:
            out = (sign * lr) * updates
        return out, ScaleByLearningRateState(count, nxt, state.learning_rate_scale)

    return GradientTransformation(init, update, update_into)


def _carries_rate(state: Any) -> bool:
    return hasattr(state, "_fields") and "learning_rate" in state._fields


def _rate_nodes(state: Any) -> list[Any]:
    """The learning-rate nodes of a (nested) state, depth first."""
    if _carries_rate(state):
        return [state]
    if isinstance(state, tuple):
        return [n for s in state for n in _rate_nodes(s)]
    return []


def _replace_nodes(state: Any, fn: Any) -> Any:
    if _carries_rate(state):
        return fn(state)
    if isinstance(state, tuple):
        items = [_replace_nodes(s, fn) for s in state]
        return type(state)(*items) if hasattr(state, "_fields") else tuple(items)
    return state


def _like(old: Any, value: float) -> Any:
    # A state rebuilt from plain Python floats stays plain.
    return scalar(value, old) if is_array_api_obj(old) else float(value)


def _require_nodes(state: Any) -> list[Any]:
    nodes = _rate_nodes(state)
    if not nodes:
        raise ValueError(
            f"this optimizer state ({type(state).__name__}) carries no learning rate: build the "
            "optimizer with sgd, adam, adamw or scale_by_learning_rate"
        )
    return nodes


def set_learning_rate(state: Any, learning_rate: float) -> Any:
    """``state`` with the rate of its next update replaced (same namespace and device).

    Works on a chained state: every learning-rate node in it is changed. Built from a float,
    the rate stays until changed again; built from a schedule, the schedule resumes after one
    update (use :func:`set_learning_rate_scale` for a lasting change).
    """
    _require_nodes(state)
    return _replace_nodes(
        state, lambda n: n._replace(learning_rate=_like(n.learning_rate, learning_rate)))


def get_learning_rate(state: Any) -> float:
    """The rate the next update will use (the first learning-rate node's, in a chain)."""
    return float(_require_nodes(state)[0].learning_rate)


def get_learning_rate_scale(state: Any) -> float:
    """The factor applied to the schedule (1.0 unless changed)."""
    node = _require_nodes(state)[0]
    return float(getattr(node, "learning_rate_scale", 1.0))


def set_learning_rate_scale(state: Any, scale: float) -> Any:
    """``state`` with the factor on its learning rate set to ``scale`` (> 0), from the next
    update on: the pending rate is rescaled by ``scale / old_scale`` and, for a schedule, every
    later rate is ``scale * schedule(step)``. ``set_learning_rate_scale(s, 1 / 5)`` divides the
    rate by 5 whether it follows a schedule or not.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"learning_rate_scale must be finite and > 0, got {scale!r}")
    nodes = _require_nodes(state)
    if not all(hasattr(n, "learning_rate_scale") for n in nodes):
        raise ValueError(f"{type(nodes[0]).__name__} has no learning_rate_scale field")

    def rescale(n: Any) -> Any:
        old = float(n.learning_rate_scale)
        rate = float(n.learning_rate) / old * float(scale)
        return n._replace(learning_rate=_like(n.learning_rate, rate),
                          learning_rate_scale=_like(n.learning_rate_scale, scale))

    return _replace_nodes(state, rescale)
