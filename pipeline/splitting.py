"""Deterministic row splits: :func:`train_test_split` assigns every row by a hash of its
content (:func:`pipeline.rowhash.row_hash`), lazily and independently of partitioning and
workers, so CPU and GPU runs hold out the same rows.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .backend import device, namespace
from .rowhash import row_hash

__all__ = ["row_uniform", "split_partition", "train_test_split"]

_MASK64 = (1 << 64) - 1
_SPLITMIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def _is_dask_frame(df: Any) -> bool:
    """Whether ``df`` is a dask DataFrame. dask.dataframe is imported only when it is already
    loaded (a dask frame exists): split_partition's tasks unpickle this module on the workers,
    where importing dask.dataframe brings dask.array, sparse and numba (~96 MiB of RSS)."""
    import sys

    dd = sys.modules.get("dask.dataframe")
    return dd is not None and isinstance(df, dd.DataFrame)


def _splitmix64(z: int) -> int:
    """SplitMix64's finaliser on a Python int (mod 2**64)."""
    z = (z + _SPLITMIX[0]) & _MASK64
    z = ((z ^ (z >> 30)) * _SPLITMIX[1]) & _MASK64
    z = ((z ^ (z >> 27)) * _SPLITMIX[2]) & _MASK64
    return z ^ (z >> 31)


def _splitmix64_array(z: Any) -> Any:
    """The same finaliser on a uint64 array (NumPy or CuPy); uint64 arithmetic wraps."""
    xp = namespace(z)

    def u64(value: int) -> Any:
        return xp.asarray(value, dtype=xp.uint64, device=device(z))

    z = z + u64(_SPLITMIX[0])
    z = (z ^ (z >> 30)) * u64(_SPLITMIX[1])
    z = (z ^ (z >> 27)) * u64(_SPLITMIX[2])
    return z ^ (z >> 31)


def row_uniform(part: Any, random_state: int) -> Any:
    """A uniform [0, 1) number per row, a function of the row's values and ``random_state``."""
    h = row_hash(part)
    xp = namespace(h)
    seed = xp.asarray(_splitmix64(int(random_state) & _MASK64), dtype=xp.uint64, device=device(h))
    z = _splitmix64_array(h ^ seed)
    # The top 53 bits give every float64 multiple of 2**-53 in [0, 1) with equal probability.
    return xp.astype(z >> 11, xp.float64) * 2.0**-53


def split_partition(
    part: Any, *, which: str, test_size: float, valid_size: float, random_state: int
) -> Any:
    """The rows of one partition that fall in split ``which`` ("train", "valid" or "test")."""
    u = row_uniform(part, random_state)
    if which == "test":
        keep = u < test_size
    elif which == "valid":
        keep = (u >= test_size) & (u < test_size + valid_size)
    else:
        keep = u >= test_size + valid_size
    return part[keep]


def train_test_split(df, *, test_size=0.1, valid_size=None, random_state=0, stratify=None):
    """Split rows into ``(train, test)`` or, with ``valid_size``, ``(train, valid, test)``.

    Each row goes to a split by ``u = hash(row values, random_state) / 2**64``: test if
    ``u < test_size``, valid if ``u < test_size + valid_size``, train otherwise. So:

    - the split does not depend on the number of partitions, their boundaries, the order of
      the rows or the workers — only on the row values, their dtypes and ``random_state``; a
      cuDF frame splits as its ``to_pandas()`` would (:func:`pipeline.rowhash.row_hash`), so
      CPU and GPU runs hold out the same rows;
    - identical rows always land in the same split, so duplicates cannot leak from train into
      test (and a dataset with many duplicates deviates more from the requested sizes);
    - sizes are right in expectation (binomial), not exact;
    - it is lazy: a dask DataFrame gives dask DataFrames with the same partitions, filtered
      (one ``split_partition`` task per partition and split; nothing is computed). A pandas or
      cuDF DataFrame gives frames of the same kind.

    ``stratify`` names a label column and is only checked to exist: the per-row hash already
    gives every class the requested proportions in expectation, independently of the other
    classes, which is all a per-row, partition-local rule can promise. Small classes can still
    come out unbalanced; exact per-class proportions need a global sort and are not offered.

    Parameters
    ----------
    df : dask, pandas or cuDF DataFrame
    test_size, valid_size : float in (0, 1), ``test_size + valid_size < 1``
    random_state : int
    stratify : column name or None
    """
    for name, size in (("test_size", test_size), ("valid_size", valid_size)):
        if name == "valid_size" and size is None:
            continue
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, float, np.floating)):
            raise TypeError(f"{name} must be a float in (0, 1), got {size!r}")
        if not 0.0 < size < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {size!r}")
    total = test_size + (valid_size or 0.0)
    if total >= 1.0:
        raise ValueError(
            f"test_size + valid_size must be < 1 to leave training rows, got {total!r}"
        )
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(
        random_state, (int, np.integer)
    ):
        raise TypeError(f"random_state must be an int, got {random_state!r}")
    if stratify is not None:
        from .frames import check_columns, frame_meta  # client side: imports dask.dataframe

        check_columns(list(frame_meta(df).columns), [stratify], "stratify column")

    names = ("train", "test") if valid_size is None else ("train", "valid", "test")
    splits = []
    for which in names:
        func = functools.partial(
            split_partition,
            which=which,
            test_size=float(test_size),
            valid_size=float(valid_size or 0.0),
            random_state=int(random_state),
        )
        if _is_dask_frame(df):
            # a row subset of the partition, its columns: no apply_and_enforce (it would bring
            # dask.dataframe to the workers; see Preprocessor.transform)
            splits.append(df.map_partitions(func, meta=df._meta, enforce_metadata=False))
        else:
            splits.append(func(df))
    return tuple(splits)
