"""The worker-side state of the block stores (:mod:`pipeline.stores`): one lock, the prefetch
thread, the readers of this worker's disk and stream blocks (least recently used first, bounded
by :data:`READER_FRACTION` of the memory limit), the stream cache, the store directories, and
their release when a fit ends or the worker closes.

Everything here is per process: each Dask worker has its own; the client process (tests,
benchmarks) has one too, with its directories under the temp directory.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["LOCK", "READERS", "READER_FRACTION", "RELEASED", "ROOT", "STREAM", "landed",
           "memory_limit", "pool", "reader", "reader_bound", "release_all", "release_local", "store_dir"]

READER_FRACTION = 0.1  # disk blocks' chunk buffers a worker keeps, of its memory limit
ROOT = "pipeline-blocks"

LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
READERS: OrderedDict[tuple[str, int], Any] = OrderedDict()
READERS_MAX = 512
STREAM: OrderedDict[tuple[str, int], tuple[int, Any]] = OrderedDict()  # (epoch, Block)
RELEASED: set[str] = set()  # stores released on this worker: never rebuilt again


def pool() -> ThreadPoolExecutor:
    """The one prefetch thread of this process."""
    global _POOL
    with LOCK:
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


def reader_bound(limit: int) -> float:
    """Bytes of reader buffers a worker with memory limit ``limit`` (0: none known) keeps:
    :data:`READER_FRACTION` of it (256 MiB without a limit)."""
    return READER_FRACTION * limit if limit else 256 * 2**20


def release_local(store_ids: list[str], dask_worker: Any = None) -> list[str]:
    """Forget store ``store_ids`` on this worker (``client.run`` passes ``dask_worker``):
    readers, stream caches, files. Returns the directories removed."""
    removed = []
    with LOCK:
        RELEASED.update(store_ids)
        readers = [READERS.pop(k) for k in [k for k in READERS if k[0] in store_ids]]
        for key in [k for k in STREAM if k[0] in store_ids]:
            del STREAM[key]
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
    with LOCK:
        ids = sorted({k[0] for k in READERS} | {k[0] for k in STREAM})
    return release_local(ids, dask_worker)


def landed(future: Future) -> Any:
    """A prefetch's result; ``None`` if it was cancelled or failed (the caller then reads
    synchronously, where a real error surfaces with its file and chunk)."""
    try:
        return future.result()
    except (Exception, CancelledError):
        return None


def reader(key: tuple[str, int], new: Callable[[], Any]) -> Any:
    """The reader of block ``key = (store id, index)`` on this worker (made by ``new()`` if
    there is none). A new one first evicts the least recently used readers until every
    reader's ``budget`` fits :data:`READER_FRACTION` of the worker's memory limit (budgets are
    fixed, so the sum only grows here)."""
    with LOCK:
        r = READERS.get(key)
        if r is not None:
            READERS.move_to_end(key)
            return r
        r = READERS[key] = new()
        bound = reader_bound(memory_limit())
        evicted = []
        while len(READERS) > 1 and (len(READERS) > READERS_MAX or sum(
                x.budget for x in READERS.values()) > bound):
            evicted.append(READERS.popitem(last=False)[1])
    for e in evicted:  # their buffers go once a read in flight is done
        e.drain()
    return r
