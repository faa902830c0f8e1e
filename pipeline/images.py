"""Reading images into Dask arrays: folders of PNG/JPEG files, ``.npy`` files, Zarr, NumPy arrays.

:func:`read_images` returns ``(X, y)``: ``X`` a lazy ``dask.array`` of shape ``(N, H, W, C)``
(``uint8`` for image files) split along ``N`` into partitions, and ``y`` its labels (a dask array
of class names for a folder, of the given labels for arrays, or ``None``). A folder holds one
sub-folder per class::

    photos/
        cat/0001.jpg  cat/0002.png  ...
        dog/0001.jpg  ...

Classes are the sub-folder names, sorted; files are found at any depth below their class folder
(hidden names, starting with ``.`` or ``_``, are skipped; other suffixes are ignored). Nothing
is decoded at call time except the first image's header (for the size and colour mode):
every partition decodes its own files with Pillow when it is computed.

A file that does not decode (truncated, not an image, wrong size) is handled by ``on_bad_rows``,
the policy :func:`pipeline.read` applies to CSV rows: ``"raise"`` raises
:class:`pipeline.io.BadRowsError` naming the file; ``"quarantine"`` skips it and records its path
and reason (``"decode"`` or ``"size"``) in a Parquet file per partition under
``quarantine_path``, which :func:`pipeline.io.quarantine_report` sums up. Images are never
scaled here: ``uint8`` pixels go to the model, whose first layers (``Rescale``, ``Normalize`` in
:mod:`pipeline.nn.image`) turn them into floats, batch by batch, without a float copy of
the data set. Array sources (NumPy, ``.npy``, Zarr) are read by :mod:`pipeline.image_arrays`.

Example
-------
>>> X, y = read_images("photos/", size=(64, 64))          # doctest: +SKIP
>>> X                                                      # doctest: +SKIP
dask.array<images, shape=(1200, 64, 64, 3), dtype=uint8, chunksize=(682, 64, 64, 3), ...>
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

import dask.array as da
import numpy as np
from dask.base import tokenize

from .image_arrays import is_array_file, read_image_array, rows_per_partition
from .io import (
    _MANIFEST,
    BAD_ROW_POLICIES,
    BadRowsError,
    _expand,
    _open_quarantine,
    _Quarantine,
    _records,
)

__all__ = ["COLOR_MODES", "IMAGE_SUFFIXES", "read_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
COLOR_MODES = ("auto", "grayscale", "rgb")
_PIL_MODE = {"grayscale": "L", "rgb": "RGB"}
# Pillow modes that hold one grey level per pixel; everything else is read as RGB.
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_DEFAULT_PARTITION = "8MiB"  # decoded bytes; small enough that decoding spreads over workers


class _File(NamedTuple):
    path: str  # as the filesystem opens it
    name: str  # as messages and the quarantine name it
    label: int  # class index
    row: int  # position in the listing, 0-based


@dataclass(frozen=True)
class _Part:
    index: int
    files: tuple[_File, ...]


@dataclass(frozen=True)
class _ImageLoader:
    """Decodes one partition's files: ``(images (n, H, W, C) uint8, labels (n,) str)``."""

    fs: Any
    mode: str  # Pillow mode: "L" or "RGB"
    shape: tuple[int, int]  # (height, width) every image must have (after resizing)
    resize: bool
    classes: tuple[str, ...]
    on_bad_rows: str
    quarantine: _Quarantine | None

    def __call__(self, part: _Part) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.shape
        c = 1 if self.mode == "L" else 3
        out = np.empty((len(part.files), h, w, c), dtype=np.uint8)
        kept, bad = [], []
        for f in part.files:
            try:
                pixels = _decode(self.fs, f.path, self.mode, self.shape if self.resize else None)
            except _BadImage as e:
                bad.append((f, e.reason, str(e)))
                if self.on_bad_rows == "raise":
                    break
                continue
            if pixels.shape[:2] != (h, w):
                got = f"{pixels.shape[0]}×{pixels.shape[1]}"
                bad.append((f, "size", f"is {got} (height×width), the first image is {h}×{w}; "
                                       "pass size=(height, width) to resize every image"))
                if self.on_bad_rows == "raise":
                    break
                continue
            out[len(kept)] = pixels.reshape(h, w, c)
            kept.append(f.label)
        if bad and self.on_bad_rows == "raise":
            f, reason, detail = bad[0]
            raise BadRowsError(
                f"{f.name}: {detail} [{reason}] (partition {part.index}, image {f.row}). Remove or "
                "replace the file, or read with on_bad_rows='quarantine', quarantine_path=...",
                f.name, part.index, f.row, None, reason,
            )
        if self.quarantine is not None:
            # _records names one source file per call; here every row has its own.
            records = _records(
                "", part.index, [f.row for f, _, _ in bad], [None] * len(bad),
                [r for _, r, _ in bad], [d for _, _, d in bad],
            )
            records["source_file"] = [f.name for f, _, _ in bad]
            self.quarantine.write(part.index, records, len(kept))
        names = np.asarray(self.classes)
        return out[: len(kept)].copy() if bad else out, names[np.asarray(kept, dtype=np.intp)]


class _BadImage(ValueError):
    def __init__(self, message: str, reason: str = "decode"):
        super().__init__(message)
        self.reason = reason


def _decode(fs: Any, path: str, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """``(height, width)`` or ``(height, width, 3)`` uint8 pixels of one file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with fs.open(path, "rb") as f, Image.open(f) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise _BadImage("cannot decode as an image (Pillow does not recognise its format)"
                        ) from None
    except Image.DecompressionBombError as e:
        raise _BadImage(f"cannot decode as an image ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt data
        raise _BadImage(f"cannot decode as an image ({type(e).__name__}: {e})") from None


def _header(fs: Any, path: str) -> tuple[tuple[int, int], str]:
    """``((height, width), Pillow mode)`` from the file's header, without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with fs.open(path, "rb") as f, Image.open(f) as im:
            return (im.size[1], im.size[0]), im.mode
    except UnidentifiedImageError:
        raise _BadImage("cannot decode as an image (Pillow does not recognise its format)"
                        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise _BadImage(f"cannot decode as an image ({type(e).__name__}: {e})") from None


def read_images(
    source: Any,
    labels: Any = None,
    *,
    size: tuple[int, int] | None = None,
    color_mode: str = "auto",
    partition_size: int | str = _DEFAULT_PARTITION,
    on_bad_rows: str = "raise",
    quarantine_path: Any = None,
    shuffle: bool = True,
    random_state: int = 0,
    storage_options: dict | None = None,
) -> tuple[da.Array, da.Array | None]:
    """Images as a lazy ``(N, H, W, C)`` dask array and their labels.

    Parameters
    ----------
    source : str, path, NumPy array
        A folder with one sub-folder per class of ``.png``/``.jpg``/``.jpeg`` files (local or an
        fsspec URL); a ``.npy`` file or a Zarr store (``.zarr``, needs the ``zarr`` package) of
        shape ``(N, H, W, C)`` or ``(N, H, W)``; or such a NumPy array in memory. Arrays keep
        their dtype; a 3-D array gains a channel axis of 1.
    labels : array-like or ``.npy`` path, optional
        One label per image, for array sources only (a folder's labels are its class names).
    size : (height, width), optional
        Folders only: resize every image to this size (bilinear). Without it every image must
        have the first image's size; one that does not is a bad row (reason ``"size"``).
    color_mode : {"auto", "grayscale", "rgb"}
        Folders only: ``C = 1`` or ``3``. ``"auto"`` takes grayscale when the first image is
        grey (Pillow modes L, 1, I, F...), RGB otherwise (an alpha channel is dropped).
    partition_size : int or str
        Images per partition, or decoded bytes per partition (``"8MiB"``, the default).
    on_bad_rows : {"raise", "quarantine"}
        What a file that does not decode does; see the module docstring. With
        ``"quarantine"`` the partition lengths are only known once decoded: ``X`` and ``y`` have
        unknown chunk sizes (``nan``; ``X.compute_chunk_sizes()`` fills them in).
    quarantine_path : str, optional
        Required with ``on_bad_rows="quarantine"``: the directory for the side files.
    shuffle, random_state : bool, int
        Folders only: list the files in a seeded random order (default) rather than class by
        class, so every partition (a data-parallel training block) holds a mix of classes.
    storage_options : dict, optional
        Passed to fsspec for remote folders and ``.npy`` files.

    Returns
    -------
    X : dask.array.Array, shape (N, H, W, C)
    y : dask.array.Array of shape (N,), or None
        A folder's class names (``<U`` strings; the classes are ``np.unique(y)``, the sorted
        sub-folder names), the given labels, or ``None`` when an array comes without labels.
    """
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_rows must be one of {BAD_ROW_POLICIES}, got {on_bad_rows!r}")
    if on_bad_rows == "quarantine" and quarantine_path is None:
        raise ValueError("on_bad_rows='quarantine' needs quarantine_path= (a directory)")
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {COLOR_MODES}, got {color_mode!r}")
    if size is not None:
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (height, width), both >= 1, got {size!r}")
    if isinstance(source, np.ndarray) or is_array_file(source):
        if size is not None or color_mode != "auto":
            raise ValueError("size= and color_mode= apply to image folders; resize or convert "
                             "arrays before reading them")
        return read_image_array(source, labels, partition_size, storage_options)
    if labels is not None:
        raise ValueError("labels= is for array sources: a folder's labels are its sub-folders")
    return _read_folder(source, size, color_mode, partition_size, on_bad_rows, quarantine_path,
                        shuffle, random_state, storage_options)


def _read_folder(path, size, color_mode, partition_size, on_bad_rows, quarantine_path, shuffle,
                 random_state, storage_options):
    expected = (f"expected one sub-folder per class holding {'/'.join(IMAGE_SUFFIXES)} files "
                f"(e.g. {path}/cat/001.png)")
    try:
        fs, sources = _expand(path, storage_options)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; {expected}") from None
    root = fs._strip_protocol(os.fspath(path)).rstrip("/")
    by_class: dict[str, list] = {}
    for s in sources:
        parts = s.path[len(root) :].strip("/").split("/")
        if len(parts) >= 2 and s.path.lower().endswith(IMAGE_SUFFIXES):
            by_class.setdefault(parts[0], []).append(s)
    if not by_class:
        raise FileNotFoundError(f"{path}: no image files in class sub-folders; {expected}")
    classes = tuple(sorted(by_class))
    listing = [(s, k) for k, name in enumerate(classes) for s in by_class[name]]
    if shuffle:
        order = np.random.default_rng(random_state).permutation(len(listing))
        listing = [listing[i] for i in order]
    files = [_File(s.path, s.name, k, row) for row, (s, k) in enumerate(listing)]

    quarantine = (_open_quarantine(quarantine_path, fs, storage_options)
                  if on_bad_rows == "quarantine" else None)
    shape, grey = None, False
    for f in files:  # the first file with a readable header fixes the geometry
        try:
            shape, mode = _header(fs, f.path)
        except _BadImage as e:
            if on_bad_rows == "raise":
                raise BadRowsError(f"{f.name}: {e} [decode]. Remove or replace the file, or "
                                   "read with on_bad_rows='quarantine', quarantine_path=...",
                                   f.name, None, f.row, None, "decode") from None
            continue
        grey = mode in _GREY_MODES
        break
    if shape is None:
        raise ValueError(f"{path}: none of the {len(files)} image files can be decoded")
    mode = _PIL_MODE.get(color_mode, "L" if grey else "RGB")
    shape = size or shape
    channels = 1 if mode == "L" else 3
    step = rows_per_partition(partition_size, shape[0] * shape[1] * channels)
    parts = [_Part(i, tuple(files[a : a + step])) for i, a in enumerate(range(0, len(files), step))]
    if quarantine is not None:
        import json

        with quarantine.fs.open(f"{quarantine.root}/{_MANIFEST}", "w") as out:
            json.dump({"partitions": len(parts), "format": "images",
                       "sources": [f.name for f in files]}, out)
    loader = _ImageLoader(fs, mode, shape, size is not None, classes, on_bad_rows, quarantine)
    stamps = [(s.path, s.size, s.stamp) for s, _ in listing]
    token = tokenize(stamps, shape, mode, size, step, on_bad_rows, quarantine_path)
    known = on_bad_rows == "raise"
    rows = tuple(len(p.files) if known else np.nan for p in parts)
    label_dtype = np.asarray(classes).dtype
    return _arrays(token, loader, parts, rows, (*shape, channels), np.uint8, label_dtype)


def _arrays(token, loader, parts, rows, item_shape, dtype, label_dtype):
    """``X`` and ``y`` sharing one load task per partition, so computing both decodes once."""
    load, x_name, y_name = f"read-images-{token}", f"images-{token}", f"labels-{token}"
    dsk: dict = {}
    for i, part in enumerate(parts):
        dsk[(load, i)] = (loader, part)
        dsk[(x_name, i) + (0,) * len(item_shape)] = (operator.getitem, (load, i), 0)
        dsk[(y_name, i)] = (operator.getitem, (load, i), 1)
    chunks = (rows, *((d,) for d in item_shape))
    X = da.Array(dsk, x_name, chunks, dtype=dtype,
                 meta=np.empty((0,) * (1 + len(item_shape)), dtype=dtype))
    y = da.Array(dsk, y_name, (rows,), dtype=label_dtype, meta=np.empty((0,), dtype=label_dtype))
    return X, y
