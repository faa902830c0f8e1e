"""Batch scoring output: predictions as a table, with chosen input columns carried alongside.

Scoring a table loses row identity unless something ties each prediction to its row: an id, a
timestamp. :func:`with_columns` puts the chosen input columns next to the predictions,
partition by partition (the predictions of partition ``i`` are computed from partition ``i``
of the same data, row for row), lazily for dask input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["output_names", "with_columns"]


def output_names(predictions: Any, classes: Any = None, proba: bool = False) -> list[str]:
    """Column names of the predictions: ``prediction`` (``prediction_<i>`` for several
    outputs), or ``proba_<class>`` for class probabilities."""
    if proba:
        return [f"proba_{c}" for c in classes]
    if predictions.ndim == 1 or predictions.shape[1] == 1:
        return ["prediction"]
    return [f"prediction_{i}" for i in range(predictions.shape[1])]


def _check(df: Any, keep: Sequence[str], names: Sequence[str]) -> list[str]:
    keep = [keep] if isinstance(keep, str) else list(keep)
    columns = [str(c) for c in df.columns]
    missing = [c for c in keep if c not in columns]
    if missing:
        raise ValueError(f"column(s) {missing} to keep are not in the data; available columns: "
                         f"{columns}")
    clash = [c for c in keep if c in names]
    if clash:
        raise ValueError(f"column(s) {clash} to keep clash with the prediction column names")
    return keep


def _join(part: pd.DataFrame, pred: Any, names: list[str]) -> pd.DataFrame:
    pred = np.asarray(pred)
    if pred.ndim == 1:
        pred = pred[:, None]
    if len(pred) != len(part):
        raise ValueError(f"a partition has {len(part)} rows but {len(pred)} predictions")
    out = part.copy()
    for j, name in enumerate(names):
        out[name] = pred[:, j]
    return out


def with_columns(df: Any, keep: Sequence[str] | str, predictions: Any,
                 names: Sequence[str]) -> Any:
    """``df[keep]`` with the ``predictions`` (one row per row of ``df``) as columns ``names``.

    Parameters
    ----------
    df : dask or pandas DataFrame
        The data that was scored (before preprocessing), in the same row order.
    keep : str or sequence of str
        Columns of ``df`` to carry through (e.g. an id, a timestamp).
    predictions : dask Array (from ``df``, one chunk per partition) or array
        ``(n,)`` or ``(n, k)``.
    names : sequence of str
        One name per prediction column.

    Returns
    -------
    dask DataFrame (lazy, same partitions as ``df``) or pandas DataFrame
    """
    names = list(names)
    keep = _check(df, keep, names)
    if isinstance(df, pd.DataFrame):
        return _join(df[keep], predictions, names)
    import dask.dataframe as dd

    left = df[keep]
    right = dd.from_dask_array(predictions[:, None] if predictions.ndim == 1 else predictions,
                               columns=names)
    if left.npartitions != right.npartitions:
        raise ValueError(f"the predictions have {right.npartitions} partitions but the data has "
                         f"{left.npartitions}: they must be computed from the same partitions")
    meta = _join(left._meta, np.zeros((0, len(names)), dtype=right._meta.dtypes.iloc[0]), names)
    return left.map_partitions(_join_frames, right, names, meta=meta, align_dataframes=False)


def _join_frames(part: pd.DataFrame, pred: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    return _join(part, pred.to_numpy(), names)
