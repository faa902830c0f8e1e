"""Statistics of image data sets that the model's preprocessing layers are built from.

:func:`fit_normalize` returns the :class:`pipeline.nn.Normalize` layer for a data set (per-channel
mean and standard deviation in one Dask pass); the layers themselves live in
:mod:`pipeline.nn.image`, which knows nothing of Dask.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .nn.image import Normalize

__all__ = ["channel_stats", "fit_normalize"]


def fit_normalize(X: Any, dtype: str = "float32", client: Any = None) -> Normalize:
    """The :class:`~pipeline.nn.Normalize` layer for the images ``X`` (dask or NumPy array,
    ``(N, H, W, C)``): per-channel mean and standard deviation from :func:`channel_stats` (one
    pass); a constant channel gets ``std = 1``."""
    mean, std = channel_stats(X, client)
    return Normalize(tuple(mean), tuple(np.where(std > 0, std, 1.0)), dtype)


def channel_stats(X: Any, client: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mean, std)`` (population std, float64, shape ``(C,)``) of ``(N, ..., C)``
    images: one task per block computes count, mean and centred second moment in float64, and
    Chan's pairwise merge (:func:`pipeline.preprocessing.merge_moments`) combines them in block
    order, after a single ``dask.compute`` (on ``client`` when given, else the default
    scheduler)."""
    import functools

    import dask
    import dask.array as da

    from .column_stats import merge_moments

    if isinstance(X, da.Array):
        if X.numblocks[1:] != (1,) * (X.ndim - 1):
            X = X.rechunk({i: -1 for i in range(1, X.ndim)})
        blocks = [dask.delayed(_block_moments)(b) for b in X.to_delayed().ravel()]
        per_block = (client.gather(client.compute(blocks)) if client is not None
                     else dask.compute(*blocks))
    else:
        per_block = [_block_moments(np.asarray(X))]
    channels = len(per_block[0])
    merged = [functools.reduce(merge_moments, (b[c] for b in per_block)) for c in range(channels)]
    if merged and merged[0].n == 0:
        raise ValueError("channel_stats needs at least one image")
    mean = np.array([m.mean for m in merged])
    std = np.sqrt(np.array([m.m2 / m.n for m in merged]))
    return mean, std


def _block_moments(block: np.ndarray) -> list[Any]:
    from .column_stats import Moments

    values = np.asarray(block, dtype=np.float64).reshape(-1, block.shape[-1])
    out = []
    for c in range(values.shape[1]):
        v = values[:, c]
        if v.size == 0:
            out.append(Moments(0, 0.0, 0.0, 0.0, 0, math.inf, -math.inf))
            continue
        shift = float(v[0])
        centred = v - shift
        offset = float(centred.mean())
        m2 = float(((centred - offset) ** 2).sum())
        out.append(Moments(v.size, shift, offset, m2, 0, float(v.min()), float(v.max())))
    return out
