"""Block stores: where a fit's training blocks live between epochs.

``block_store`` (estimator parameter, config ``train.block_store``) chooses, per fit:

``"memory"``
    Each block is a :class:`pipeline.blocks.Block` of arrays held by Dask in worker memory.
``"disk"``
    Each block is written once, by the worker that builds it, into that worker's
    ``local_directory`` as raw rows (features then targets, in the training dtype) with a
    CRC-32 per chunk; Dask holds a :class:`DiskBlock` handle of a few hundred bytes, so the
    worker's managed memory does not claim the rows. Reads copy whole chunks of contiguous rows
    with ``pread`` (the page cache keeps hot files; nothing stays mapped, so the worker's RSS
    counts only the two chunk buffers per block, at most :data:`READER_FRACTION` of its memory
    limit in all: the least recently used blocks drop theirs), verify their checksum, and run on a
    background thread one chunk ahead of the training (double buffering into reused buffers).
    The chunk plan of an epoch and each chunk's row order are drawn once per epoch (the next
    chunk's on that thread), so a mini-batch costs what it costs in memory: one gather.
``"stream"``
    Nothing is cached between epochs: a :class:`StreamBlock` keeps the recipe (the culled Dask
    graph of its partitions: read, preprocess) and every epoch re-runs it, on the worker, once
    per block (the rebuilt block is kept for that epoch only, in a cache bounded by
    :data:`STREAM_CACHE_FRACTION` of the worker's memory limit). While an epoch's last chunk
    trains, the next epoch's rebuild runs on the background thread, when two copies of the
    block fit that bound (read + preprocess overlapped with training).
``"auto"``
    ``"memory"`` when the blocks take at most :data:`AUTO_MEMORY_FRACTION` of the workers'
    combined memory limit, else ``"disk"``.

Every store serves rows ``[lo, hi)`` of the same epoch order
(:func:`pipeline.train.order.epoch_order`: chunks of contiguous rows in a shuffled order, rows
shuffled inside each chunk), so all of them give bit-identical parameters. A handle also keeps
its recipe: a worker that lost its files (or a task that ran on a worker without them) rebuilds
the block from it, the same bits; a lost worker's handles are recomputed by Dask from lineage
like any other result. Files live in ``<local_directory>/pipeline-blocks/<store id>/`` and are
removed when the fit ends, fails or is interrupted (:func:`releasing`), when the worker closes
(:class:`BlockFilesPlugin`), and with the worker's whole directory after a crash (Dask purges
the directories of dead workers when the next worker starts).
"""

from __future__ import annotations

import os
import shutil
import threading
import zlib
from collections import OrderedDict
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any

import numpy as np

from .backend import take_rows, to_host
from .blocks import Block, _concat_raw, _final_block, _raw_block, _split_block
from .train.order import chunk_bounds, chunk_permutation, chunk_sequence, n_chunks

__all__ = ["AUTO_MEMORY_FRACTION", "BLOCK_STORES", "STREAM_CACHE_FRACTION", "DiskBlock",
           "Recipe", "StreamBlock", "check_block_store", "store_dir"]

BLOCK_STORES = ("memory", "disk", "stream", "auto")
AUTO_MEMORY_FRACTION = 0.25  # "auto" keeps blocks in memory up to this share of the limits
STREAM_CACHE_FRACTION = 0.25  # re-read blocks a worker keeps within an epoch, of its limit
READER_FRACTION = 0.1  # disk blocks' chunk buffers a worker keeps, of its memory limit
ROOT = "pipeline-blocks"


def check_block_store(value: str) -> str:
    if value not in BLOCK_STORES:
        raise ValueError(f"block_store must be one of {BLOCK_STORES}, got {value!r}")
    return value


# ------------------------------------------------------------------ recipes --------------------


class Recipe:
    """How to build one block from its source on any worker: the culled Dask graphs of its
    partitions (run with the synchronous scheduler inside the task), or the block it is a
    split of. The same functions as the memory store, so the same bits."""

    def __init__(self, pieces: list[tuple[Any, Any]], classes: Any, dtype: str,
                 split: tuple[Any, ...] | None = None):
        self.pieces = pieces
        self.classes = classes
        self.dtype = dtype
        self.split = split  # (parent Recipe, fraction, seed, index, keep_valid)
        from dask.sizeof import sizeof

        self.nbytes = int(sum(sizeof(dict(p.__dask_graph__())) for pair in pieces for p in pair
                              if p is not None))
        if split is not None:
            self.nbytes += split[0].nbytes

    def build(self) -> Block:
        if self.split is not None:
            parent, fraction, seed, index, keep_valid = self.split
            return _split_block(parent.build(), fraction, seed, index, keep_valid)
        import dask

        raws = dask.compute(*[dask.delayed(_raw_block)(x, y, self.dtype)
                              for x, y in self.pieces], scheduler="sync")
        raw = raws[0] if len(raws) == 1 else _concat_raw(*raws)
        return _final_block(raw, self.classes, self.dtype)

    def __sizeof__(self) -> int:
        return 256 + self.nbytes


# ------------------------------------------------------------------ worker-side state ----------


_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_READERS: OrderedDict[tuple[str, int], Any] = OrderedDict()
_READERS_MAX = 512
_STREAM: OrderedDict[tuple[str, int], tuple[int, Block]] = OrderedDict()
_RELEASED: set[str] = set()  # stores released on this worker: never rebuilt again


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(1, thread_name_prefix="pipeline-prefetch")
        return _POOL


def _worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except ValueError:
        return None


def store_dir(store_id: str, worker: Any = None) -> Path:
    """This worker's directory for store ``store_id`` (the client process: a temp directory)."""
    w = worker if worker is not None else _worker()
    if w is not None:
        base = Path(w.local_directory)
    else:
        import tempfile

        base = Path(tempfile.gettempdir()) / f"pipeline-{os.getpid()}"
    return base / ROOT / store_id


def memory_limit() -> int:
    """This worker's memory limit in bytes (0: none known)."""
    w = _worker()  # distributed keeps the limit on the worker's memory manager, not the worker
    limit = getattr(getattr(w, "memory_manager", None), "memory_limit", None)
    return int(limit or getattr(w, "memory_limit", 0) or 0)


def release_local(store_ids: list[str], dask_worker: Any = None) -> list[str]:
    """Forget store ``store_ids`` on this worker (``client.run`` passes ``dask_worker``):
    readers, stream caches, files. Returns the directories removed."""
    removed = []
    with _LOCK:
        _RELEASED.update(store_ids)
        readers = [_READERS.pop(k) for k in [k for k in _READERS if k[0] in store_ids]]
        for key in [k for k in _STREAM if k[0] in store_ids]:
            del _STREAM[key]
    for r in readers:  # a queued prefetch is cancelled, one reading finishes before its file goes
        r.drain()
    for sid in store_ids:
        d = store_dir(sid, dask_worker)
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed


def release_all(dask_worker: Any = None) -> list[str]:
    """Forget every store this worker knows (the worker is closing): queued prefetches are
    cancelled, reads in flight finish, nothing is rebuilt afterwards, files go."""
    with _LOCK:
        ids = sorted({k[0] for k in _READERS} | {k[0] for k in _STREAM})
    return release_local(ids, dask_worker)


def _landed(future: Future) -> Any:
    """A prefetch's result; ``None`` if it was cancelled or failed (the caller then reads
    synchronously, where a real error surfaces with its file and chunk)."""
    try:
        return future.result()
    except (Exception, CancelledError):
        return None


# ------------------------------------------------------------------ handles --------------------


class StoredBlock:
    """What Dask holds for a block not kept in memory: shape, dtype, where, and the recipe."""

    def __init__(self, store_id: str, index: int, n: int, d: int, k: int, dtype: str,
                 recipe: Recipe):
        self.store_id, self.index = store_id, int(index)
        self.n, self.d, self.k, self.dtype = int(n), int(d), int(k), np.dtype(dtype)
        self.recipe = recipe

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.d)

    @property
    def like(self) -> np.ndarray:
        """A zero-stride ``(n, d)`` host array: namespace, device, dtype and shape, no rows.
        (Made once per handle: the training loop asks for it on every step.)"""
        like = self.__dict__.get("_like")
        if like is None:
            like = self._like = np.lib.stride_tricks.as_strided(
                np.zeros(1, self.dtype), (self.n, self.d), (0, 0), writeable=False)
        return like

    def __getstate__(self) -> dict[str, Any]:
        # a pickled zero-stride array would carry n * d real values: rebuilt where it lands
        return {k: v for k, v in self.__dict__.items() if k != "_like"}

    def __sizeof__(self) -> int:  # what Dask counts as managed memory
        return 512 + self.recipe.nbytes

    def _reader(self) -> Any:
        """This block's reader on this worker. A new one first evicts the least recently used
        readers until every reader's :attr:`budget` fits :data:`READER_FRACTION` of the
        worker's memory limit (budgets are fixed, so the sum only grows here)."""
        key = (self.store_id, self.index)
        with _LOCK:
            r = _READERS.get(key)
            if r is not None:
                _READERS.move_to_end(key)
                return r
            r = _READERS[key] = self._new_reader()
            limit = memory_limit()
            bound = READER_FRACTION * limit if limit else 256 * 2**20
            evicted = []
            while len(_READERS) > 1 and (len(_READERS) > _READERS_MAX or sum(
                    x.budget for x in _READERS.values()) > bound):
                evicted.append(_READERS.popitem(last=False)[1])
        for e in evicted:  # their buffers go once a read in flight is done
            e.drain()
        return r

    def take_epoch_rows(self, seed: int, index: int, epoch: int, shuffle: bool, lo: int,
                        hi: int, ws: Any) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[lo, hi)`` of this block's epoch order (see
        :func:`pipeline.train.order.epoch_order`), gathered into ``ws``'s buffers ``X``/``Y``
        from the chunks that hold them; the chunk after the last one used is prefetched.

        Per call (one mini-batch) this costs a search in the epoch's chunk plan and one gather
        per chunk touched: the plan and each chunk's row order are computed once per epoch, by
        the reader (the next chunk's on the prefetch thread), and no array is allocated."""
        reader = self._reader()
        with reader.lock:  # the reader's buffers change hands inside: one task at a time
            out_x = ws.get("X", (hi - lo, self.d), reader.like)
            out_y = ws.get("Y", (hi - lo, self.k), reader.like)
            seq, ends = reader.plan(seed, index, epoch, shuffle)
            pos = lo
            while pos < hi:
                j = int(np.searchsorted(ends, pos, side="right"))
                c = int(seq[j])
                first = int(ends[j - 1]) if j else 0
                stop = min(hi, int(ends[j]))
                if j + 1 < len(seq):
                    after = (int(seq[j + 1]), epoch)
                else:  # the next epoch's first chunk
                    after = (int(reader.plan(seed, index, epoch + 1, shuffle)[0][0]), epoch + 1)
                src_x, src_y, rows, offset = reader.chunk(c, epoch, after, seed, index, shuffle)
                dst = slice(pos - lo, stop - lo)
                if rows is not None:
                    local = rows[pos - first:stop - first]
                    take_rows(src_x, local, out=out_x[dst])
                    take_rows(src_y, local, out=out_y[dst])
                else:
                    s = offset + pos - first
                    out_x[dst] = src_x[s:s + stop - pos]
                    out_y[dst] = src_y[s:s + stop - pos]
                pos = stop
            return out_x, out_y


class _Reader:
    """What a block's reads keep between calls on one worker: the chunk plans of the current
    and next epoch (visiting order, cumulative row counts) and a zero-stride ``like`` array.
    :meth:`StoredBlock.take_epoch_rows` holds :attr:`lock` while it uses one."""

    budget = 0  # bytes of buffers it holds once used (counted against READER_FRACTION)

    def __init__(self, handle: StoredBlock):
        self.h = handle
        self.lock = threading.Lock()
        self.like = handle.like
        self.plans: OrderedDict[tuple[int, int, int, bool], tuple[np.ndarray, np.ndarray]] = \
            OrderedDict()

    def plan(self, seed: int, index: int, epoch: int,
             shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(chunks in visiting order, cumulative rows after each)`` for ``epoch``."""
        key = (seed, index, epoch, shuffle)
        hit = self.plans.get(key)
        if hit is None:
            n = self.h.n
            seq = chunk_sequence(n, seed, index, epoch, shuffle)
            sizes = [np.subtract(*chunk_bounds(n, int(c))[::-1]) for c in seq]
            hit = self.plans[key] = (seq, np.cumsum(np.array(sizes, np.int64)))
            while len(self.plans) > 2:  # this epoch's and the next one's
                self.plans.popitem(last=False)
        return hit

    def order(self, key: tuple[int, int, int] | None, c: int, offset: int) -> np.ndarray | None:
        """Chunk ``c``'s rows in the order epoch ``key = (seed, index, epoch)`` visits them, as
        row numbers of a buffer whose row ``offset`` is the chunk's first (``None``: storage
        order)."""
        if key is None:
            return None
        rows = chunk_permutation(self.h.n, *key, c)
        if offset:
            rows = rows.astype(np.int64) + offset if self.h.n >= 2**31 else rows + offset
        return rows

    def in_flight(self) -> Future | None:
        return None

    def drain(self) -> None:
        """Cancel the prefetch if it has not started, else wait for it (its result and errors
        do not matter any more: the reader is being dropped)."""
        future = self.in_flight()
        if future is not None and not future.cancel():  # running or done: let it end
            wait_futures([future])


class StreamBlock(StoredBlock):
    """A block re-read and re-preprocessed from its source every epoch (see module doc)."""

    def _new_reader(self) -> Any:
        return _StreamReader(self)

    def load(self) -> Block:
        return self.recipe.build()

    def __repr__(self) -> str:
        return f"StreamBlock({self.store_id!r}, {self.index}, rows={self.n})"


class _StreamReader(_Reader):
    """The whole block, rebuilt from its recipe once per epoch; while the epoch's last chunk
    trains, the next epoch's rebuild runs on the prefetch thread (when two copies of the
    block fit the stream cache's bound), so read + preprocess overlaps training."""

    def __init__(self, handle: StoredBlock):
        super().__init__(handle)
        self.next: tuple[int, Future] | None = None  # (epoch, rebuild in flight)
        self.rows: tuple[Any, int, np.ndarray | None] | None = None  # (key, chunk, order)

    def in_flight(self) -> Future | None:
        nxt = self.next
        return None if nxt is None else nxt[1]

    def _build(self) -> Block:
        block = self.h.recipe.build()
        return Block(to_host(block.X), to_host(block.Y))  # stores serve host rows

    def _block(self, epoch: int) -> Block:
        h = self.h
        key = (h.store_id, h.index)
        with _LOCK:
            hit = _STREAM.get(key)
        if hit is not None and hit[0] == epoch:
            return hit[1]
        nxt, self.next = self.next, None
        with _LOCK:
            _STREAM.pop(key, None)
        block = _landed(nxt[1]) if nxt is not None and nxt[0] == epoch else None
        if block is None:
            block = self._build()
        bound = self._bound()
        with _LOCK:
            _STREAM[key] = (epoch, block)
            while len(_STREAM) > 1 and _stream_bytes() > bound:
                _STREAM.popitem(last=False)
        return block

    @staticmethod
    def _bound() -> float:
        limit = memory_limit()
        return STREAM_CACHE_FRACTION * limit if limit else float("inf")

    def chunk(self, c: int, epoch: int, after: tuple[int, int], seed: int, index: int,
              shuffle: bool) -> tuple[Any, Any, np.ndarray | None, int]:
        """The epoch's rebuilt block as the source of chunk ``c``'s rows: ``(X, Y, rows in
        epoch order or None, first row of the chunk in X)``."""
        h = self.h
        block = self._block(epoch)
        if after[1] != epoch and self.next is None:
            need = h.n * (h.d + h.k) * h.dtype.itemsize
            with _LOCK:  # blocks of this epoch and rebuilds ahead of every block, and this
                ahead = sum(r.h.n * (r.h.d + r.h.k) * r.h.dtype.itemsize
                            for r in _READERS.values()
                            if isinstance(r, _StreamReader) and r.next is not None)
                fits = _stream_bytes() + ahead + need <= self._bound()
            if fits:
                self.next = (after[1], _pool().submit(self._build))
        a, _ = chunk_bounds(h.n, c)
        key = (seed, index, epoch) if shuffle else None
        if self.rows is None or self.rows[:2] != (key, c):
            self.rows = (key, c, self.order(key, c, a))
        return block.X, block.Y, self.rows[2], a


def _stream_bytes() -> int:
    return sum(b.X.nbytes + b.Y.nbytes for _, b in _STREAM.values())


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
        return store_dir(self.store_id) / f"block-{self.index}.bin"

    def ensure_local(self) -> Path:
        """This worker's copy of the file, rebuilt from the recipe if this worker has none."""
        path = self.local_path()
        if not path.exists():
            if self.store_id in _RELEASED:
                raise RuntimeError(f"block store {self.store_id!r} was released (its fit ended)")
            write_block(self.recipe.build(), path)
        return path

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
    with open(tmp, "wb") as f:
        X.tofile(f)
        Y.tofile(f)
    for c in range(n_chunks(X.shape[0])):
        a, b = chunk_bounds(X.shape[0], c)
        sums.append(zlib.crc32(Y[a:b].data, zlib.crc32(X[a:b].data)))
    os.replace(tmp, path)
    return tuple(sums)


class _DiskReader(_Reader):
    """Chunk buffers of one disk block on one worker: the chunk in use and the next one, read
    (with its row order) on the prefetch thread while the current one trains. Buffers are
    reused from chunk to chunk: no allocation per chunk, no fresh pages to fault in."""

    def __init__(self, handle: DiskBlock):
        super().__init__(handle)
        rows = chunk_bounds(handle.n, 0)[1]
        self.budget = 2 * rows * (handle.d + handle.k) * handle.dtype.itemsize
        # (chunk, order key, buffers, rows in epoch order)
        self.current: tuple[int, Any, tuple[np.ndarray, np.ndarray], Any] | None = None
        self.pending: tuple[int, Any, Future] | None = None  # (chunk, order key, read)
        self.spare: list[tuple[np.ndarray, np.ndarray]] = []

    def in_flight(self) -> Future | None:
        pending = self.pending
        return None if pending is None else pending[2]

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
                raise OSError(f"{h.local_path()}: chunk {c} is truncated ({got} of "
                              f"{view.nbytes} bytes)")
        crc = zlib.crc32(y.data, zlib.crc32(x.data))
        if crc != h.checksums[c]:
            raise OSError(f"{h.local_path()}: chunk {c} (rows {a}..{b}) fails its checksum "
                          f"({crc:#010x} != {h.checksums[c]:#010x}): the file is corrupt")

    def _fill(self, c: int, bufs: tuple[np.ndarray, np.ndarray], key: Any,
              rebuild: bool = True) -> tuple[tuple[np.ndarray, np.ndarray], Any]:
        """Chunk ``c`` read into ``bufs``, and its rows' order. The prefetch thread passes
        ``rebuild=False``: a missing file (a closing worker removed it) is then an error the
        training thread handles (it rebuilds, or learns the store was released), never a
        whole block rebuilt in the background."""
        a, b = chunk_bounds(self.h.n, c)
        path = self.h.ensure_local() if rebuild else self.h.local_path()
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
            landed = _landed(pending[2]) if pending is not None else None
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
            self.pending = (after[0], after_key,
                            _pool().submit(self._fill, after[0], self._buffers(), after_key,
                                           False))
        a, b = chunk_bounds(self.h.n, c)
        return cur[2][0][:b - a], cur[2][1][:b - a], cur[3], 0
