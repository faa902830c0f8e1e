"""Writing a disk block's file a piece at a time (the ``"disk"`` store, :mod:`pipeline.stores`).

A block's file holds ``n*d`` feature values then ``n*k`` target values (C order) and a CRC-32
per chunk of :data:`pipeline.train.order.EPOCH_CHUNK_ROWS` rows (its feature bytes, then its
target bytes). :func:`write_pieces` writes the rows as they come, piece after piece in row
order: each piece's features at their row offset in the feature region, its targets at theirs
in the target region (``pwrite``), and each chunk's CRC-32 carried across pieces (CRC-32 is
incremental: ``crc32(b, crc32(a)) == crc32(a + b)``). A worker building a block therefore holds
one piece (a partition, or a chunk of a split's parent) and one chunk's targets, never the
whole block, and the file is, byte for byte, the one
:func:`pipeline.store_disk.write_block` writes from the concatenated block, with the same
checksums. Files appear whole or not at all: written under a temporary name, renamed when
complete (``os.replace``), removed on any failure.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .train import order
from .train.order import chunk_bounds

__all__ = ["write_pieces"]


def _pwrite_all(fd: int, arr: np.ndarray, offset: int) -> None:
    """All of C-contiguous ``arr``'s bytes at ``offset`` (``pwrite`` may write fewer per call:
    Linux caps one call at ~2 GiB)."""
    if arr.nbytes == 0:
        return
    view = memoryview(arr).cast("B")
    while view.nbytes:
        got = os.pwrite(fd, view, offset)
        view, offset = view[got:], offset + got


class _Writer:
    """One block file being written: rows ``[0, row)`` are on disk, ``sums`` holds the CRC-32
    of every chunk they complete, ``crc``/``ys`` the current chunk's so far."""

    def __init__(self, path: Path, n: int, d: int, k: int, dtype: Any):
        self.path, self.n, self.d, self.k = path, int(n), int(d), int(k)
        self.dtype = np.dtype(dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        # 0o666 & ~umask, as open(tmp, "wb") in write_block
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        os.ftruncate(self.fd, self.n * (self.d + self.k) * self.dtype.itemsize)
        self.row = 0
        self.sums: list[int] = []
        self.crc = 0  # the current chunk's CRC-32 over its feature bytes so far
        self.ys: list[bytes] = []  # the current chunk's target bytes so far (CRC'd after X)

    def add(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Append rows: ``X`` ``(m, d)`` and ``Y`` ``(m, k)`` host arrays of the block's dtype."""
        m = X.shape[0]
        for name, a, cols in (("features", X, self.d), ("targets", Y, self.k)):
            if a.dtype != self.dtype or a.ndim != 2 or a.shape != (m, cols):
                raise ValueError(f"{self.path}: rows {self.row}..{self.row + m}: {name} of "
                                 f"shape {a.shape} and dtype {a.dtype}, expected "
                                 f"{(m, cols)} {self.dtype}")
        if self.row + m > self.n:
            raise ValueError(f"{self.path}: the block's pieces hold more than the {self.n} rows "
                             "counted when it was planned (did the source change?)")
        X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y)
        item = self.dtype.itemsize
        _pwrite_all(self.fd, X, self.row * self.d * item)
        _pwrite_all(self.fd, Y, (self.n * self.d + self.row * self.k) * item)
        pos = 0
        while pos < m:  # the chunks these rows fall in, completing each one that ends here
            _, b = chunk_bounds(self.n, (self.row + pos) // order.EPOCH_CHUNK_ROWS)
            stop = min(m, b - self.row)
            self.crc = zlib.crc32(X[pos:stop].data, self.crc)
            self.ys.append(Y[pos:stop].tobytes())
            if self.row + stop == b:
                crc = self.crc
                for ys in self.ys:
                    crc = zlib.crc32(ys, crc)
                self.sums.append(crc)
                self.crc, self.ys = 0, []
            pos = stop
        self.row += m

    def finish(self) -> tuple[int, ...]:
        if self.row != self.n:
            raise ValueError(f"{self.path}: the block's pieces hold {self.row} rows, not the "
                             f"{self.n} counted when it was planned (did the source change?)")
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.path)
        return tuple(self.sums)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


def write_pieces(pieces: Iterable[tuple[np.ndarray, np.ndarray]], path: Path, n: int, d: int,
                 k: int, dtype: Any) -> tuple[int, ...]:
    """Write the block whose rows are ``pieces`` (host ``(X, Y)`` pairs in row order, ``n`` rows
    in all, ``d`` features, ``k`` targets, ``dtype``) to ``path`` atomically, one piece at a
    time; the per-chunk CRC-32s. Same bytes and checksums as
    :func:`pipeline.store_disk.write_block` of the concatenated block. A piece of the wrong
    shape or dtype, or a row count other than ``n``, raises ValueError naming the file; on any
    error no file is left."""
    w = _Writer(Path(path), n, d, k, dtype)
    try:
        for X, Y in pieces:
            w.add(X, Y)
        return w.finish()
    except BaseException:
        w.abort()
        raise
