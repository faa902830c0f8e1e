"""Data-parallel training on Dask: the functional core behind the estimators.

``core`` (``train()``, the epoch loop) drives a sync strategy (``strategies``: exact gradient or
local SGD) on the round runner (``rounds``: one task per worker, folded by position; ``recovery``:
retries and the watchdog), whose tasks (``tasks``) are pure functions on the blocks; ``stopping``
is the end-of-epoch rule, ``lbfgs`` the full-batch driver; :mod:`pipeline.events` owns what
the dashboard hears.
"""

from ..events import TOPIC as EVENT_TOPIC
from .core import (
    SOLVERS,
    SYNC_MODES,
    TrainConfig,
    TrainResult,
    TrainState,
    evaluate,
    initial_state,
    make_strategy,
    train,
)

__all__ = [
    "EVENT_TOPIC",
    "SOLVERS",
    "SYNC_MODES",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "evaluate",
    "initial_state",
    "make_strategy",
    "train",
]
