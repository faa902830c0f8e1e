"""The disk store: a :class:`DiskBlock` is a file in the local directory of the worker that
built it (raw rows, features then targets, a CRC-32 per chunk), read a chunk at a time with
``pread`` into two reused buffers, the next chunk on the prefetch thread (see
:mod:`pipeline.stores`). A worker without the file rebuilds it from the recipe.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from . import store_worker
from .backend import to_host
from .blocks import Block
from .store_handles import Recipe, StoredBlock, _Reader
from .store_write import write_pieces
from .train import order
from .train.order import chunk_bounds, n_chunks

__all__ = ["DiskBlock", "blocks_per_worker", "build_file", "reader_budget", "write_block"]


class DiskBlock(StoredBlock):
    """A block in a file of this worker's local directory: ``n*d`` feature values then ``n*k``
    target values (C order, ``dtype``), and ``checksums[c]`` = CRC-32 of chunk ``c``'s feature
    bytes followed by its target bytes."""

    def __init__(self, *args: Any, checksums: tuple[int, ...], path: str, **kw: Any):
        super().__init__(*args, **kw)
        self.checksums = tuple(checksums)
        self.path = path  # where the worker that built it wrote it (informative)

    def __repr__(self) -> str:
        return f"DiskBlock({self.path!r}, rows={self.n}, dtype={self.dtype})"

    def _new_reader(self) -> Any:
        return _DiskReader(self)

    def local_path(self) -> Path:
        return store_worker.store_dir(self.store_id) / f"block-{self.index}.bin"

    def ensure_local(self) -> Path:
        """This worker's copy of the file, rebuilt from the recipe if this worker has none."""
        path = self.local_path()
        if not path.exists():
            if self.store_id in store_worker.RELEASED:
                raise RuntimeError(f"block store {self.store_id!r} was released (its fit ended)")
            build_file(self.recipe, path, self.n, self.d, self.k, self.dtype)
        return path

    def file_parts(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This block's rows, one chunk at a time, read from this worker's file (rebuilt if
        missing) with each chunk's checksum verified: views of two buffers reused from chunk to
        chunk (each valid until the next is asked for)."""
        path = self.ensure_local()
        reader = _DiskReader(self)
        rows = chunk_bounds(self.n, 0)[1]
        X = np.empty((rows, self.d), self.dtype)
        Y = np.empty((rows, self.k), self.dtype)
        with open(path, "rb") as f:
            for c in range(n_chunks(self.n)):
                a, b = chunk_bounds(self.n, c)
                reader.read(f, c, X[:b - a], Y[:b - a])
                yield X[:b - a], Y[:b - a]

    def load(self) -> Block:
        path = self.ensure_local()
        reader = _DiskReader(self)
        X = np.empty((self.n, self.d), self.dtype)
        Y = np.empty((self.n, self.k), self.dtype)
        with open(path, "rb") as f:
            for c in range(n_chunks(self.n)):
                a, b = chunk_bounds(self.n, c)
                reader.read(f, c, X[a:b], Y[a:b])
        return Block(X, Y)


def write_block(block: Block, path: Path) -> tuple[int, ...]:
    """Write ``block`` (host copy) to ``path`` atomically; the per-chunk CRC-32s."""
    X = np.ascontiguousarray(to_host(block.X))
    Y = np.ascontiguousarray(to_host(block.Y))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    sums = []
    try:
        with open(tmp, "wb") as f:
            X.tofile(f)
            Y.tofile(f)
        for c in range(n_chunks(X.shape[0])):
            a, b = chunk_bounds(X.shape[0], c)
            sums.append(zlib.crc32(Y[a:b].data, zlib.crc32(X[a:b].data)))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tuple(sums)


def reader_budget(n: int, d: int, k: int, dtype: Any) -> int:
    """Bytes of chunk buffers a disk block of ``n`` rows (``d`` features, ``k`` targets, in
    ``dtype``) holds on a worker once read: two chunks (the one in use and the next)."""
    return 2 * chunk_bounds(n, 0)[1] * (d + k) * np.dtype(dtype).itemsize


def blocks_per_worker(memory_limit: int, d: int, k: int, dtype: Any = "float32") -> int:
    """How many disk blocks of at least one chunk of rows a worker with ``memory_limit``
    bytes keeps the chunk buffers of (:func:`pipeline.store_worker.reader_bound` over
    :func:`reader_budget`; at least 1). Local SGD visits all of a worker's blocks at every
    step: with more, each visit re-reads a chunk and the epoch is I/O-bound, so give a disk fit
    at most this many blocks per worker (``min_block_rows``)."""
    budget = reader_budget(order.EPOCH_CHUNK_ROWS, d, k, dtype)
    return max(1, int(store_worker.reader_bound(memory_limit) // budget))


def build_file(recipe: Recipe, path: Path, n: int, d: int, k: int, dtype: Any) -> tuple[int, ...]:
    """Write the block ``recipe`` builds (``n`` rows, ``d`` features, ``k`` targets, ``dtype``)
    to ``path`` atomically, a partition at a time (:meth:`Recipe.parts`,
    :func:`pipeline.store_write.write_pieces`): a worker holds one partition, not the block.
    The same bytes and per-chunk CRC-32s as ``write_block(recipe.build(), path)``, which
    remains the path of a block without targets."""
    if not recipe.streams():
        return write_block(recipe.build(), path)
    return write_pieces(recipe.parts(), path, n, d, k, dtype)


class _DiskReader(_Reader):
    """Chunk buffers of one disk block on one worker: the chunk in use and the next one, read
    (with its row order) on the prefetch thread while the current one trains. Buffers are
    reused from chunk to chunk: no allocation per chunk, no fresh pages to fault in."""

    def __init__(self, handle: DiskBlock):
        super().__init__(handle)
        # Resolved here, on the task's thread: the prefetch thread is no Dask worker thread
        # (``get_worker()`` fails there), so it could not find the worker's directory itself.
        self.path = handle.local_path()
        self.budget = reader_budget(handle.n, handle.d, handle.k, handle.dtype)
        # (chunk, order key, buffers, rows in epoch order)
        self.current: tuple[int, Any, tuple[np.ndarray, np.ndarray], Any] | None = None
        self.pending: tuple[int, Any, Future] | None = None  # (chunk, order key, read)
        self.spare: list[tuple[np.ndarray, np.ndarray]] = []

    def in_flight(self) -> Future | None:
        pending = self.pending
        return None if pending is None else pending[2]

    def release(self) -> None:
        # A failed prefetch's future holds its traceback, whose frame holds this reader: a
        # cycle only the cyclic collector frees. Dropping the buffers here frees them now.
        self.current, self.pending, self.spare = None, None, []

    def _buffers(self) -> tuple[np.ndarray, np.ndarray]:
        if self.spare:
            return self.spare.pop()
        rows = chunk_bounds(self.h.n, 0)[1]
        # fresh NumPy allocations are aligned, as the gathers and BLAS want
        return (np.empty((rows, self.h.d), self.h.dtype), np.empty((rows, self.h.k),
                                                                   self.h.dtype))

    def read(self, f: Any, c: int, x: np.ndarray, y: np.ndarray) -> None:
        """Chunk ``c``'s rows into ``x``/``y`` (views of the right row count), checksum verified."""
        h = self.h
        a, b = chunk_bounds(h.n, c)
        item = h.dtype.itemsize
        for buf, offset in ((x, a * h.d * item), (y, (h.n * h.d + a * h.k) * item)):
            view = memoryview(buf).cast("B")
            got = os.preadv(f.fileno(), [view], offset)
            if got != view.nbytes:
                raise OSError(f"{self.path}: chunk {c} is truncated ({got} of "
                              f"{view.nbytes} bytes)")
        crc = zlib.crc32(y.data, zlib.crc32(x.data))
        if crc != h.checksums[c]:
            raise OSError(f"{self.path}: chunk {c} (rows {a}..{b}) fails its checksum "
                          f"({crc:#010x} != {h.checksums[c]:#010x}): the file is corrupt")

    def _fill(self, c: int, bufs: tuple[np.ndarray, np.ndarray], key: Any,
              rebuild: bool = True) -> tuple[tuple[np.ndarray, np.ndarray], Any]:
        """Chunk ``c`` read into ``bufs``, and its rows' order. The prefetch thread passes
        ``rebuild=False``: a missing file (a closing worker removed it) is then an error the
        training thread handles (it rebuilds, or learns the store was released), never a
        whole block rebuilt in the background."""
        a, b = chunk_bounds(self.h.n, c)
        path = self.h.ensure_local() if rebuild else self.path
        with open(path, "rb") as f:
            self.read(f, c, bufs[0][:b - a], bufs[1][:b - a])
        return bufs, self.order(key, c, 0)

    def chunk(self, c: int, epoch: int, after: tuple[int, int], seed: int, index: int,
              shuffle: bool) -> tuple[Any, Any, np.ndarray | None, int]:
        """Chunk ``c``'s rows (valid until the next call) as ``(X, Y, rows in epoch order or
        None, 0)``; starts reading ``after = (chunk, epoch)`` in the background."""
        key = (seed, index, epoch) if shuffle else None
        cur = self.current
        if cur is None or cur[0] != c:
            if cur is not None:
                self.spare.append(cur[2])
            pending, self.pending = self.pending, None
            landed = store_worker.landed(pending[2]) if pending is not None else None
            if landed is not None and pending[0] == c:
                (bufs, rows), got_key = landed, pending[1]
            else:
                if landed is not None:  # a prefetch we no longer need: keep its buffers
                    self.spare.append(landed[0])
                bufs, rows = self._fill(c, self._buffers(), key)
                got_key = key
            cur = self.current = (c, got_key, bufs, rows)
        if cur[1] != key:  # the same chunk in another epoch (or order): its rows' new order
            cur = self.current = (c, key, cur[2], self.order(key, c, 0))
        if self.pending is None and after[0] != c:
            after_key = (seed, index, after[1]) if shuffle else None
            read = store_worker.pool().submit(self._fill, after[0], self._buffers(), after_key,
                                              False)
            self.pending = (after[0], after_key, read)
        a, b = chunk_bounds(self.h.n, c)
        return cur[2][0][:b - a], cur[2][1][:b - a], cur[3], 0
