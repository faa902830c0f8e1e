"""From a metric's inputs to its reduced partial: row-aligned pieces of the inputs (Dask Arrays
rechunked to ``y_true``'s rows, Series paired by partition, in-memory inputs sliced inside the
graph), one ``partition_*`` task per piece, a :func:`pipeline.reduce.tree_reduce` of
``combine_*`` and one ``dask.compute`` (:mod:`analytics.metric_partials` holds the partials).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import dask
import numpy as np
from dask.base import is_dask_collection

from pipeline.backend import is_cudf, values_of
from pipeline.reduce import tree_reduce

from .metric_partials import (
    PairSummary,
    RegressionPartial,
    combine_binned_scores,
    combine_pairs,
    combine_regression,
    partition_binned_scores,
    partition_pairs,
    partition_regression,
)

__all__ = [
    "MULTICLASS_AUC",
    "compute",
    "pair_summary",
    "partition_pieces",
    "regression_summary",
    "score_summary",
]

MULTICLASS_AUC = (
    "roc_auc_score here is binary only (1-D y_score, two classes). For several classes compute "
    "the one-vs-rest AUCs, roc_auc_score(y_true == c, y_score[:, j]) for class c in column j, "
    "and average them (sklearn's multi_class='ovr', average='macro')."
)


def compute(root):
    (result,) = dask.compute(root)
    return result


def pair_summary(y_true, y_pred, sample_weight, split_every) -> PairSummary:
    pieces = partition_pieces(y_true, y_pred, sample_weight)
    leaves = [dask.delayed(partition_pairs, pure=True)(i, *p) for i, p in enumerate(pieces)]
    return compute(tree_reduce(leaves, combine_pairs, split_every=split_every))


def score_summary(y_true, y_score, sample_weight, max_bins, score_range, split_every):
    """(y_true, score, weight) host arrays of a weighted sample with the same curves as the
    data: exact distinct pairs, or pairs of (class, bin) scored at the bin's smallest score."""
    if np.ndim(y_score) == 2:
        raise NotImplementedError(MULTICLASS_AUC)
    pieces = partition_pieces(y_true, y_score, sample_weight)
    if max_bins is None:
        leaves = [
            dask.delayed(partition_pairs, pure=True)(i, *p, "y_score") for i, p in enumerate(pieces)
        ]
        s = compute(tree_reduce(leaves, combine_pairs, split_every=split_every))
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
    s = compute(tree_reduce(leaves, combine_binned_scores, split_every=split_every))
    score = s.minima[np.searchsorted(s.bins, s.pairs.second)]
    return s.pairs.first, score, s.pairs.weight


def regression_summary(
    y_true, y_pred, sample_weight, split_every, multioutput, allowed
) -> RegressionPartial:
    """Reduced regression partial, with sklearn's checks of its size and of ``multioutput``."""
    pieces = partition_pieces(y_true, y_pred, sample_weight)
    leaves = [dask.delayed(partition_regression, pure=True)(i, *p) for i, p in enumerate(pieces)]
    s = compute(tree_reduce(leaves, combine_regression, split_every=split_every))
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


def partition_pieces(*columns) -> list[tuple]:
    """Row-aligned pieces of ``columns`` (``None`` stays ``None``): one tuple per partition.

    The first Dask collection sets the partitioning. Without one, the inputs form a single
    in-memory partition.
    """
    ref = next((c for c in columns if is_dask_collection(c)), None)
    if ref is None:
        return [tuple(_in_memory(c) for c in columns)]
    import dask.array as da  # here: on workers dask.array brings sparse and numba
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
    import dask.array as da  # here: on workers dask.array brings sparse and numba
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
