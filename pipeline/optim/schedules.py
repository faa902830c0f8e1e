"""Learning-rate schedules: pure functions of the step count, Python float in and out.

A schedule's argument is the number of updates done before the one it rates (0 for the first),
as in optax. The definitions follow optax's ``constant_schedule``, ``linear_schedule`` (from 0),
``cosine_decay_schedule`` and ``warmup_cosine_decay_schedule``; :func:`invscaling` is
scikit-learn's ``'invscaling'`` rate.

Example
-------
>>> sched = warmup_cosine_decay(1.0, warmup_steps=2, total_steps=6)
>>> [round(sched(t), 3) for t in range(8)]
[0.0, 0.5, 1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
"""

from __future__ import annotations

import math
from typing import overload

from .base import Schedule

__all__ = ["constant", "cosine_decay", "invscaling", "linear_warmup", "warmup_cosine_decay"]


def constant(value: float) -> Schedule:
    """``step -> value``."""
    value = float(value)

    def schedule(step: int) -> float:
        return value

    return schedule


@overload
def invscaling(learning_rate_init: float, power_t: float) -> Schedule: ...


@overload
def invscaling(learning_rate_init: float, power_t: float, time_step: int) -> float: ...


def invscaling(learning_rate_init: float, power_t: float,
               time_step: int | None = None) -> float | Schedule:
    """scikit-learn's ``'invscaling'`` rate: ``learning_rate_init / (time_step + 1) ** power_t``.

    ``time_step`` is the number of training samples seen so far. With ``time_step`` the rate is
    returned; without it, the schedule ``t -> rate`` (scikit-learn counts ``t`` in samples and
    updates the rate at epoch ends; compose with ``lambda step: ...`` to count differently).
    """
    if time_step is not None:
        return float(learning_rate_init) / (time_step + 1) ** power_t

    def schedule(step: int) -> float:
        return float(learning_rate_init) / (step + 1) ** power_t

    return schedule


def linear_warmup(peak: float, warmup_steps: int) -> Schedule:
    """From 0 at step 0 linearly up to ``peak`` at ``warmup_steps``, then ``peak``.

    optax's ``linear_schedule(0, peak, warmup_steps)``; ``warmup_steps <= 0`` is no warm-up.
    """
    peak = float(peak)
    if warmup_steps <= 0:
        return constant(peak)

    def schedule(step: int) -> float:
        return peak * min(step, warmup_steps) / warmup_steps

    return schedule


def cosine_decay(peak: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """``peak * ((1 - alpha) * (1 + cos(pi * min(t, T) / T)) / 2 + alpha)`` with ``T`` =
    ``decay_steps``: from ``peak`` down to ``alpha * peak`` at step ``T``, then flat.

    optax's ``cosine_decay_schedule``; PyTorch's ``CosineAnnealingLR(T_max=T,
    eta_min=alpha * peak)`` for ``t <= T``.
    """
    if not decay_steps > 0:
        raise ValueError(f"decay_steps must be > 0, got {decay_steps!r}")
    peak, alpha = float(peak), float(alpha)

    def schedule(step: int) -> float:
        t = min(step, decay_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * t / decay_steps))
        return peak * ((1 - alpha) * cosine + alpha)

    return schedule


def warmup_cosine_decay(peak: float, warmup_steps: int, total_steps: int,
                        end_value: float = 0.0) -> Schedule:
    """:func:`linear_warmup` to ``peak`` over ``warmup_steps``, then :func:`cosine_decay` to
    ``end_value`` at ``total_steps`` (which includes the warm-up), then flat.

    optax's ``warmup_cosine_decay_schedule(0, peak, warmup_steps, total_steps, end_value)``.
    """
    if not total_steps > warmup_steps:
        raise ValueError(
            f"total_steps ({total_steps!r}) must exceed warmup_steps ({warmup_steps!r})"
        )
    peak = float(peak)
    warm = linear_warmup(peak, warmup_steps)
    alpha = 0.0 if peak == 0.0 else float(end_value) / peak
    decay = cosine_decay(peak, total_steps - max(warmup_steps, 0), alpha)
    start = max(warmup_steps, 0)

    def schedule(step: int) -> float:
        return warm(step) if step < start else decay(step - start)

    return schedule
