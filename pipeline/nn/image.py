"""Image preprocessing inside the model: scaling, per-channel normalisation, seeded augmentation.

Pixels stay ``uint8`` in the data set (a quarter of float32's memory, and no float copy of the
data); the model's first layers turn each mini-batch into floats:

* :class:`Rescale` multiplies by a constant (``1/255`` by default);
* :class:`Normalize` subtracts a per-channel mean and divides by a per-channel standard deviation,
  fitted on a dask array in one pass (:func:`pipeline.image_prep.fit_normalize`);
* :class:`Augment` applies :func:`augment` (random crop from a zero-padded image, horizontal flip)
  while training, drawn from the step's ``(seed, block, epoch, step)`` key, so a run is
  reproducible whatever the number of workers.

These layers have no parameters (:class:`pipeline.nn.Layer`).

Example
-------
>>> import numpy as np
>>> x = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1)
>>> a = augment(np, x, (0, 0, 0, 0), crop_padding=1)
>>> a.shape, bool((augment(np, x, (0, 0, 0, 0), crop_padding=1) == a).all())
((2, 4, 4, 1), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import device, namespace
from .layers import Layer

__all__ = ["Augment", "Normalize", "Rescale", "augment", "augment_indices"]

Array = Any


def _float_input(xp: Any, x: Array, dtype: str) -> Array:
    """``x`` itself if it is floating point, else ``x`` cast to ``dtype`` (integer pixels)."""
    if xp.isdtype(x.dtype, "real floating"):
        return x
    return xp.astype(x, getattr(xp, dtype))


class _NoParams(Layer):
    def build(self, in_shape):
        return [], tuple(in_shape)

    def init(self, rng, in_shape):
        return []


@dataclass(frozen=True)
class Rescale(_NoParams):
    """``y = x · scale + offset``; integer input (pixels) is cast to ``dtype`` first, floating
    input keeps its dtype. Defaults map ``uint8`` pixels to ``[0, 1]`` in float32."""

    scale: float = 1.0 / 255.0
    offset: float = 0.0
    dtype: str = "float32"

    def forward(self, params, x, ctx):
        xp = namespace(x)
        y = _float_input(xp, x, self.dtype) * float(self.scale)
        return (y + float(self.offset) if self.offset else y), None

    def backward(self, params, cache, dy, ctx, grads):
        return dy * float(self.scale) if ctx.need_input_grad else None


@dataclass(frozen=True)
class Normalize(_NoParams):
    """``y[..., c] = (x[..., c] - mean[c]) / std[c]`` over the last (channel) axis.

    ``mean`` and ``std`` are in the input's units (0..255 for raw pixels, so no :class:`Rescale`
    is needed before it). Build it from data with :func:`pipeline.image_prep.fit_normalize`
    (one Dask pass). Integer input is cast to ``dtype`` first; floating input keeps its dtype.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        mean = tuple(float(m) for m in np.atleast_1d(self.mean))
        std = tuple(float(s) for s in np.atleast_1d(self.std))
        if len(mean) != len(std) or not all(s > 0 and math.isfinite(s) for s in std):
            raise ValueError(f"Normalize needs one finite mean and one positive std per channel, "
                             f"got mean={self.mean!r}, std={self.std!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def build(self, in_shape):
        if not in_shape or in_shape[-1] != len(self.mean):
            raise ValueError(f"Normalize has {len(self.mean)} channel statistics; the input has "
                             f"shape {tuple(in_shape)} (channels last)")
        return [], tuple(in_shape)

    def _constants(self, xp: Any, like: Array) -> tuple[Array, Array]:
        mean = xp.asarray(self.mean, dtype=like.dtype, device=device(like))
        inv = xp.asarray([1.0 / s for s in self.std], dtype=like.dtype, device=device(like))
        return mean, inv

    def forward(self, params, x, ctx):
        xp = namespace(x)
        x = _float_input(xp, x, self.dtype)
        mean, inv = self._constants(xp, x)
        return (x - mean) * inv, None

    def backward(self, params, cache, dy, ctx, grads):
        if not ctx.need_input_grad:
            return None
        return dy * self._constants(namespace(dy), dy)[1]


# ---------------------------------------------------------------------------------------------
# Augmentation: a pure function of (batch, key).


def augment_indices(shape: tuple[int, int, int, int], key: tuple[int, ...], *,
                    crop_padding: int = 4, flip: bool = True) -> np.ndarray:
    """Host int64 indices ``(N, H, W)`` into the zero-padded batch flattened to
    ``(N·(H+2p)·(W+2p), C)``: sample ``n`` is cropped at a random offset in ``[0, 2p]²`` and
    mirrored left-right with probability ½. Drawn from ``numpy.random.SeedSequence(key)``, so the
    same key (``(seed, block, epoch, step)``) gives the same crops and flips."""
    n, h, w, _ = shape
    p = int(crop_padding)
    if p < 0:
        raise ValueError(f"crop_padding must be >= 0, got {crop_padding!r}")
    if any(int(k) < 0 for k in key):
        raise ValueError(f"augmentation keys are non-negative ints, got {key!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))
    top = rng.integers(0, 2 * p + 1, size=n)
    left = rng.integers(0, 2 * p + 1, size=n)
    mirrored = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    hp, wp = h + 2 * p, w + 2 * p
    cols = np.arange(w)
    cols = np.where(mirrored[:, None], w - 1 - cols, cols)  # (n, w): the source column
    rows = top[:, None] + np.arange(h)  # (n, h)
    return ((np.arange(n) * hp)[:, None, None] + rows[:, :, None]) * wp + (left[:, None, None]
                                                                             + cols[:, None, :])


def augment(xp: Any, x: Array, key: tuple[int, ...], *, crop_padding: int = 4,
            flip: bool = True) -> Array:
    """Randomly cropped (from the image zero-padded by ``crop_padding`` on every side) and
    horizontally flipped copy of the batch ``x`` ``(N, H, W, C)``, same shape, dtype and device.

    Pure: the same ``x`` and ``key`` give the same result on any worker and backend. One gather
    (``xp.take``) does both, with indices from :func:`augment_indices`.
    """
    idx = augment_indices(tuple(x.shape), key, crop_padding=crop_padding, flip=flip)
    return _gather(xp, x, idx, int(crop_padding))


def _gather(xp: Any, x: Array, idx: np.ndarray, p: int) -> Array:
    n, h, w, c = x.shape
    padded = xp.zeros((n, h + 2 * p, w + 2 * p, c), dtype=x.dtype, device=device(x))
    padded[:, p : p + h, p : p + w, :] = x
    out = xp.take(xp.reshape(padded, (-1, c)), xp.asarray(idx.reshape(-1), device=device(x)),
                  axis=0)
    return xp.reshape(out, (n, h, w, c))


@dataclass(frozen=True)
class Augment(_NoParams):
    """:func:`augment` while training (``ctx.training`` and ``ctx.key`` set), identity otherwise.

    Place it first (on pixels) or right after :class:`Rescale`/:class:`Normalize`. Its input
    gradient, rarely needed, routes each output's gradient back to the pixel it copied.
    """

    crop_padding: int = 4
    flip: bool = True

    def forward(self, params, x, ctx):
        if not ctx.training or ctx.key is None:
            return x, None
        xp = namespace(x)
        idx = augment_indices(tuple(x.shape), ctx.key, crop_padding=self.crop_padding,
                              flip=self.flip)
        return _gather(xp, x, idx, int(self.crop_padding)), idx

    def backward(self, params, cache, dy, ctx, grads):
        if not ctx.need_input_grad:
            return None
        if cache is None:
            return dy
        xp = namespace(dy)
        n, h, w, c = dy.shape
        p = int(self.crop_padding)
        hp, wp = h + 2 * p, w + 2 * p
        # Each output copies one padded position and positions are hit at most once (a shift
        # and a mirror), so the transpose of the gather is a gather from an inverse map; inputs
        # that no output copied read the extra zero row at the end.
        source = np.full(n * hp * wp, n * h * w, dtype=np.int64)
        source[cache.reshape(-1)] = np.arange(n * h * w)
        source = source.reshape(n, hp, wp)[:, p : p + h, p : p + w].reshape(-1)
        flat = xp.concat([xp.reshape(dy, (-1, c)),
                          xp.zeros((1, c), dtype=dy.dtype, device=device(dy))], axis=0)
        dx = xp.take(flat, xp.asarray(source, device=device(dy)), axis=0)
        return xp.reshape(dx, (n, h, w, c))
