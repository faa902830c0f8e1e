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

Where things are: this module holds the confusion-matrix metrics and ``log_loss`` and
re-exports the rest, so every metric is ``analytics.metrics.<name>``:
:mod:`analytics.ranking_metrics` (curves, AUC, average precision),
:mod:`analytics.regression_metrics`, :mod:`analytics.metric_partials` (the per-partition partials
and their merges) and :mod:`analytics.metric_graph` (inputs → pieces → one reduction).

Example
-------
>>> import dask.array as da
>>> y_true = da.from_array([0, 1, 1, 0, 1], chunks=2)
>>> y_pred = da.from_array([0, 1, 0, 0, 1], chunks=3)
>>> accuracy_score(y_true, y_pred)
0.8
"""

from __future__ import annotations

import warnings

import dask
import numpy as np

from pipeline.backend import to_host
from pipeline.reduce import tree_reduce

from .metric_graph import compute, pair_summary, partition_pieces

# Also the partials and their merges, importable from here as before they had a module.
from .metric_partials import (  # noqa: F401
    BinnedScores,
    LogLossPartial,
    PairSummary,
    RegressionPartial,
    combine_binned_scores,
    combine_log_loss,
    combine_pairs,
    combine_regression,
    partition_binned_scores,
    partition_log_loss,
    partition_pairs,
    partition_regression,
)
from .ranking_metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)
from .regression_metrics import (
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    root_mean_squared_error,
)

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
    s = pair_summary(y_true, y_pred, sample_weight, split_every)
    import sklearn.metrics as skm  # here, not at the top: workers import this package
    return skm.accuracy_score(s.first, s.second, normalize=normalize, sample_weight=s.weight)


def confusion_matrix(
    y_true, y_pred, *, labels=None, sample_weight=None, normalize=None, split_every=8
):
    """Confusion matrix ``C[i, j]`` = weight of samples of class ``labels[i]`` predicted as
    ``labels[j]``; labels are the sorted union of ``y_true`` and ``y_pred`` unless given.

    See ``sklearn.metrics.confusion_matrix``; int64 without ``sample_weight`` or ``normalize``.
    """
    s = pair_summary(y_true, y_pred, sample_weight, split_every)
    import sklearn.metrics as skm  # here, not at the top: workers import this package
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
    s = pair_summary(y_true, y_pred, sample_weight, split_every)
    import sklearn.metrics as skm  # here, not at the top: workers import this package
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
    return _one_score(2, "f-score", y_true, y_pred, beta=beta, labels=labels,
                      pos_label=pos_label, average=average, sample_weight=sample_weight,
                      zero_division=zero_division, split_every=split_every)


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
    return _one_score(0, "precision", y_true, y_pred, labels=labels, pos_label=pos_label,
                      average=average, sample_weight=sample_weight,
                      zero_division=zero_division, split_every=split_every)


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
    return _one_score(1, "recall", y_true, y_pred, labels=labels, pos_label=pos_label,
                      average=average, sample_weight=sample_weight,
                      zero_division=zero_division, split_every=split_every)


def _one_score(index, warn, y_true, y_pred, **kwargs):
    """Entry ``index`` (0 precision, 1 recall, 2 F-beta) of
    :func:`precision_recall_fscore_support`, warning about that score only (as sklearn's
    single-score functions do)."""
    return precision_recall_fscore_support(y_true, y_pred, warn_for=(warn,), **kwargs)[index]


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
    s = pair_summary(y_true, y_pred, sample_weight, split_every)
    import sklearn.metrics as skm  # here, not at the top: workers import this package
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
# Probabilistic metrics
# --------------------------------------------------------------------------------------------


def log_loss(y_true, y_proba, *, normalize=True, sample_weight=None, labels=None, split_every=8):
    """Cross-entropy of ``y_proba`` (``(n, n_classes)``, or 1-D probabilities of the larger
    class) against ``y_true``; probabilities are clipped to ``[eps, 1 - eps]`` with ``eps`` the
    machine epsilon of their float dtype, as sklearn >= 1.5 does.

    Columns follow the sorted labels (of ``labels`` if given, else of ``y_true``, discovered in
    the same pass). Each partition sums ``-log p[:, j]`` per (label, column) so the column of
    each label is picked only at the end. See ``sklearn.metrics.log_loss``.
    """
    pieces = partition_pieces(y_true, y_proba, sample_weight)
    leaves = [dask.delayed(partition_log_loss, pure=True)(i, *p) for i, p in enumerate(pieces)]
    s = compute(tree_reduce(leaves, combine_log_loss, split_every=split_every))
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
