"""Full-batch L-BFGS (scipy) driven by distributed loss-and-gradient rounds, like Spark's MLP
with treeAggregate: scipy holds the curvature pairs on the client; every function evaluation is
one exact gradient round over all blocks."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import events
from ..backend import to_host
from .rounds import Rounds
from .scores import score_value
from .tasks import check_finite

__all__ = ["run_lbfgs"]


def run_lbfgs(client: Any, rounds: Rounds, *, params: np.ndarray, alpha: float, max_iter: int,
              max_fun: int, tol: float, validation: Any, run_id: str,
              first_round: int, seed: int, shuffle: bool) -> dict[str, Any]:
    """Minimise the penalised mean loss from ``params``; returns the fitted parameters, the
    loss curve, history and counts (``nit``, ``nfev``, ``rounds``, ``loss``)."""
    from scipy.optimize import minimize

    dtype = params.dtype
    model = rounds.model
    n_total = rounds.blocks.n_samples
    counter = {"rounds": first_round}
    loss_curve: list[float] = []
    history: list[dict[str, Any]] = []

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        r0 = time.perf_counter()
        p = x.astype(dtype)
        part = rounds.gradient(p, 0, 0, 1, seed, shuffle)
        check_finite(part, counter["rounds"], "loss or gradient")
        pen, pen_grad = model.l2_penalty(p, alpha, n_total)
        loss = part.loss / n_total + pen
        grad = to_host(part.vector) / n_total + pen_grad
        counter["rounds"] += 1
        seconds = time.perf_counter() - r0
        events.emit_round(client, run_id, **events.round_fields(
            counter["rounds"], len(loss_curve) + 1, part, seconds, loss))
        return float(loss), np.asarray(grad, dtype=np.float64)

    def callback(intermediate_result: Any) -> None:
        # scipy passes the OptimizeResult when the parameter has this name
        fx = getattr(intermediate_result, "fun", None)
        if fx is not None:
            loss_curve.append(float(fx))
            history.append({"epoch": len(loss_curve), "loss": float(fx),
                            "validation_score": None, "samples_per_s": None,
                            "seconds": None, "learning_rate": None})

    res = minimize(
        fun, params.astype(np.float64), jac=True, method="L-BFGS-B", callback=callback,
        # ftol as scikit-learn's LogisticRegression sets it: stop on the gradient (gtol=tol),
        # not on a relative loss change that would stop far from the optimum.
        options={"maxfun": max_fun, "maxiter": max_iter, "gtol": tol,
                 "ftol": 64 * np.finfo(float).eps},
    )
    fitted = res.x.astype(dtype)
    val_scores: list[float] = []
    if validation is not None:
        val_scores.append(score_value(rounds.score(validation, fitted, "lbfgs", with_loss=False),
                                      model.loss))
        if history:
            history[-1]["validation_score"] = val_scores[-1]
    return {"params": fitted, "loss_curve": loss_curve, "history": history,
            "validation_scores": val_scores, "nit": int(res.nit), "nfev": int(res.nfev),
            "rounds": counter["rounds"], "loss": float(res.fun)}

