"""Optimizers as gradient transformations that chain, in the style of optax.

A :class:`GradientTransformation` is a pair of pure functions: ``init(params) -> state`` and
``update(grads, state, params) -> (updates, state)``; :func:`apply_updates` adds the updates to
the parameters. Nothing is mutated, so a step can be retried; a state is a NamedTuple of arrays
on the parameters' device (a tuple of them for a :func:`chain`) that ships to workers
(:func:`state_to_host`, :func:`state_to_device`) and checkpoints.

:func:`sgd` and :func:`adam` are scikit-learn's ``SGDOptimizer`` and ``AdamOptimizer``,
operation for operation; :func:`adamw` is PyTorch's ``AdamW``. The learning rate (a float or a
schedule ``step -> rate``) lives in the state, so checkpoints keep it and the training loop
changes it (:func:`set_learning_rate`, :func:`set_learning_rate_scale`).

Example
-------
>>> import numpy as np
>>> opt = chain(clip_by_global_norm(10.0), adam(learning_rate=0.1))
>>> params = np.array([1.0, -2.0])
>>> state = opt.init(params)
>>> for _ in range(200):
...     grads = 2 * params  # gradient of ||params||²
...     updates, state = opt.update(grads, state, params)
...     params = apply_updates(params, updates)
>>> bool(np.abs(params).max() < 1e-2), get_learning_rate(state)
(True, 0.1)
"""

from .base import (
    EmptyState,
    GradientTransformation,
    Schedule,
    apply_updates,
    chain,
    state_copy,
    state_to_device,
    state_to_host,
)
from .factory import LEARNING_RATES, SOLVERS, from_sklearn
from .fused import fused_adamw
from .learning_rate import (
    ScaleByLearningRateState,
    get_learning_rate,
    get_learning_rate_scale,
    scale_by_learning_rate,
    set_learning_rate,
    set_learning_rate_scale,
)
from .optimizers import STATE_TYPES, AdamState, SGDState, adam, adamw, get_optimizer, sgd
from .schedules import constant, cosine_decay, invscaling, linear_warmup, warmup_cosine_decay
from .transforms import (
    ScaleByAdamState,
    ScaleByScheduleState,
    add_decayed_weights,
    clip_by_global_norm,
    keep_mask,
    masked,
    scale,
    scale_by_adam,
    scale_by_schedule,
)

__all__ = [
    "LEARNING_RATES",
    "SOLVERS",
    "STATE_TYPES",
    "AdamState",
    "EmptyState",
    "GradientTransformation",
    "SGDState",
    "ScaleByAdamState",
    "ScaleByLearningRateState",
    "ScaleByScheduleState",
    "Schedule",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "constant",
    "cosine_decay",
    "from_sklearn",
    "fused_adamw",
    "get_learning_rate",
    "get_learning_rate_scale",
    "get_optimizer",
    "invscaling",
    "keep_mask",
    "linear_warmup",
    "masked",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "set_learning_rate",
    "set_learning_rate_scale",
    "sgd",
    "state_copy",
    "state_to_device",
    "state_to_host",
    "warmup_cosine_decay",
]
