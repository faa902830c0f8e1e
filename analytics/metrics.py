"""scikit-learn's metrics on Dask Arrays and Series (and NumPy/pandas), without collecting ``y``.

Every metric here has the name, signature and result of its ``sklearn.metrics`` namesake, plus
``split_every`` (the fan-in of the reduction tree). It maps one small *partial* over row-aligned
partitions of its inputs, merges the partials with :func:`pipeline.reduce.tree_reduce` and
materialises the root with one ``dask.compute``. Partials are computed on the chunk's own device
(NumPy or CuPy, through :func:`pipeline.backend.namespace`); only they cross
:func:`pipeline.backend.to_host`.

How the classification metrics stay exact
-----------------------------------------
Their partial is a *weighted summary*: the distinct ``(y_true, y_pred)`` pairs of the partition
with their counts (or summed ``sample_weight``); for the ranking metrics, the distinct
``(y_true, y_score)`` pairs. Merging summaries is adding the weights of equal pairs, which also
discovers the labels (union of uniques) in the same pass. Every confusion-matrix or
threshold-curve metric of the full data equals the same metric of the summary taken with its
weights as ``sample_weight`` (counts are exact in float64 up to 2**53 rows), so the last step
hands the summary to ``sklearn.metrics``: ties, thresholds, ``zero_division``, label checks and
warnings (``UndefinedMetricWarning``) are sklearn's by construction. Without ``sample_weight``
the counts are passed as integer weights, so integer results (``confusion_matrix``, support)
keep their integer dtype.

Summary sizes: at most ``n_classes**2`` pairs for the confusion metrics; the number of distinct
scores (per class) for the exact ranking metrics. For scores with very many distinct values,
``roc_curve``, ``precision_recall_curve`` and ``roc_auc_score`` accept ``max_bins=``: a fixed
histogram of scores whose error is stated in :func:`roc_curve`.

``log_loss`` and the regression metrics reduce sums instead (per-label sums of ``-log p`` per
column; count/mean/M2 of ``y_true`` merged with Chan's formulas, sums of squared and absolute
residuals), and reproduce sklearn's checks and edge cases.

Inputs are aligned by position, like sklearn (a Series' index is ignored). Dask Arrays with known
chunks are rechunked to ``y_true``'s row chunks; otherwise partitions are paired one to one and
their lengths checked when they are computed. In-memory inputs paired with a Dask collection are
sliced to its partitions inside the graph.

Example
-------
>>> import dask.array as da
>>> y_true = da.from_array([0, 1, 1, 0, 1], chunks=2)
>>> y_pred = da.from_array([0, 1, 0, 0, 1], chunks=3)
>>> accuracy_score(y_true, y_pred)
0.8
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np
import sklearn.metrics as skm
from dask.base import is_dask_collection
from sklearn.exceptions import UndefinedMetricWarning

from pipeline.backend import device, is_cudf, namespace, on_one_device, to_host, values_of
from pipeline.reduce import tree_reduce

__all__ = [
    "accuracy_score",
    "average_precision_score",
    "classification_summary",
    "confusion_matrix",
    "f1_score",
    "fbeta_score",
    "log_loss",
    "mean_absolute_error",
    "mean_squared_error",
    "precision_recall_curve",
    "precision_recall_fscore_support",
    "precision_score",
    "r2_score",
    "recall_score",
    "roc_auc_score",
    "roc_curve",
    "root_mean_squared_error",
]

_WARN_FOR = ("precision", "recall", "f-score")


# --------------------------------------------------------------------------------------------
# Classification: confusion-matrix metrics
# --------------------------------------------------------------------------------------------


def accuracy_score(y_true, y_pred, *, normalize=True, sample_weight=None, split_every=8):
    """Fraction (or, with ``normalize=False``, weighted number) of correct predictions.

    See ``sklearn.metrics.accuracy_score``; returns a Python float.
    """
    s = _pair_summary(y_true, y_pred, sample_weight, split_every)
    return skm.accuracy_score(s.first, s.second, normalize=normalize, sample_weight=s.weight)


def confusion_matrix(
    y_true, y_pred, *, labels=None, sample_weight=None, normalize=None, split_every=8
):
    """Confusion matrix ``C[i, j]`` = weight of samples of class ``labels[i]`` predicted as
    ``labels[j]``; labels are the sorted union of ``y_true`` and ``y_pred`` unless given.

    See ``sklearn.metrics.confusion_matrix``; int64 without ``sample_weight`` or ``normalize``.
    """
    s = _pair_summary(y_true, y_pred, sample_weight, split_every)
    return skm.confusion_matrix(
        s.first, s.second, labels=labels, sample_weight=s.weight, normalize=normalize
    )


def precision_recall_fscore_support(
    y_true,
    y_pred,
    *,
    beta=1.0,
    labels=None,
    pos_label=1,
    average=None,
    warn_for=_WARN_FOR,
    sample_weight=None,
    zero_division="warn",
    split_every=8,
):
    """Precision, recall, F-beta and support per class or averaged.

    ``average`` is one of ``"binary"``, ``"micro"``, ``"macro"``, ``"weighted"`` or ``None``;
    ``zero_division`` is ``"warn"`` (value 0 and an ``UndefinedMetricWarning``, as sklearn),
    ``0.0``, ``1.0`` or ``np.nan``. See ``sklearn.metrics.precision_recall_fscore_support``.
    """
    s = _pair_summary(y_true, y_pred, sample_weight, split_every)
    p, r, f, support = skm.precision_recall_fscore_support(
        s.first,
        s.second,
        beta=beta,
        labels=labels,
        pos_label=pos_label,
        average=average,
        warn_for=warn_for,
        sample_weight=s.weight,
        zero_division=zero_division,
    )
    if support is not None and s.weight.dtype.kind in "iub":
        support = support.astype(np.int64)  # bincount of integer weights returns float64
    return p, r, f, support


def fbeta_score(
    y_true,
    y_pred,
    *,
    beta,
    labels=None,
    pos_label=1,
    average="binary",
    sample_weight=None,
    zero_division="warn",
    split_every=8,
):
    """F-beta score; see ``sklearn.metrics.fbeta_score``."""
    _, _, f, _ = precision_recall_fscore_support(
        y_true,
        y_pred,
        beta=beta,
        labels=labels,
        pos_label=pos_label,
        average=average,
        warn_for=("f-score",),
        sample_weight=sample_weight,
        zero_division=zero_division,
        split_every=split_every,
    )
    return f


def f1_score(
    y_true,
    y_pred,
    *,
    labels=None,
    pos_label=1,
    average="binary",
    sample_weight=None,
    zero_division="warn",
    split_every=8,
):
    """F1 score; see ``sklearn.metrics.f1_score``."""
    return fbeta_score(
        y_true,
        y_pred,
        beta=1.0,
        labels=labels,
        pos_label=pos_label,
        average=average,
        sample_weight=sample_weight,
        zero_division=zero_division,
        split_every=split_every,
    )


def precision_score(
    y_true,
    y_pred,
    *,
    labels=None,
    pos_label=1,
    average="binary",
    sample_weight=None,
    zero_division="warn",
    split_every=8,
):
    """Precision ``tp / (tp + fp)``; see ``sklearn.metrics.precision_score``."""
    p, _, _, _ = precision_recall_fscore_support(
        y_true,
        y_pred,
        labels=labels,
        pos_label=pos_label,
        average=average,
        warn_for=("precision",),
        sample_weight=sample_weight,
        zero_division=zero_division,
        split_every=split_every,
    )
    return p


def recall_score(
    y_true,
    y_pred,
    *,
    labels=None,
    pos_label=1,
    average="binary",
    sample_weight=None,
    zero_division="warn",
    split_every=8,
):
    """Recall ``tp / (tp + fn)``; see ``sklearn.metrics.recall_score``."""
    _, r, _, _ = precision_recall_fscore_support(
        y_true,
        y_pred,
        labels=labels,
        pos_label=pos_label,
        average=average,
        warn_for=("recall",),
        sample_weight=sample_weight,
        zero_division=zero_division,
        split_every=split_every,
    )
    return r


def classification_summary(
    y_true,
    y_pred,
    *,
    labels=None,
    target_names=None,
    sample_weight=None,
    zero_division="warn",
    split_every=8,
):
    """Per-class precision, recall, F1 and support, accuracy and averages, as a dict.

    Exactly ``sklearn.metrics.classification_report(..., output_dict=True)``:
    ``{"<label>": {"precision", "recall", "f1-score", "support"}, "accuracy": float,
    "macro avg": {...}, "weighted avg": {...}}`` (``"micro avg"`` replaces ``"accuracy"`` when
    ``labels`` leaves some classes out).
    """
    s = _pair_summary(y_true, y_pred, sample_weight, split_every)
    return skm.classification_report(
        s.first,
        s.second,
        labels=labels,
        target_names=target_names,
        sample_weight=s.weight,
        output_dict=True,
        zero_division=zero_division,
    )


# --------------------------------------------------------------------------------------------
# Classification: ranking metrics (binary)
# --------------------------------------------------------------------------------------------


def roc_curve(
    y_true,
    y_score,
    *,
    pos_label=None,
    sample_weight=None,
    drop_intermediate=True,
    max_bins=None,
    score_range=(0.0, 1.0),
    split_every=8,
):
    """Receiver operating characteristic ``(fpr, tpr, thresholds)``, binary ``y_true`` only.

    Exact by default: the same arrays as ``sklearn.metrics.roc_curve`` on the concatenated data
    (ties included). The merged partial holds one entry per distinct (class, score) pair.

    ``max_bins=B`` bins the scores instead: ``B`` equal bins over ``score_range`` (scores outside
    fall into the end bins), so partials have at most ``2 * B`` entries whatever the data size.
    Every returned point is then a point of the exact curve (each threshold is the smallest
    score of an occupied bin, and ``score >= threshold`` selects exactly the bins from it up);
    only the points inside a bin are missing. Between consecutive points ``fpr`` moves by at
    most ``max_b neg_b / N`` and ``tpr`` by at most ``max_b pos_b / P`` (``pos_b``, ``neg_b``:
    positive and negative weight in bin ``b``), about ``1 / B`` for scores spread over the
    range; see :func:`roc_auc_score` for the AUC bound.
    """
    first, score, weight = _score_summary(
        y_true, y_score, sample_weight, max_bins, score_range, split_every
    )
    return skm.roc_curve(
        first,
        score,
        pos_label=pos_label,
        sample_weight=weight,
        drop_intermediate=drop_intermediate,
    )


def precision_recall_curve(
    y_true,
    y_score,
    *,
    pos_label=None,
    sample_weight=None,
    drop_intermediate=False,
    max_bins=None,
    score_range=(0.0, 1.0),
    split_every=8,
):
    """Precision-recall pairs ``(precision, recall, thresholds)``, binary ``y_true`` only.

    Exact by default (the arrays of ``sklearn.metrics.precision_recall_curve``). With
    ``max_bins=B`` every returned point is a point of the exact curve, thresholds at the
    smallest score of each occupied bin; between consecutive points recall moves by at most
    ``max_b pos_b / P`` (see :func:`roc_curve`).
    """
    first, score, weight = _score_summary(
        y_true, y_score, sample_weight, max_bins, score_range, split_every
    )
    return skm.precision_recall_curve(
        first,
        score,
        pos_label=pos_label,
        sample_weight=weight,
        drop_intermediate=drop_intermediate,
    )


def roc_auc_score(
    y_true,
    y_score,
    *,
    average="macro",
    sample_weight=None,
    max_fpr=None,
    multi_class="raise",
    labels=None,
    max_bins=None,
    score_range=(0.0, 1.0),
    split_every=8,
):
    """Area under the ROC curve for binary ``y_true`` and 1-D ``y_score`` (exact, ties as in
    sklearn: the trapezoid through the distinct-threshold points counts a tied positive and
    negative pair as one half). The positive class is the larger label, as in sklearn.

    With ``max_bins=B`` (see :func:`roc_curve`) pairs inside one bin count as ties, so
    ``|AUC_binned - AUC| <= 1/2 * sum_b pos_b * neg_b / (P * N) <= 1/2 * max_b neg_b / N``.

    Multi-class ``y_score`` is out of scope and raises ``NotImplementedError``: compute the
    one-vs-rest AUCs instead, ``roc_auc_score(y_true == c, y_score[:, j])`` for class ``c`` in
    column ``j``, and average them (sklearn's ``multi_class="ovr", average="macro"``).
    """
    if multi_class != "raise" or np.ndim(y_score) == 2:
        raise NotImplementedError(_MULTICLASS_AUC)
    first, score, weight = _score_summary(
        y_true, y_score, sample_weight, max_bins, score_range, split_every
    )
    if np.unique(first).shape[0] > 2:
        raise NotImplementedError(_MULTICLASS_AUC)
    return skm.roc_auc_score(
        first, score, average=average, sample_weight=weight, max_fpr=max_fpr, labels=labels
    )


def average_precision_score(
    y_true, y_score, *, average="macro", pos_label=1, sample_weight=None, split_every=8
):
    """Average precision (area under the precision-recall step curve, as sklearn defines it:
    ``sum_n (R_n - R_{n-1}) P_n``), binary ``y_true`` and 1-D ``y_score``, exact."""
    if np.ndim(y_score) == 2:
        raise NotImplementedError(
            "average_precision_score here takes binary y_true and a 1-D y_score; for several "
            "classes compute average_precision_score(y_true == c, y_score[:, j]) per class."
        )
    first, score, weight = _score_summary(y_true, y_score, sample_weight, None, None, split_every)
    return skm.average_precision_score(
        first, score, average=average, pos_label=pos_label, sample_weight=weight
    )


_MULTICLASS_AUC = (
    "roc_auc_score here is binary only (1-D y_score, two classes). For several classes compute "
    "the one-vs-rest AUCs, roc_auc_score(y_true == c, y_score[:, j]) for class c in column j, "
    "and average them (sklearn's multi_class='ovr', average='macro')."
)


# --------------------------------------------------------------------------------------------
# Probabilistic and regression metrics
# --------------------------------------------------------------------------------------------


def log_loss(y_true, y_proba, *, normalize=True, sample_weight=None, labels=None, split_every=8):
    """Cross-entropy of ``y_proba`` (``(n, n_classes)``, or 1-D probabilities of the larger
    class) against ``y_true``; probabilities are clipped to ``[eps, 1 - eps]`` with ``eps`` the
    machine epsilon of their float dtype, as sklearn >= 1.5 does.

    Columns follow the sorted labels (of ``labels`` if given, else of ``y_true``, discovered in
    the same pass). Each partition sums ``-log p[:, j]`` per (label, column) so the column of
    each label is picked only at the end. See ``sklearn.metrics.log_loss``.
    """
    pieces = _partition_pieces(y_true, y_proba, sample_weight)
    leaves = [dask.delayed(partition_log_loss, pure=True)(i, *p) for i, p in enumerate(pieces)]
    s = _compute(tree_reduce(leaves, combine_log_loss, split_every=split_every))
    if s.n_rows == 0:
        raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required.")
    if s.p_max > 1:
        raise ValueError(f"y_prob contains values greater than 1: {s.p_max}")
    if s.p_min < 0:
        raise ValueError(f"y_prob contains values lower than 0: {s.p_min}")

    present = s.labels
    if labels is not None:
        labels = to_host(labels)  # a CuPy array of labels too (np.asarray refuses it)
        classes = np.unique(labels)
        if classes.shape != labels.shape or not np.all(classes == labels):
            warnings.warn(
                f"Labels passed were {labels}. But this function assumes labels are ordered "
                f"lexicographically. Pass the ordered labels={classes.tolist()} and ensure "
                "that the columns of y_prob correspond to this ordering.",
                UserWarning,
                stacklevel=2,
            )
        undeclared = set(present.tolist()) - set(classes.tolist())
        if undeclared:
            raise ValueError(
                f"y_true contains values {undeclared} not belonging to the passed labels {labels}."
            )
    else:
        classes = present
    if classes.shape[0] == 1:
        if labels is None:
            raise ValueError(
                f"y_true contains only one label ({classes[0]}). Please provide the list of "
                "all expected class labels explicitly through the labels argument."
            )
        raise ValueError(f"The labels array needs to contain at least two labels, got {classes}.")
    if not s.sums_to_one:
        warnings.warn(
            "The y_prob values do not sum to one. Make sure to pass probabilities.",
            UserWarning,
            stacklevel=2,
        )
    if classes.shape[0] != s.n_columns:
        if labels is None:
            raise ValueError(
                f"y_true and y_prob contain different number of classes: {classes.shape[0]} "
                f"vs {s.n_columns}. Please provide the true labels explicitly through the "
                f"labels argument. Classes found in y_true: {classes}"
            )
        raise ValueError(
            "The number of classes in labels is different from that in y_prob. Classes found "
            f"in labels: {classes}"
        )
    column = np.searchsorted(classes, present)
    total = float(np.sum(s.loss[np.arange(present.shape[0]), column]))
    if not normalize:
        return total
    weight = float(np.sum(s.weight))
    if weight == 0:
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")
    return total / weight


_ERRORS = ("raw_values", "uniform_average")  # the multioutput strings of the error metrics


def mean_squared_error(
    y_true, y_pred, *, sample_weight=None, multioutput="uniform_average", split_every=8
):
    """Mean of squared residuals (per output, then averaged per ``multioutput``); see
    ``sklearn.metrics.mean_squared_error``."""
    s = _regression_summary(y_true, y_pred, sample_weight, split_every, multioutput, _ERRORS)
    return _average_outputs(s.sse / _total_weight(s), multioutput)


def root_mean_squared_error(
    y_true, y_pred, *, sample_weight=None, multioutput="uniform_average", split_every=8
):
    """Square root of the mean squared error, per output then averaged; see
    ``sklearn.metrics.root_mean_squared_error``."""
    s = _regression_summary(y_true, y_pred, sample_weight, split_every, "raw_values", _ERRORS)
    return _average_outputs(np.sqrt(s.sse / _total_weight(s)), multioutput)


def mean_absolute_error(
    y_true, y_pred, *, sample_weight=None, multioutput="uniform_average", split_every=8
):
    """Mean of absolute residuals; see ``sklearn.metrics.mean_absolute_error``."""
    s = _regression_summary(y_true, y_pred, sample_weight, split_every, multioutput, _ERRORS)
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
    s = _regression_summary(
        y_true, y_pred, sample_weight, split_every, multioutput, (*_ERRORS, "variance_weighted")
    )
    if s.n_rows < 2:
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


# --------------------------------------------------------------------------------------------
# Partials (run on workers; named for the dashboard)
# --------------------------------------------------------------------------------------------


class PairSummary(NamedTuple):
    """Distinct ``(first, second)`` value pairs and their summed weights (host arrays)."""

    first: np.ndarray
    second: np.ndarray
    weight: np.ndarray  # int64 counts, or summed sample weights


class BinnedScores(NamedTuple):
    """Pairs of (class, score bin) with weights, and the smallest score seen in each bin."""

    pairs: PairSummary
    bins: np.ndarray
    minima: np.ndarray


class LogLossPartial(NamedTuple):
    labels: np.ndarray  # distinct y_true values, sorted
    weight: np.ndarray  # (n_labels,) weight of each label
    loss: np.ndarray  # (n_labels, n_columns): sum of w * -log(clip(p[:, j])) over the label's rows
    n_rows: int
    n_columns: int
    p_min: float
    p_max: float
    sums_to_one: bool


class RegressionPartial(NamedTuple):
    n_rows: int
    weight: float  # sum of sample weights (n_rows without them)
    mean: np.ndarray  # (n_outputs,) weighted mean of y_true
    m2: np.ndarray  # (n_outputs,) sum of w * (y_true - mean)**2
    sse: np.ndarray  # (n_outputs,) sum of w * (y_true - y_pred)**2
    sae: np.ndarray  # (n_outputs,) sum of w * |y_true - y_pred|


def partition_pairs(i, y_true, y_other, weight, other="y_pred"):
    """Partial of the classification metrics: distinct ``(y_true, y_pred)`` (or, with
    ``other="y_score"``, ``(y_true, y_score)``) pairs of one partition and their weights."""
    t = _labels_1d(i, "y_true", _as_array(y_true))
    o = _vector(i, other, _as_array(y_other))
    if other == "y_pred":
        o = _labels_1d(i, other, o)
    w = _weights(i, weight)
    _check_lengths(i, y_true=t, **{other: o}, sample_weight=w)
    return _pairs(*on_one_device(t, o, w))


def combine_pairs(parts):
    """Merge label-pair summaries: concatenate, then add the weights of equal pairs."""
    return _pairs(*(np.concatenate([getattr(p, f) for p in parts]) for f in PairSummary._fields))


def partition_binned_scores(i, y_true, y_score, weight, n_bins, lo, hi):
    """Partial of the binned ranking metrics: (class, bin) weights and per-bin minimum score."""
    t = _labels_1d(i, "y_true", _as_array(y_true))
    s = _vector(i, "y_score", _as_array(y_score))
    w = _weights(i, weight)
    _check_lengths(i, y_true=t, y_score=s, sample_weight=w)
    t, s, w = on_one_device(t, s, w)
    xp = namespace(s)
    s = xp.astype(s, xp.float64)
    if bool(xp.any(xp.isnan(s))):
        raise ValueError(f"partition {i}: y_score contains NaN")
    pairs = _pairs(t, _score_bins(s, n_bins, lo, hi), w)
    # the bin of a score is non-decreasing in the score: sorted scores give sorted bins
    s = xp.sort(s)
    bins, minima = _first_of_runs(_score_bins(s, n_bins, lo, hi), s)
    return BinnedScores(pairs, bins, minima)


def combine_binned_scores(parts):
    """Add the (class, bin) weights; keep the smallest score of each bin."""
    pairs = combine_pairs([p.pairs for p in parts])
    bins = np.concatenate([p.bins for p in parts])
    minima = np.concatenate([p.minima for p in parts])
    order = np.lexsort((minima, bins))
    bins, minima = _first_of_runs(bins[order], minima[order])
    return BinnedScores(pairs, bins, minima)


def partition_log_loss(i, y_true, y_proba, weight):
    """Partial of log_loss: per (label, column) sums of ``w * -log(clip(p))``."""
    t = _labels_1d(i, "y_true", _as_array(y_true))
    p = _as_array(y_proba)
    w = _weights(i, weight)
    t, p, w = on_one_device(t, p, w)
    xp = namespace(p)
    if not xp.isdtype(p.dtype, "real floating"):
        p = xp.astype(p, xp.float64)
    if p.ndim == 1:
        p = xp.reshape(p, (-1, 1))
    if p.ndim != 2:
        raise ValueError(f"partition {i}: y_proba must be 1-D or 2-D, got {p.ndim} dimensions")
    _check_lengths(i, y_true=t, y_proba=p, sample_weight=w)
    n = p.shape[0]
    if bool(xp.any(xp.isnan(p))):
        raise ValueError(f"partition {i}: y_proba contains NaN")
    p_min = float(xp.min(p)) if n else math.inf
    p_max = float(xp.max(p)) if n else -math.inf
    if p.shape[1] == 1:
        p = xp.concat([1 - p, p], axis=1)
    eps = float(xp.finfo(p.dtype).eps)
    row_sum = xp.sum(p, axis=1)
    sums_to_one = bool(xp.all(xp.abs(row_sum - 1) <= 1e-8 + math.sqrt(eps)))
    neg_log = xp.astype(-xp.log(xp.clip(p, eps, 1 - eps)), xp.float64)

    labels, inverse = _unique_inverse(t)
    n_labels = labels.shape[0]
    dev_labels = xp.arange(n_labels, device=device(p))
    one_hot = xp.astype(xp.reshape(inverse, (-1, 1)) == dev_labels, xp.float64)
    if w is not None:
        w64 = xp.astype(w, xp.float64)
        label_weight = xp.sum(one_hot * xp.reshape(w64, (-1, 1)), axis=0)
        neg_log = neg_log * xp.reshape(w64, (-1, 1))
    else:
        label_weight = xp.sum(one_hot, axis=0)
    loss = xp.matmul(xp.permute_dims(one_hot, (1, 0)), neg_log)
    return LogLossPartial(
        labels=to_host(labels),
        weight=to_host(label_weight),
        loss=to_host(loss),
        n_rows=n,
        n_columns=p.shape[1],
        p_min=p_min,
        p_max=p_max,
        sums_to_one=sums_to_one,
    )


def combine_log_loss(parts):
    """Add the per-(label, column) sums of equal labels."""
    columns = {p.n_columns for p in parts}
    if len(columns) > 1:
        raise ValueError(f"y_proba partitions have different numbers of columns: {columns}")
    (n_columns,) = columns
    labels, inverse = np.unique_inverse(np.concatenate([p.labels for p in parts]))
    weight = np.zeros(labels.shape[0])
    loss = np.zeros((labels.shape[0], n_columns))
    np.add.at(weight, inverse, np.concatenate([p.weight for p in parts]))
    np.add.at(loss, inverse, np.concatenate([p.loss for p in parts]))
    return LogLossPartial(
        labels=labels,
        weight=weight,
        loss=loss,
        n_rows=sum(p.n_rows for p in parts),
        n_columns=n_columns,
        p_min=min(p.p_min for p in parts),
        p_max=max(p.p_max for p in parts),
        sums_to_one=all(p.sums_to_one for p in parts),
    )


def partition_regression(i, y_true, y_pred, weight):
    """Partial of the regression metrics: weighted count/mean/M2 of y_true, residual sums."""
    t, p, w = on_one_device(_as_array(y_true), _as_array(y_pred), _weights(i, weight))
    xp = namespace(t, p)
    t = _outputs_2d(i, "y_true", xp.astype(t, xp.float64))
    p = _outputs_2d(i, "y_pred", xp.astype(p, xp.float64))
    _check_lengths(i, y_true=t, y_pred=p, sample_weight=w)
    if t.shape[1] != p.shape[1]:
        raise ValueError(
            f"y_true and y_pred have different number of output ({t.shape[1]}!={p.shape[1]})"
        )
    n, k = t.shape
    if w is None:
        w = xp.ones((n, 1), dtype=xp.float64, device=device(t))
    else:
        w = xp.reshape(xp.astype(w, xp.float64), (-1, 1))
    total = float(xp.sum(w))
    mean = xp.zeros(k, dtype=xp.float64, device=device(t))
    if total:
        # shifted by the first row: a constant target gets exactly M2 = 0, and less cancellation
        shift = t[0, :]
        mean = shift + xp.sum(w * (t - shift), axis=0) / total
    residual = t - p
    return RegressionPartial(
        n_rows=n,
        weight=total,
        mean=to_host(mean),
        m2=to_host(xp.sum(w * (t - mean) ** 2, axis=0)),
        sse=to_host(xp.sum(w * residual**2, axis=0)),
        sae=to_host(xp.sum(w * xp.abs(residual), axis=0)),
    )


def combine_regression(parts):
    """Chan et al.'s pairwise merge of (weight, mean, M2), folded in position order."""
    out = parts[0]
    for b in parts[1:]:
        a = out
        if a.mean.shape != b.mean.shape:
            raise ValueError(
                f"partitions have different numbers of outputs: {a.mean.size} vs {b.mean.size}"
            )
        total = a.weight + b.weight
        delta = b.mean - a.mean
        if total == 0:
            mean, m2 = a.mean, a.m2 + b.m2
        else:
            mean = a.mean + delta * (b.weight / total)
            m2 = a.m2 + b.m2 + delta**2 * (a.weight * b.weight / total)
        out = RegressionPartial(
            n_rows=a.n_rows + b.n_rows,
            weight=total,
            mean=mean,
            m2=m2,
            sse=a.sse + b.sse,
            sae=a.sae + b.sae,
        )
    return out


# --------------------------------------------------------------------------------------------
# Building the graph
# --------------------------------------------------------------------------------------------


def _compute(root):
    (result,) = dask.compute(root)
    return result


def _pair_summary(y_true, y_pred, sample_weight, split_every) -> PairSummary:
    pieces = _partition_pieces(y_true, y_pred, sample_weight)
    leaves = [dask.delayed(partition_pairs, pure=True)(i, *p) for i, p in enumerate(pieces)]
    return _compute(tree_reduce(leaves, combine_pairs, split_every=split_every))


def _score_summary(y_true, y_score, sample_weight, max_bins, score_range, split_every):
    """(y_true, score, weight) host arrays of a weighted sample with the same curves as the
    data: exact distinct pairs, or pairs of (class, bin) scored at the bin's smallest score."""
    if np.ndim(y_score) == 2:
        raise NotImplementedError(_MULTICLASS_AUC)
    pieces = _partition_pieces(y_true, y_score, sample_weight)
    if max_bins is None:
        leaves = [
            dask.delayed(partition_pairs, pure=True)(i, *p, "y_score") for i, p in enumerate(pieces)
        ]
        s = _compute(tree_reduce(leaves, combine_pairs, split_every=split_every))
        return s.first, s.second, s.weight
    n_bins = int(max_bins)
    lo, hi = (float(v) for v in score_range)
    if n_bins < 1 or not hi > lo:
        raise ValueError(
            f"need max_bins >= 1 and score_range lo < hi, got {max_bins}, {score_range}"
        )
    leaves = [
        dask.delayed(partition_binned_scores, pure=True)(i, *p, n_bins, lo, hi)
        for i, p in enumerate(pieces)
    ]
    s = _compute(tree_reduce(leaves, combine_binned_scores, split_every=split_every))
    score = s.minima[np.searchsorted(s.bins, s.pairs.second)]
    return s.pairs.first, score, s.pairs.weight


def _regression_summary(
    y_true, y_pred, sample_weight, split_every, multioutput, allowed
) -> RegressionPartial:
    """Reduced regression partial, with sklearn's checks of its size and of ``multioutput``."""
    pieces = _partition_pieces(y_true, y_pred, sample_weight)
    leaves = [dask.delayed(partition_regression, pure=True)(i, *p) for i, p in enumerate(pieces)]
    s = _compute(tree_reduce(leaves, combine_regression, split_every=split_every))
    if s.n_rows == 0:
        raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required.")
    n_outputs = s.mean.size
    if isinstance(multioutput, str):
        if multioutput not in allowed:
            raise ValueError(
                f"Allowed 'multioutput' string values are {allowed}. "
                f"You provided multioutput={multioutput!r}"
            )
    elif multioutput is not None:
        if n_outputs == 1:
            raise ValueError("Custom weights are useful only in multi-output cases.")
        if np.shape(multioutput) != (n_outputs,):
            raise ValueError(
                f"There must be equally many custom weights ({np.shape(multioutput)[0]}) as "
                f"outputs ({n_outputs})."
            )
    return s


def _partition_pieces(*columns) -> list[tuple]:
    """Row-aligned pieces of ``columns`` (``None`` stays ``None``): one tuple per partition.

    The first Dask collection sets the partitioning. Without one, the inputs form a single
    in-memory partition.
    """
    ref = next((c for c in columns if is_dask_collection(c)), None)
    if ref is None:
        return [tuple(_in_memory(c) for c in columns)]
    if isinstance(ref, da.Array):
        n_parts = ref.numblocks[0]
        rows = ref.chunks[0] if not any(math.isnan(c) for c in ref.chunks[0]) else None
    else:
        n_parts, rows = ref.npartitions, None
    ref_pieces = _collection_pieces(ref, n_parts, rows)
    lengths = None
    out = []
    for c in columns:
        if c is None:
            out.append([None] * n_parts)
        elif c is ref:
            out.append(ref_pieces)
        elif is_dask_collection(c):
            out.append(_collection_pieces(c, n_parts, rows))
        elif rows is not None:
            arr = _in_memory(c)
            _check_n_samples(sum(rows), arr.shape[0])
            chunks = (rows, *((s,) for s in arr.shape[1:]))
            out.append(list(da.from_array(arr, chunks=chunks).to_delayed().ravel()))
        else:
            # partition lengths are known only once computed: slice inside the graph
            if lengths is None:
                lengths = [dask.delayed(len, pure=True)(p) for p in ref_pieces]
            data = dask.delayed(_in_memory(c), pure=True)
            out.append(
                [dask.delayed(_rows_of, pure=True)(data, lengths, i) for i in range(n_parts)]
            )
    return list(zip(*out, strict=True))


def _collection_pieces(c, n_parts: int, rows) -> list:
    if isinstance(c, da.Array):
        if c.ndim > 2:
            raise ValueError(f"expected a 1-D or 2-D array, got shape {c.shape}")
        if c.ndim == 2 and c.numblocks[1] > 1:
            c = c.rechunk({1: -1})
        known = not any(math.isnan(n) for n in c.chunks[0])
        if rows is not None and known and c.chunks[0] != rows:
            _check_n_samples(sum(rows), c.shape[0])
            c = c.rechunk({0: rows})
        if c.numblocks[0] != n_parts:
            raise ValueError(
                f"inputs have {n_parts} and {c.numblocks[0]} partitions; align them (e.g. "
                "rechunk arrays to y_true's chunks, or compute chunk sizes with "
                "to_dask_array(lengths=True))"
            )
        return list(c.to_delayed().ravel())
    if c.npartitions != n_parts:
        raise ValueError(
            f"inputs have {n_parts} and {c.npartitions} partitions; repartition them alike"
        )
    return list(c.to_delayed())


def _check_n_samples(a: int, b: int) -> None:
    if a != b:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: [{a}, {b}]")


def _rows_of(data, lengths: Sequence[int], i: int):
    """Rows of in-memory ``data`` matching partition ``i`` of the reference collection."""
    _check_n_samples(sum(lengths), data.shape[0])
    start = sum(lengths[:i])
    return data[start : start + lengths[i]]


def _in_memory(c):
    if c is None or hasattr(c, "__array_namespace__"):
        return c
    if is_cudf(c):  # CuPy, or host values for strings (sliced and chunked like arrays)
        return values_of(c)
    if hasattr(c, "to_numpy"):  # pandas Series/DataFrame
        return c.to_numpy()
    return np.asarray(c)


# --------------------------------------------------------------------------------------------
# Array helpers (device-agnostic; small results cross to the host)
# --------------------------------------------------------------------------------------------


def _as_array(piece):
    if piece is None:
        return None
    if is_cudf(piece):  # CuPy; strings and nulls (which .values refuses) on the host
        return values_of(piece)
    if hasattr(piece, "to_numpy") and not hasattr(piece, "__array_namespace__"):
        return piece.to_numpy()
    return piece


def _is_continuous(x) -> bool:
    """Floats that are not all integers (sklearn's "continuous" target type)."""
    if getattr(x.dtype, "kind", "f") in "OUSbiu":  # NumPy/CuPy labels, no float check needed
        return False
    xp = namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        return False
    finite = x[xp.isfinite(x)]
    return not bool(xp.all(finite == xp.floor(finite)))


def _labels_1d(i, name, x):
    x = _vector(i, name, x)
    if _is_continuous(x):
        raise ValueError(
            f"partition {i}: {name} holds non-integer floats (a continuous target); "
            "classification metrics need class labels"
        )
    return x


def _vector(i, name, x):
    if x.ndim == 2 and x.shape[1] == 1:
        return namespace(x).reshape(x, (-1,))
    if x.ndim != 1:
        raise ValueError(
            f"partition {i}: {name} must be 1-D (multilabel/multi-output targets are not "
            f"supported here), got shape {tuple(x.shape)}"
        )
    return x


def _outputs_2d(i, name, x):
    if x.ndim == 1:
        return namespace(x).reshape(x, (-1, 1))
    if x.ndim != 2:
        raise ValueError(f"partition {i}: {name} must be 1-D or 2-D, got shape {x.shape}")
    return x


def _weights(i, weight):
    if weight is None:
        return None
    return _vector(i, "sample_weight", _as_array(weight))


def _check_lengths(i, **arrays):
    lengths = {k: v.shape[0] for k, v in arrays.items() if v is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"partition {i}: inputs have different lengths {lengths}; align their partitions"
        )


def _unique_inverse(x):
    xp = namespace(x)
    values, inverse = xp.unique_inverse(x)
    return values, xp.reshape(inverse, (-1,))


def _group_sum(keys, weights):
    """Distinct ``keys`` (host) and the count (``weights is None``) or weight sum of each."""
    xp = namespace(keys)
    if weights is None:
        values, counts = xp.unique_counts(keys)
        return to_host(values), to_host(counts).astype(np.int64)
    integer = xp.isdtype(weights.dtype, "integral")
    values, inverse = _unique_inverse(keys)
    bincount = getattr(xp, "bincount", None)
    if bincount is None:  # namespaces without a scatter-add: sum on the host
        inverse, weights, bincount = to_host(inverse), to_host(weights), np.bincount
    sums = to_host(bincount(inverse, weights=weights, minlength=values.shape[0]))
    if integer:
        sums = np.rint(sums).astype(np.int64)  # integer weights: exact below 2**53
    return to_host(values), sums


def _pairs(first, second, weight) -> PairSummary:
    """Distinct (first, second) pairs and their summed weights, computed on first's device."""
    xp = namespace(second)
    u1, i1 = _unique_inverse(first)
    u2, i2 = _unique_inverse(second)
    n2 = u2.shape[0]
    code = xp.astype(i1, xp.int64) * n2 + xp.astype(i2, xp.int64)
    codes, sums = _group_sum(code, weight)
    u1, u2 = to_host(u1), to_host(u2)
    return PairSummary(u1[codes // max(n2, 1)], u2[codes % max(n2, 1)], sums)


def _score_bins(s, n_bins: int, lo: float, hi: float):
    xp = namespace(s)
    b = xp.floor((s - lo) * (n_bins / (hi - lo)))
    return xp.astype(xp.clip(b, 0, n_bins - 1), xp.int64)


def _first_of_runs(keys, values):
    """For sorted ``keys``: each distinct key and the ``values`` entry at its first position."""
    xp = namespace(keys)
    if keys.shape[0] == 0:
        return to_host(keys), to_host(values)
    starts = xp.concat([xp.ones(1, dtype=xp.bool, device=device(keys)), keys[1:] != keys[:-1]])
    index = xp.nonzero(starts)[0]
    return to_host(xp.take(keys, index)), to_host(xp.take(values, index))


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
