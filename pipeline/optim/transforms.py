"""Building blocks to :func:`~pipeline.optim.chain`: clipping, weight decay, masks, Adam's
scaling and schedules, each a :class:`GradientTransformation` as in optax.

Masks are boolean arrays shaped like the parameters, given on the host or on any device; they
are moved once to the device of the updates they meet (a one-entry cache per transformation).
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import device

from ..backend import namespace, to_host
from . import into
from .base import Array, EmptyState, GradientTransformation, Schedule, scalar

__all__ = [
    "ScaleByAdamState",
    "ScaleByScheduleState",
    "add_decayed_weights",
    "clip_by_global_norm",
    "keep_mask",
    "scale",
    "scale_by_adam",
    "scale_by_schedule",
]


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`. ``count`` is a 0-d float64 array."""

    count: Array  # updates done
    mu: Array  # first-moment estimate, like params
    nu: Array  # second-moment estimate, like params


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`: the updates done, a 0-d float64 array."""

    count: Array


class _Mask:
    """A boolean mask shaped like the parameters, handed out on the device of a given array."""

    def __init__(self, mask: Array, what: str):
        host = np.asarray(to_host(mask))
        if host.dtype != np.bool_:
            raise ValueError(f"{what}: mask must be a boolean array, got dtype {host.dtype}")
        self.host = host
        self.what = what
        self._cached: tuple[Any, Any, Array] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Ship the host mask only (Dask pickles the optimizer into tasks), not a device copy.
        return {**self.__dict__, "_cached": None}

    def check(self, params: Array) -> None:
        if tuple(self.host.shape) != tuple(params.shape):
            raise ValueError(
                f"{self.what}: mask has shape {tuple(self.host.shape)}, the parameters have "
                f"shape {tuple(params.shape)}"
            )

    @property
    def runs(self) -> tuple[tuple[int, int, bool], ...] | None:
        """A 1-D mask as its runs ``(start, stop, value)``, in order (``None`` for other
        shapes, or for more than 64 runs, where one masked pass beats many sliced ones)."""
        if "_runs" not in self.__dict__:
            runs = None
            if self.host.ndim == 1 and self.host.size:
                edges = np.flatnonzero(self.host[1:] != self.host[:-1]) + 1
                if len(edges) < 64:
                    bounds = [0, *edges.tolist(), int(self.host.size)]
                    runs = tuple((a, b, bool(self.host[a])) for a, b in pairwise(bounds))
            self.__dict__["_runs"] = runs
        return self.__dict__["_runs"]

    def like(self, arr: Array) -> Array:
        xp, dev = namespace(arr), device(arr)
        if self._cached is None or self._cached[0] is not xp or self._cached[1] != dev:
            self._cached = (xp, dev, xp.asarray(self.host, device=dev))
        return self._cached[2]


def scale(factor: float) -> GradientTransformation:
    """Multiply the updates by the constant ``factor``."""
    factor = float(factor)

    def init(params: Array) -> EmptyState:
        return EmptyState()

    def update(updates: Array, state: EmptyState, params: Array = None) -> tuple[Array, EmptyState]:
        return factor * updates, state

    return GradientTransformation(init, update)


def scale_by_schedule(schedule: Schedule) -> GradientTransformation:
    """Multiply the ``n``-th update (``n`` = 0, 1, ...) by ``schedule(n)``."""

    def init(params: Array) -> ScaleByScheduleState:
        return ScaleByScheduleState(scalar(0, params))

    def update(updates: Array, state: ScaleByScheduleState,
               params: Array = None) -> tuple[Array, ScaleByScheduleState]:
        n = float(state.count)
        factor = float(schedule(int(n)))
        return factor * updates, ScaleByScheduleState(scalar(n + 1, updates))

    return GradientTransformation(init, update)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale the updates to Euclidean norm ``max_norm`` when their norm exceeds it.

    optax's rule: updates ``g`` with ``‖g‖ < max_norm`` pass unchanged, others become
    ``g / ‖g‖ * max_norm``; the norm is computed in the updates' dtype.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    max_norm = float(max_norm)

    def init(params: Array) -> EmptyState:
        return EmptyState()

    def update(updates: Array, state: EmptyState, params: Array = None) -> tuple[Array, EmptyState]:
        xp = namespace(updates)
        # One host sync per step; comparing on the host keeps a zero gradient free of 0/0.
        norm = float(xp.sqrt(xp.sum(updates * updates)))
        if norm < max_norm:
            return updates, state
        return updates / norm * max_norm, state

    def update_into(updates: Array, state: EmptyState, params: Array,
                    workspace: Any) -> tuple[Array, EmptyState]:
        out = into.global_norm_clip(updates, max_norm, workspace)
        return update(updates, state, params) if out is None else (out, state)

    return GradientTransformation(init, update, update_into)


def add_decayed_weights(weight_decay: float, mask: Array | None = None) -> GradientTransformation:
    """Add ``weight_decay * params`` to the updates, only where ``mask`` is True if given.

    Chained before :func:`~pipeline.optim.scale_by_learning_rate` this is decoupled weight
    decay (Loshchilov & Hutter): the decay is scaled by the learning rate but not by Adam's
    normalisation.
    """
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    weight_decay = float(weight_decay)
    keep = None if mask is None else _Mask(mask, "add_decayed_weights")

    def init(params: Array) -> EmptyState:
        if keep is not None:
            keep.check(params)
        return EmptyState()

    def update(updates: Array, state: EmptyState, params: Array = None) -> tuple[Array, EmptyState]:
        if params is None:
            raise ValueError("add_decayed_weights needs the parameters: pass params to update")
        decayed = updates + weight_decay * params
        if keep is None:
            return decayed, state
        xp = namespace(updates)
        return xp.where(keep.like(updates), decayed, updates), state

    def update_into(updates: Array, state: EmptyState, params: Array,
                    workspace: Any) -> tuple[Array, EmptyState]:
        if params is None:
            raise ValueError("add_decayed_weights needs the parameters: pass params to update")
        mask = None if keep is None else keep.like(updates)
        out = into.decayed(updates, params, weight_decay, mask, workspace,
                           None if keep is None else keep.runs)
        return update(updates, state, params) if out is None else (out, state)

    return GradientTransformation(init, update, update_into)


def keep_mask(mask: Array) -> GradientTransformation:
    """Zero the updates where ``mask`` is False, so those parameters never change (pruning with
    a fixed mask). Put it last in a chain: earlier transformations still see every entry."""
    keep = _Mask(mask, "keep_mask")

    def init(params: Array) -> EmptyState:
        keep.check(params)
        return EmptyState()

    def update(updates: Array, state: EmptyState, params: Array = None) -> tuple[Array, EmptyState]:
        xp = namespace(updates)
        return xp.where(keep.like(updates), updates, xp.zeros_like(updates)), state

    return GradientTransformation(init, update)


def masked(optimizer: GradientTransformation, mask: Array) -> GradientTransformation:
    """``optimizer`` seeing zero gradients and making zero updates where ``mask`` is False
    (pruning with a fixed mask). Its state keeps the inner optimizer's structure, so a run can
    continue a state built without the mask."""
    keep = keep_mask(mask)

    def update(grads: Array, state: Any, params: Array = None) -> tuple[Array, Any]:
        grads, _ = keep.update(grads, EmptyState())
        updates, state = optimizer.update(grads, state, params)
        return keep.update(updates, EmptyState())[0], state

    return GradientTransformation(optimizer.init, update)


def scale_by_adam(beta_1: float = 0.9, beta_2: float = 0.999,
                  epsilon: float = 1e-8) -> GradientTransformation:
    """Adam's direction ``m̂ / (sqrt(v) / sqrt(1 - b2^t) + eps)``, ``m̂ = m / (1 - b1^t)``, as
    PyTorch's ``Adam``/``AdamW`` compute it (optax's ``scale_by_adam``); no learning rate.

    The epsilon sits outside the bias correction of ``v`` here; scikit-learn's Adam
    (:func:`~pipeline.optim.adam`) folds the correction into the step size instead.
    """
    check_adam_hyperparameters(beta_1, beta_2, epsilon)
    beta_1, beta_2, epsilon = float(beta_1), float(beta_2), float(epsilon)

    def init(params: Array) -> ScaleByAdamState:
        xp = namespace(params)
        return ScaleByAdamState(scalar(0, params), xp.zeros_like(params), xp.zeros_like(params))

    def update(updates: Array, state: ScaleByAdamState,
               params: Array = None) -> tuple[Array, ScaleByAdamState]:
        xp = namespace(updates)
        t = int(float(state.count)) + 1
        mu = beta_1 * state.mu + (1 - beta_1) * updates
        nu = beta_2 * state.nu + (1 - beta_2) * (updates * updates)
        correction_1 = 1 - beta_1**t
        correction_2 = math.sqrt(1 - beta_2**t)
        direction = (mu / correction_1) / (xp.sqrt(nu) / correction_2 + epsilon)
        return direction, ScaleByAdamState(scalar(t, updates), mu, nu)

    def update_into(updates: Array, state: ScaleByAdamState, params: Array,
                    workspace: Any) -> tuple[Array, ScaleByAdamState]:
        t = int(float(state.count)) + 1
        out = into.adam_direction(updates, state.mu, state.nu, t, beta_1, beta_2, epsilon,
                                  workspace)
        if out is None:
            return update(updates, state, params)
        direction, mu, nu = out
        return direction, ScaleByAdamState(scalar(t, updates), mu, nu)

    return GradientTransformation(init, update, update_into)


def check_adam_hyperparameters(beta_1: float, beta_2: float, epsilon: float) -> None:
    for name, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
        if not 0 <= beta < 1:
            raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
