"""The tabular estimators' worker-side functions, run in tasks on the workers: per-block
statistics for the loss (:func:`_block_stats`), the finishing pass that standardises the
regression target and moves row weights into ``Y`` (:func:`_finish_block`), stripping weights
from validation blocks, the per-partition forward pass, and the label helpers mapped over
prediction chunks. No scikit-learn import: a worker running these needs numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import to_host
from .blocks import Block
from .tabular_partition import transform_partition


def _block_stats(block: Block, weighted: bool, n_classes: int | None) -> np.ndarray:
    """Per block, float64: classification ``[count_c..., Σw_c...]`` per class; regression
    ``[n, Σy, Σy², Σw]``. ``w`` is the trailing feature column when ``weighted``, else 1."""
    X, Y = to_host(block.X).astype(np.float64), to_host(block.Y).astype(np.float64)
    w = X[:, -1] if weighted else np.ones(X.shape[0])
    if n_classes is None:
        y = Y[:, 0]
        return np.array([len(y), y.sum(), (y * y).sum(), w.sum()])
    idx = _class_index(Y)
    return np.concatenate([np.bincount(idx, minlength=n_classes).astype(np.float64),
                           np.bincount(idx, weights=w, minlength=n_classes)])


def _class_index(Y: np.ndarray) -> np.ndarray:
    return (Y[:, 0] > 0.5).astype(np.int64) if Y.shape[1] == 1 else np.argmax(Y, axis=1)


def _finish_block(block: Block, weighted: bool, class_weights: np.ndarray | None,
                  weight_scale: float, target: tuple[float, float] | None) -> Block:
    """Standardise the regression target; move the row weights (sample weight x class weight /
    mean) from X's trailing column to Y's (only when some weighting is asked for)."""
    X, Y = block
    xp_host = isinstance(X, np.ndarray)
    Xh, Yh = to_host(X), to_host(Y)
    if target is not None:
        Yh = ((Yh.astype(np.float64) - target[0]) / target[1]).astype(Yh.dtype)
    if weighted or class_weights is not None:
        w = Xh[:, -1].astype(np.float64) if weighted else np.ones(Xh.shape[0])
        if weighted:
            Xh = Xh[:, :-1]
        if class_weights is not None:
            w = w * class_weights[_class_index(Yh)]
        Yh = np.concatenate([Yh, (w / weight_scale).astype(Yh.dtype)[:, None]], axis=1)
    X2, Y2 = np.ascontiguousarray(Xh), np.ascontiguousarray(Yh)
    if not xp_host:  # back to the block's device
        from .backend import to_device_of

        X2, Y2 = to_device_of(X2, X), to_device_of(Y2, X)
    return Block(X2, Y2)


def _strip_weights(block: Block, n_outputs: int) -> Block:
    return Block(block.X, block.Y[:, :n_outputs])


def _forward_partition(part: Any, plan: Any, model: Any, params: np.ndarray) -> np.ndarray:
    """Preprocess one raw partition and return the ensemble's mean output ``(n, n_outputs)``."""
    X = transform_partition(part, plan)
    if X.shape[0] == 0:
        return np.zeros((0, model.n_outputs), dtype=np.float32)
    return to_host(model.forward(params, X))


def _binary_proba(p: np.ndarray) -> np.ndarray:
    return np.concatenate([1.0 - p, p], axis=1)


def _take_labels(idx: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return classes[idx]
