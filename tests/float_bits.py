"""Bit-level comparison of float arrays for tests of same-bits shortcuts: the raw bits of an
array, equality of dtype, shape and bits, and values that exercise every special class."""

from __future__ import annotations

import numpy as np


def bits(a):
    """The array's raw bits as unsigned integers of its item size."""
    a = np.asarray(a)
    return a.view(f"u{a.dtype.itemsize}")


def same(a, b):
    """Same dtype, shape and bits (NaN payloads and signed zeros included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(bits(a), bits(b))


def special_values(dtype, n, seed):
    """``n`` values of ``dtype``: every special class (signed zeros, NaNs with payloads,
    infinities, the smallest normal and subnormal, the largest finite), then random normals of
    mixed scales."""
    info = np.finfo(dtype)
    quiet = np.array([0x7FC00001, 0xFFC12345] if dtype == np.float32 else
                     [0x7FF8000000000001, 0xFFF8123456789ABC],
                     dtype=np.uint32 if dtype == np.float32 else np.uint64).view(dtype)
    special = np.concatenate([
        np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, info.tiny, -info.tiny,
                  info.smallest_subnormal, -info.smallest_subnormal, info.max, -info.max,
                  1.0, -1.0, 0.5, -2.0], dtype=dtype), quiet])
    rng = np.random.default_rng(seed)
    rest = rng.standard_normal(n - special.size) * 10.0 ** rng.integers(-40, 40, n - special.size)
    with np.errstate(over="ignore"):
        return np.concatenate([special, rest.astype(dtype)])
