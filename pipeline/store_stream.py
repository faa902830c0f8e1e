"""The stream store: a :class:`StreamBlock` keeps only its recipe, and every epoch re-runs it
on the worker (read + preprocess), once per block. The rebuilt block is kept for that epoch only,
in a cache bounded by :data:`STREAM_CACHE_FRACTION` of the worker's memory limit; while an
epoch's last chunk trains, the next epoch's rebuild runs on the prefetch thread when two copies
of the block fit that bound.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import numpy as np

from . import store_worker
from .backend import to_host
from .blocks import Block
from .store_handles import StoredBlock, _Reader
from .train.order import chunk_bounds

__all__ = ["STREAM_CACHE_FRACTION", "StreamBlock"]

STREAM_CACHE_FRACTION = 0.25  # re-read blocks a worker keeps within an epoch, of its limit


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

    def release(self) -> None:
        self.next, self.rows = None, None

    def _build(self) -> Block:
        block = self.h.recipe.build()
        return Block(to_host(block.X), to_host(block.Y))  # stores serve host rows

    def _block(self, epoch: int) -> Block:
        h = self.h
        key = (h.store_id, h.index)
        with store_worker.LOCK:
            hit = store_worker.STREAM.get(key)
        if hit is not None and hit[0] == epoch:
            return hit[1]
        nxt, self.next = self.next, None
        with store_worker.LOCK:
            store_worker.STREAM.pop(key, None)
        block = store_worker.landed(nxt[1]) if nxt is not None and nxt[0] == epoch else None
        if block is None:
            block = self._build()
        bound = self._bound()
        with store_worker.LOCK:
            store_worker.STREAM[key] = (epoch, block)
            while len(store_worker.STREAM) > 1 and _stream_bytes() > bound:
                store_worker.STREAM.popitem(last=False)
        return block

    @staticmethod
    def _bound() -> float:
        limit = store_worker.memory_limit()
        return STREAM_CACHE_FRACTION * limit if limit else float("inf")

    def chunk(self, c: int, epoch: int, after: tuple[int, int], seed: int, index: int,
              shuffle: bool) -> tuple[Any, Any, np.ndarray | None, int]:
        """The epoch's rebuilt block as the source of chunk ``c``'s rows: ``(X, Y, rows in
        epoch order or None, first row of the chunk in X)``."""
        h = self.h
        block = self._block(epoch)
        if after[1] != epoch and self.next is None:
            need = h.n * (h.d + h.k) * h.dtype.itemsize
            # this epoch's blocks, every block's rebuild ahead and this one must fit the bound
            with store_worker.LOCK:
                ahead = sum(r.h.n * (r.h.d + r.h.k) * r.h.dtype.itemsize
                            for r in store_worker.READERS.values()
                            if isinstance(r, _StreamReader) and r.next is not None)
                fits = _stream_bytes() + ahead + need <= self._bound()
            if fits:
                self.next = (after[1], store_worker.pool().submit(self._build))
        a, _ = chunk_bounds(h.n, c)
        key = (seed, index, epoch) if shuffle else None
        if self.rows is None or self.rows[:2] != (key, c):
            self.rows = (key, c, self.order(key, c, a))
        return block.X, block.Y, self.rows[2], a


def _stream_bytes() -> int:
    return sum(b.X.nbytes + b.Y.nbytes for _, b in store_worker.STREAM.values())
