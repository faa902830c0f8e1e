"""Regression metrics: :func:`mean_squared_error`, :func:`root_mean_squared_error`,
:func:`mean_absolute_error`, :func:`r2_score`, from one reduced partial (count, mean and M2 of
``y_true`` merged with Chan's formulas, sums of squared and absolute residuals), with sklearn's
checks and edge cases.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .metric_graph import regression_summary
from .metric_partials import RegressionPartial

__all__ = ["mean_absolute_error", "mean_squared_error", "r2_score", "root_mean_squared_error"]


_ERRORS = ("raw_values", "uniform_average")  # the multioutput strings of the error metrics


def mean_squared_error(
    y_true, y_pred, *, sample_weight=None, multioutput="uniform_average", split_every=8
):
    """Mean of squared residuals (per output, then averaged per ``multioutput``); see
    ``sklearn.metrics.mean_squared_error``."""
    s = regression_summary(y_true, y_pred, sample_weight, split_every, multioutput, _ERRORS)
    return _average_outputs(s.sse / _total_weight(s), multioutput)


def root_mean_squared_error(
    y_true, y_pred, *, sample_weight=None, multioutput="uniform_average", split_every=8
):
    """Square root of the mean squared error, per output then averaged; see
    ``sklearn.metrics.root_mean_squared_error``."""
    s = regression_summary(y_true, y_pred, sample_weight, split_every, "raw_values", _ERRORS)
    return _average_outputs(np.sqrt(s.sse / _total_weight(s)), multioutput)


def mean_absolute_error(
    y_true, y_pred, *, sample_weight=None, multioutput="uniform_average", split_every=8
):
    """Mean of absolute residuals; see ``sklearn.metrics.mean_absolute_error``."""
    s = regression_summary(y_true, y_pred, sample_weight, split_every, multioutput, _ERRORS)
    return _average_outputs(s.sae / _total_weight(s), multioutput)


def r2_score(
    y_true,
    y_pred,
    *,
    sample_weight=None,
    multioutput="uniform_average",
    force_finite=True,
    split_every=8,
):
    """Coefficient of determination ``1 - SS_res / SS_tot`` in one pass: ``SS_tot`` is the M2
    of ``y_true`` merged with Chan's parallel formulas (no ``sum(y**2) - n*mean**2``
    cancellation). Edge cases as sklearn: ``nan`` and an ``UndefinedMetricWarning`` for fewer
    than two samples; with ``force_finite``, 1.0 for perfect predictions of a constant target and
    0.0 for imperfect ones. See ``sklearn.metrics.r2_score``.
    """
    s = regression_summary(
        y_true, y_pred, sample_weight, split_every, multioutput, (*_ERRORS, "variance_weighted")
    )
    if s.n_rows < 2:
        from sklearn.exceptions import UndefinedMetricWarning  # workers never need it
        warnings.warn(
            "R^2 score is not well-defined with less than two samples.",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        return float("nan")
    _total_weight(s)
    numerator, denominator = s.sse, s.m2
    if force_finite:
        scores = np.ones_like(numerator)
        valid = (numerator != 0) & (denominator != 0)
        scores[valid] = 1 - numerator[valid] / denominator[valid]
        scores[(numerator != 0) & (denominator == 0)] = 0.0
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = 1 - numerator / denominator
    if isinstance(multioutput, str) and multioutput == "variance_weighted":
        multioutput = denominator if np.any(denominator != 0) else "uniform_average"
    return _average_outputs(scores, multioutput)


def _total_weight(s: RegressionPartial) -> float:
    if s.n_rows == 0:
        raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required.")
    if s.weight == 0:
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")
    return s.weight


def _average_outputs(values: np.ndarray, multioutput: Any):
    if isinstance(multioutput, str) and multioutput == "raw_values":
        return values
    if multioutput is None or isinstance(multioutput, str):  # "uniform_average"
        return float(np.mean(values))
    return float(np.average(values, weights=np.asarray(multioutput, dtype=np.float64)))
