"""Ranking metrics of binary scores: :func:`roc_curve`, :func:`precision_recall_curve`,
:func:`roc_auc_score`, :func:`average_precision_score` (exact from the distinct
``(y_true, y_score)`` pairs, or from a fixed histogram of scores with ``max_bins=``; see
:mod:`analytics.metrics`).
"""

from __future__ import annotations

import numpy as np

from .metric_graph import MULTICLASS_AUC, score_summary

__all__ = ["average_precision_score", "precision_recall_curve", "roc_auc_score", "roc_curve"]


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
    first, score, weight = score_summary(
        y_true, y_score, sample_weight, max_bins, score_range, split_every
    )
    import sklearn.metrics as skm  # here, not at the top: workers import this package
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
    first, score, weight = score_summary(
        y_true, y_score, sample_weight, max_bins, score_range, split_every
    )
    import sklearn.metrics as skm  # here, not at the top: workers import this package
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
        raise NotImplementedError(MULTICLASS_AUC)
    first, score, weight = score_summary(
        y_true, y_score, sample_weight, max_bins, score_range, split_every
    )
    if np.unique(first).shape[0] > 2:
        raise NotImplementedError(MULTICLASS_AUC)
    import sklearn.metrics as skm  # here, not at the top: workers import this package
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
    first, score, weight = score_summary(y_true, y_score, sample_weight, None, None, split_every)
    import sklearn.metrics as skm  # here, not at the top: workers import this package
    return skm.average_precision_score(
        first, score, average=average, pos_label=pos_label, sample_weight=weight
    )
