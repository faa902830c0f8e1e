"""The partials of :mod:`analytics.metrics`: what one partition of the inputs contributes to
a metric (``partition_*``, run on the workers, named for the dashboard) and how partials merge
(``combine_*``, the reduction tree's nodes).

Partials are computed on the chunk's own device (NumPy or CuPy, through
:func:`pipeline.backend.namespace`); only the small results cross
:func:`pipeline.backend.to_host`. Errors name the partition at fault.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from pipeline.backend import device, is_cudf, namespace, on_one_device, to_host, values_of

__all__ = [
    "BinnedScores",
    "LogLossPartial",
    "PairSummary",
    "RegressionPartial",
    "combine_binned_scores",
    "combine_log_loss",
    "combine_pairs",
    "combine_regression",
    "partition_binned_scores",
    "partition_log_loss",
    "partition_pairs",
    "partition_regression",
]


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
