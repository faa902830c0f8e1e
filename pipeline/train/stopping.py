"""The end-of-epoch rule, as a pure function: scikit-learn's ``_update_no_improvement_count``,
best-parameter tracking for early stopping, and the per-epoch learning-rate rules
(``invscaling``: ``lr0 / (t + 1) ** power_t``; ``adaptive``: divide by 5 when stalled)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import optim

__all__ = ["Progress", "StoppingRule"]


class Progress(NamedTuple):
    best_loss: float = math.inf
    best_validation_score: float = -math.inf
    no_improvement_count: int = 0
    best_params: Any = None
    learning_rate: float = 1e-3
    stopped: bool = False


@dataclass(frozen=True)
class StoppingRule:
    tol: float = 1e-4
    n_iter_no_change: int = 10
    early_stopping: bool = False  # on the validation score (else on the training loss)
    learning_rate: str = "constant"  # the epoch-level rule: constant | invscaling | adaptive
    learning_rate_init: float = 1e-3
    power_t: float = 0.5
    scoring: str = "score"  # the validation score: "score" (accuracy / R²) or "neg_log_loss"

    def update(self, p: Progress, *, loss: float, score: float | None, params: Any,
               samples_seen: int) -> Progress:
        """``p`` after an epoch that ended with training ``loss`` and validation ``score``."""
        best_val, best_params, no_improve = p.best_validation_score, p.best_params, \
            p.no_improvement_count
        if self.early_stopping:
            assert score is not None
            no_improve = no_improve + 1 if score < best_val + self.tol else 0
            if score > best_val:
                best_val = score
                best_params = params.copy()
        else:
            no_improve = no_improve + 1 if loss > p.best_loss - self.tol else 0
        lr, stopped = p.learning_rate, False
        if self.learning_rate == "invscaling":
            lr = optim.invscaling(self.learning_rate_init, self.power_t, samples_seen)
        if no_improve > self.n_iter_no_change:
            if self.learning_rate == "adaptive" and lr > 1e-6:
                lr /= 5.0
                no_improve = 0
            else:
                stopped = True
        return Progress(min(p.best_loss, loss), best_val, no_improve, best_params, lr, stopped)
