"""A hash of each row's values that is the same on pandas and cuDF partitions.

:func:`pipeline.preprocessing.train_test_split` assigns rows to splits by this hash, so a run
on GPU workers (cuDF partitions) splits the data exactly as a run on CPU workers does. The hash
is pandas' ``hash_pandas_object(frame, index=False)``; for cuDF it is that of
``frame.to_pandas()``, computed without moving numeric columns off the GPU: pandas hashes a
number by its bit pattern, mixed by a fixed finaliser and combined across columns by fixed
arithmetic, all of which is written out here against the array API. Columns that CuPy cannot
hold (strings, categories, columns with nulls) are hashed by pandas on the host, column by
column, and their hashes move to the device (:func:`pipeline.backend.values_of` decides which
column is which).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .backend import device, is_cudf, namespace, to_device_of, uint64_bits, values_of

__all__ = ["row_hash"]

_MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # pandas' _hash_ndarray finaliser
_SEED, _MULT, _STEP, _TAIL = 0x345678, 1000003, 82520, 97531  # pandas' combine_hash_arrays
_MASK64 = (1 << 64) - 1


def row_hash(part: Any) -> Any:
    """A uint64 hash of each row's values (not its index), equal to
    ``pd.util.hash_pandas_object(part, index=False)`` for pandas and to the same of
    ``part.to_pandas()`` for cuDF: NumPy for pandas, CuPy for cuDF (NumPy if no column of
    the cuDF partition can live on the GPU)."""
    if not is_cudf(part):
        return pd.util.hash_pandas_object(part, index=False).to_numpy()
    if not hasattr(part, "columns"):  # a Series: pandas hashes its values, uncombined
        return column_hash(part)
    hashes = [column_hash(part[c]) for c in part.columns]
    like = next((h for h in hashes if not isinstance(h, np.ndarray)), None)
    if like is not None:
        hashes = [to_device_of(h, like) for h in hashes]
    return combine_hashes(hashes, len(part))


def column_hash(col: Any) -> Any:
    """pandas' hash of one cuDF column: on the GPU for numbers without nulls, else pandas' own
    on the host copy."""
    values = values_of(col)
    if isinstance(values, np.ndarray):  # strings, categories or nulls: pandas on the host
        return pd.util.hash_pandas_object(col.to_pandas(), index=False).to_numpy()
    return hash_numbers(values)


def hash_numbers(x: Any) -> Any:
    """pandas' ``hash_array`` of a 1-D array of booleans, integers or floats (<= 8 bytes), in
    ``x``'s namespace and on its device: the bit pattern zero-extended to 64 bits (NaN and -0.0
    canonicalised as pandas does), then SplitMix64's finaliser."""
    xp = namespace(x)
    dev = device(x)

    def u64(value: int) -> Any:
        return xp.asarray(value, dtype=xp.uint64, device=dev)

    if xp.isdtype(x.dtype, "bool"):
        v = xp.astype(x, xp.uint64)
    else:
        v = uint64_bits(x)
        if xp.isdtype(x.dtype, "real floating"):
            # pandas gives every NaN the bits of np.nan, and -0.0 those of 0.0
            nan_bits, negzero_bits = uint64_bits(
                xp.asarray([math.nan, -0.0], dtype=x.dtype, device=dev))
            v = xp.where(xp.isnan(x), nan_bits, v)
            v = xp.where(v == negzero_bits, u64(0), v)
    v = v ^ (v >> u64(30))
    v = v * u64(_MIX[0])
    v = v ^ (v >> u64(27))
    v = v * u64(_MIX[1])
    return v ^ (v >> u64(31))


def combine_hashes(hashes: list[Any], n_rows: int) -> Any:
    """pandas' ``combine_hash_arrays``: the per-column hashes folded into one per row (CPython's
    tuple hash), in the hashes' namespace. No columns: every row hashes as an empty tuple."""
    if not hashes:
        return np.full(n_rows, _SEED + _TAIL, dtype=np.uint64)
    xp = namespace(hashes[0])
    dev = device(hashes[0])

    def u64(value: int) -> Any:
        return xp.asarray(value & _MASK64, dtype=xp.uint64, device=dev)

    out = xp.zeros(hashes[0].shape, dtype=xp.uint64, device=dev) + u64(_SEED)
    mult = _MULT
    for i, h in enumerate(hashes):
        inverse_i = len(hashes) - i
        out = (out ^ h) * u64(mult)
        mult += _STEP + inverse_i + inverse_i
    return out + u64(_TAIL)
