"""The end-of-epoch rule, as a pure function: scikit-learn's ``_update_no_improvement_count``,
best-parameter tracking for early stopping, the per-epoch learning-rate rules
(``invscaling``: ``lr0 / (t + 1) ** power_t``; ``adaptive``: divide by 5 when stalled), and an
exponential moving average of the epochs' parameters (``ema_decay``).

With ``ema_decay = d > 0`` the parameters a run is judged by, and ends with, are the average
``a_e = d a_{e-1} + (1 - d) p_e`` of the parameters ``p_e`` at the end of each epoch ``e``
(``a_1 = p_1``), as Polyak-Ruppert averaging and Keras' ``use_ema`` keep one: training goes on
from ``p_e``, the validation score, the best-epoch restore and the fitted parameters use
``a_e``. A step size that still swings the parameters from epoch to epoch swings the average
much less, so its validation score rises more steadily (a shorter patience stops at the same
score) and usually ends higher (:meth:`StoppingRule.average`)."""

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
    average: Any = None  # the epochs' parameter average (ema_decay > 0), host array


@dataclass(frozen=True)
class StoppingRule:
    tol: float = 1e-4
    n_iter_no_change: int = 10
    early_stopping: bool = False  # on the validation score (else on the training loss)
    learning_rate: str = "constant"  # the epoch-level rule: constant | invscaling | adaptive
    learning_rate_init: float = 1e-3
    power_t: float = 0.5
    scoring: str = "score"  # the validation score: "score" (accuracy / R²) or "neg_log_loss"
    ema_decay: float = 0.0  # the epochs' parameter average (see the module docstring); 0: none

    def average(self, p: Progress, params: Any) -> tuple[Progress, Any]:
        """``p`` with the average taken over an epoch that ended at ``params``, and the
        parameters the epoch is judged by (scored, passed to :meth:`update`): the average, or
        ``params`` itself without one. The same float operations wherever the rule runs
        (client, fused task, mesh rank), so the same bits."""
        d = self.ema_decay
        if not d:
            return p, params
        avg = params.copy() if p.average is None else p.average * d + params * (1.0 - d)
        return p._replace(average=avg), avg

    def final(self, p: Progress, params: Any) -> Any:
        """The parameters a run ends with: the best epoch's with early stopping, else the
        average (``ema_decay``), else the last epoch's ``params``."""
        if self.early_stopping and p.best_params is not None:
            return p.best_params
        return p.average if p.average is not None else params

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
        return Progress(min(p.best_loss, loss), best_val, no_improve, best_params, lr, stopped,
                        p.average)
