"""Image data sets that are already arrays: a NumPy array, a ``.npy`` file (local or fsspec
URL, read by rows through a memory map where it is local) or a Zarr store, as an
``(N, H, W, C)`` dask array split along ``N``, with optional labels. :func:`pipeline.read_images`
sends array sources here; folders of image files stay in :mod:`pipeline.images`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.utils import parse_bytes

__all__ = ["is_array_file", "read_image_array", "rows_per_partition"]


def rows_per_partition(partition_size: int | str, image_bytes: int) -> int:
    """Images per partition: ``partition_size`` images, or as many as fit that many bytes."""
    if isinstance(partition_size, str):
        return max(1, parse_bytes(partition_size) // max(image_bytes, 1))
    if not isinstance(partition_size, int | np.integer) or partition_size < 1:
        raise ValueError(
            f"partition_size must be a number of images (int >= 1) or a size such as '8MiB', "
            f"got {partition_size!r}"
        )
    return int(partition_size)


def is_array_file(source: Any) -> bool:
    """Whether ``source`` names a ``.npy`` file or a Zarr store."""
    if not isinstance(source, str | os.PathLike):
        return False
    name = os.fspath(source).rstrip("/").lower()
    return name.endswith((".npy", ".zarr"))


@dataclass(frozen=True)
class _NpyLoader:
    """Rows ``[start, stop)`` of a ``.npy`` file, memory-mapped (only those rows are read)."""

    fs: Any
    path: str

    def __call__(self, bounds: tuple[int, int]) -> np.ndarray:
        start, stop = bounds
        if "file" in ((self.fs.protocol,) if isinstance(self.fs.protocol, str)
                      else self.fs.protocol):
            rows = np.load(self.path, mmap_mode="r", allow_pickle=False)[start:stop]
        else:
            with self.fs.open(self.path, "rb") as f:
                rows = np.load(f, allow_pickle=False)[start:stop]
        # Owned, aligned memory: a view of a memory map would keep the file open and can be
        # misaligned (see TECH_NOTES), which changes how BLAS rounds.
        rows = np.array(rows, copy=True)
        return rows[..., None] if rows.ndim == 3 else rows


def read_image_array(source, labels, partition_size, storage_options):
    """``(X, y)`` of an array source (see :func:`pipeline.read_images`)."""
    if isinstance(source, np.ndarray):
        arr = source[..., None] if source.ndim == 3 else source
        _check_images(arr.shape, "the array")
        step = rows_per_partition(partition_size, int(np.prod(arr.shape[1:])) * arr.itemsize)
        X = da.from_array(arr, chunks=(step, *arr.shape[1:]), name=f"images-{tokenize(arr)}")
    elif os.fspath(source).rstrip("/").lower().endswith(".zarr"):
        try:
            import zarr  # noqa: F401  (only to give a clear message when it is missing)
        except ImportError:
            raise ImportError(f"{source}: reading Zarr needs the zarr package, which is not "
                              "installed (pip install zarr); or save the array as .npy") from None
        X = da.from_zarr(os.fspath(source), storage_options=storage_options)
        _check_images(X.shape, os.fspath(source))
        if X.ndim == 3:
            X = X[..., None]
        step = rows_per_partition(partition_size, int(np.prod(X.shape[1:])) * X.dtype.itemsize)
        X = X.rechunk((step, *X.shape[1:]))
    else:
        X = _read_npy(os.fspath(source), partition_size, storage_options)
    if labels is None:
        return X, None
    if is_array_file(labels):
        from fsspec.core import url_to_fs

        fs, lpath = url_to_fs(os.fspath(labels), **(storage_options or {}))
        with fs.open(lpath, "rb") as f:
            labels = np.load(f, allow_pickle=False)
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != X.shape[0]:
        raise ValueError(f"labels must be 1-D with one label per image ({X.shape[0]}), "
                         f"got shape {y.shape}")
    return X, da.from_array(y, chunks=(X.chunks[0],), name=f"labels-{tokenize(y)}")


def _read_npy(path: str, partition_size, storage_options) -> da.Array:
    from fsspec.core import url_to_fs

    fs, fpath = url_to_fs(path, **(storage_options or {}))
    with fs.open(fpath, "rb") as f:  # the header only: shape and dtype
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"{path}: .npy format version {version} is not supported (1.0, 2.0)")
        shape, fortran, dtype = read_header(f)
    _check_images(shape, path)
    if fortran:
        raise ValueError(f"{path}: a Fortran-ordered .npy file; save it C-ordered "
                         "(np.save(path, np.ascontiguousarray(a)))")
    item = (*shape[1:], 1) if len(shape) == 3 else tuple(shape[1:])
    step = rows_per_partition(partition_size, int(np.prod(item)) * dtype.itemsize)
    bounds = [(a, min(a + step, shape[0])) for a in range(0, shape[0], step)]
    info = fs.info(fpath)
    token = tokenize(path, info.get("size"), info.get("mtime"), step)
    name, loader = f"images-{token}", _NpyLoader(fs, fpath)
    dsk = {(name, i) + (0,) * len(item): (loader, b) for i, b in enumerate(bounds)}
    chunks = (tuple(b - a for a, b in bounds), *((d,) for d in item))
    return da.Array(dsk, name, chunks, dtype=dtype, meta=np.empty((0,) * (1 + len(item)), dtype))


def _check_images(shape: tuple[int, ...], where: str) -> None:
    if len(shape) not in (3, 4) or any(d < 1 for d in shape[1:]):
        raise ValueError(f"{where}: images must have shape (N, H, W) or (N, H, W, C), "
                         f"got {tuple(shape)}")
