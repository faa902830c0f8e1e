"""One place that turns scikit-learn-style options into an optimizer: the estimators call
:func:`from_sklearn` once and pass the object on."""

from __future__ import annotations

from typing import Any

from .base import Array, GradientTransformation, Schedule, chain
from .fused import fused_adamw
from .optimizers import adam, adamw, sgd
from .schedules import cosine_decay, linear_warmup, warmup_cosine_decay
from .transforms import clip_by_global_norm

__all__ = ["LEARNING_RATES", "SOLVERS", "from_sklearn"]

SOLVERS = ("sgd", "adam", "adamw")
LEARNING_RATES = ("constant", "invscaling", "adaptive", "cosine")


def from_sklearn(
    solver: str,
    *,
    learning_rate_init: float = 1e-3,
    learning_rate: str = "constant",
    momentum: float = 0.9,
    nesterovs_momentum: bool = True,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    weight_mask: Array | None = None,
    fused: bool = False,
) -> GradientTransformation:
    """The optimizer an ``MLPRegressor``/``MLPClassifier`` configuration asks for.

    With scikit-learn's options alone (no ``weight_decay``, ``clip_norm``, ``warmup_steps``)
    this is exactly :func:`sgd` or :func:`adam`, bit for bit, with a constant rate.

    Parameters
    ----------
    solver : {"sgd", "adam", "adamw"}
    learning_rate : {"constant", "invscaling", "adaptive", "cosine"}
        ``"cosine"`` decays the rate over ``total_steps`` updates (after the warm-up) to 0.
        ``"invscaling"`` and ``"adaptive"`` act at epoch ends, which the optimizer does not
        see: the training loop applies them with :func:`set_learning_rate` (or, with a
        warm-up, :func:`set_learning_rate_scale`), as scikit-learn does; here they build the
        same optimizer as ``"constant"``.
    weight_decay : float
        Decoupled weight decay, for ``solver="adamw"`` only (``alpha`` is the L2 penalty).
    clip_norm : float, optional
        Clip each gradient to this Euclidean norm before the optimizer sees it.
    warmup_steps : int
        Updates over which the rate rises linearly from 0 to ``learning_rate_init``.
    total_steps : int, optional
        Updates in the whole run, warm-up included (needed by ``"cosine"``).
    weight_mask : bool array, optional
        Which parameters decay (the trainer passes "weights, not biases"); ignored when
        ``weight_decay`` is 0.
    fused : bool
        ``solver="adamw"`` only: :func:`~pipeline.optim.fused_adamw`, the same optimizer and
        state with a fused step for NumPy parameters (the same update up to rounding, about
        half the time: the tabular estimators use it).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS} for a gradient optimizer, "
                         f"got {solver!r}")
    if learning_rate not in LEARNING_RATES:
        raise ValueError(f"learning_rate must be one of {LEARNING_RATES}, got {learning_rate!r}")
    if not learning_rate_init > 0:
        raise ValueError(f"learning_rate_init must be > 0, got {learning_rate_init!r}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if fused and solver != "adamw":
        raise ValueError(f"fused=True needs solver='adamw', got solver={solver!r}")
    if weight_decay and solver != "adamw":
        raise ValueError(f"weight_decay={weight_decay!r} needs solver='adamw' (decoupled decay); "
                         f"for an L2 penalty with solver={solver!r} use alpha")

    lr0 = float(learning_rate_init)
    rate: float | Schedule = lr0
    if learning_rate == "cosine":
        if total_steps is None or not total_steps > warmup_steps:
            raise ValueError(f"learning_rate='cosine' needs total_steps > warmup_steps "
                             f"({warmup_steps}), got total_steps={total_steps!r}")
        rate = (warmup_cosine_decay(lr0, warmup_steps, total_steps) if warmup_steps
                else cosine_decay(lr0, total_steps))
    elif warmup_steps:
        rate = linear_warmup(lr0, warmup_steps)

    opt: GradientTransformation
    if solver == "sgd":
        opt = sgd(rate, momentum=momentum, nesterov=nesterovs_momentum)
    elif solver == "adam":
        opt = adam(rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
    else:
        mask: Any = weight_mask if weight_decay else None
        if fused:
            return fused_adamw(rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                               weight_decay=weight_decay, mask=mask, clip_norm=clip_norm)
        opt = adamw(rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                    weight_decay=weight_decay, mask=mask)
    if clip_norm is not None:
        opt = chain(clip_by_global_norm(clip_norm), opt)
    return opt
