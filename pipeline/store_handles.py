"""Block-store handles: what Dask holds for a block kept on disk or re-read from its source
(:class:`StoredBlock`, a few hundred bytes), the :class:`Recipe` that rebuilds the block on any
worker, and the per-worker :class:`_Reader` that serves rows ``[lo, hi)`` of an epoch order.

The disk and stream stores subclass both (:mod:`pipeline.store_disk`,
:mod:`pipeline.store_stream`); :mod:`pipeline.stores` describes the stores as a whole.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any

import numpy as np

from . import store_worker
from .backend import take_rows, to_host
from .blocks import (
    Block,
    _concat_raw,
    _final_block,
    _raw_block,
    _split_block,
    split_generator,
)
from .train.order import chunk_bounds, chunk_permutation, chunk_sequence

__all__ = ["Recipe", "StoredBlock"]


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

    def streams(self) -> bool:
        """Whether :meth:`parts` can give this block's rows (every partition has targets: a
        block without them keeps :meth:`build`'s whole-block path)."""
        root = self
        while root.split is not None:
            root = root.split[0]
        return all(y is not None for _, y in root.pieces)

    def parts(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The rows of :meth:`build`'s block as host ``(X, Y)`` pieces in row order, one
        partition at a time (for a split, the rows of each parent partition the split keeps),
        so the caller holds one partition, never the block.

        The same bits as :meth:`build`: ``_final_block`` (the label encoding, or the cast of
        regression targets, against the block's ``classes`` fixed beforehand, and a copy into
        owned memory) works row by row, so applied to each partition it gives the rows it gives
        applied to their concatenation; the split's mask is drawn from one generator in row
        order (``random(a)`` then ``random(b)`` draws what ``random(a + b)`` draws) and its
        ``take`` is row-wise. Empty partitions give nothing (they add no row)."""
        if self.split is not None:
            parent, fraction, seed, index, keep_valid = self.split
            yield from split_parts(parent.parts(), fraction, seed, index, keep_valid)
            return
        import dask

        for x, y in self.pieces:
            (raw,) = dask.compute(dask.delayed(_raw_block)(x, y, self.dtype), scheduler="sync")
            if raw[0].shape[0] == 0:
                continue
            block = _final_block(raw, self.classes, self.dtype)
            del raw
            yield to_host(block.X), to_host(block.Y)

    def __sizeof__(self) -> int:
        return 256 + self.nbytes


def split_parts(parts: Iterable[tuple[np.ndarray, np.ndarray]], fraction: float, seed: int,
                index: int, keep_valid: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The rows :func:`pipeline.blocks._split_block` keeps of the block whose rows are
    ``parts`` (host pieces in row order), piece by piece: the same mask (drawn in row order
    from the same generator) and the same ``take``."""
    rng = split_generator(seed, index)
    for X, Y in parts:
        mask = rng.random(X.shape[0]) < fraction
        rows = np.flatnonzero(mask if keep_valid else ~mask)
        if len(rows):
            yield np.take(X, rows, axis=0), np.take(Y, rows, axis=0)


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
        """This block's reader on this worker (:func:`pipeline.store_worker.reader`: least
        recently used readers are evicted to keep their buffers within the memory bound)."""
        return store_worker.reader((self.store_id, self.index), self._new_reader)

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

    def release(self) -> None:
        """Drop the buffers and the prefetch this reader holds (it is being dropped)."""

    def drain(self) -> None:
        """Cancel the prefetch if it has not started, else wait for it (its result and errors
        do not matter any more: the reader is being dropped), then drop the reader's buffers,
        so they go now even if something still refers to the reader."""
        future = self.in_flight()
        if future is not None and not future.cancel():  # running or done: let it end
            wait_futures([future])
        with self.lock:  # a gather in progress on another thread finishes first
            self.release()
