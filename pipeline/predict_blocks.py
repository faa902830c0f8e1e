"""Prediction, partition by partition: the worker functions the estimators map over dask
collections (NumPy or CuPy partitions, pandas or cuDF frames), and the mapping itself.

Each ``*_block`` function takes one partition, the flat parameters and the network spec, and
returns that partition's outputs on the partition's device; :func:`map_partitions` applies one
lazily to a dask Array or DataFrame (eagerly to NumPy/pandas), so prediction never gathers the
data on the client.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import nn
from .backend import device, frame_to_array, namespace, to_device_of, to_host

__all__ = ["as_matrix", "forward_block", "is_dask", "map_partitions", "predict_class_block",
           "predict_proba_block", "predict_value_block"]


def is_dask(obj: Any) -> bool:
    """Whether ``obj`` is a dask collection (Array, DataFrame, Series; dask-cudf too)."""
    return type(obj).__module__.startswith(("dask", "dask_expr", "dask_cudf"))


def as_matrix(part: Any, dtype: Any) -> Any:
    """A partition as a 2-D array of ``dtype`` in its own namespace (frames through
    :func:`~pipeline.backend.frame_to_array`, vectors as one column)."""
    if hasattr(part, "iloc") or hasattr(part, "to_cupy"):
        return frame_to_array(part, dtype=dtype)
    xp = namespace(part)
    arr = xp.astype(xp.asarray(part), getattr(xp, np.dtype(dtype).name))  # the namespace's dtype
    return arr if arr.ndim == 2 else xp.reshape(arr, (-1, 1))


def forward_block(part: Any, params: np.ndarray, spec: nn.MLPSpec, dtype: Any) -> Any:
    """The network's outputs for one partition, ``(rows, outputs)``."""
    X = as_matrix(part, dtype)
    if X.shape[0] == 0:
        xp = namespace(X)
        return xp.zeros((0, spec.layer_sizes[-1]), dtype=X.dtype, device=device(X))
    return nn.forward(spec, params, X)


def predict_proba_block(part: Any, params: np.ndarray, spec: nn.MLPSpec, dtype: Any) -> Any:
    """Class probabilities for one partition (two columns for a binary network)."""
    out = forward_block(part, params, spec, dtype)
    if spec.loss == "binary_log_loss":
        xp = namespace(out)
        return xp.concat([1.0 - out, out], axis=1)
    return out


def predict_class_block(part: Any, params: np.ndarray, spec: nn.MLPSpec, dtype: Any,
                        classes: np.ndarray) -> Any:
    """Predicted labels for one partition (numeric labels stay on the device)."""
    proba = predict_proba_block(part, params, spec, dtype)
    xp = namespace(proba)
    idx = xp.argmax(proba, axis=1)
    if classes.dtype.kind in "biuf" and not xp.__name__.endswith("numpy"):
        return xp.take(to_device_of(classes, idx), idx)  # numeric labels stay on the device
    return classes[to_host(idx)]  # strings (which CuPy cannot hold) come to the host


def predict_value_block(part: Any, params: np.ndarray, spec: nn.MLPSpec, dtype: Any) -> Any:
    """Regression outputs for one partition, ``(rows,)`` for one output."""
    out = forward_block(part, params, spec, dtype)
    return out[:, 0] if out.shape[1] == 1 else out


def map_partitions(X: Any, func: Any, params: np.ndarray, spec: Any, train_dtype: Any,
                   n_out: int | None, dtype: Any, *, n_features: int, estimator: str,
                   **kwargs: Any) -> Any:
    """Apply ``func(part, params, spec, train_dtype, **kwargs)`` to every partition of ``X``.

    Lazy for dask input (a dask Array of ``dtype`` with ``n_out`` columns, or 1-D when
    ``n_out`` is None; keys named after ``func``); eager for NumPy/pandas. ``X`` must have
    ``n_features`` columns; the error names ``estimator``.
    """
    if not is_dask(X):
        if hasattr(X, "shape") and len(X.shape) == 2 and X.shape[1] != n_features:
            raise ValueError(f"X has {X.shape[1]} features, but {estimator} is expecting "
                             f"{n_features} features as input")
        return to_host(func(X, params, spec, train_dtype, **kwargs))
    import dask.array as da
    import dask.dataframe as dd

    arr = X.to_dask_array() if isinstance(X, dd.DataFrame) else X
    if not isinstance(arr, da.Array):
        raise TypeError(f"expected a dask DataFrame or Array, got {type(X).__name__}")
    if arr.ndim == 2 and len(arr.chunks[1]) > 1:
        arr = arr.rechunk({1: -1})
    if arr.ndim == 2 and arr.shape[1] != n_features:
        raise ValueError(f"X has {arr.shape[1]} features, but {estimator} is expecting "
                         f"{n_features} features as input")
    xp = namespace(arr._meta)
    dtype = np.dtype(dtype)
    name = func.__name__.lstrip("_")
    if n_out is None:
        meta = (xp.zeros((0,), dtype=dtype) if dtype.kind in "biuf"
                else np.empty((0,), dtype=dtype))
        return arr.map_blocks(func, params, spec, train_dtype, drop_axis=1, dtype=dtype,
                              meta=meta, name=name, **kwargs)
    return arr.map_blocks(func, params, spec, train_dtype, chunks=(arr.chunks[0], (n_out,)),
                          dtype=dtype, name=name, **kwargs)
