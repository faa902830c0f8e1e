"""Block stores: where a fit's training blocks live between epochs.

``block_store`` (estimator parameter, config ``train.block_store``) chooses, per fit:

``"memory"``
    Each block is a :class:`pipeline.blocks.Block` of arrays held by Dask in worker memory.
``"disk"``
    Each block is written once, by the worker that builds it (a partition at a time: the
    worker never holds the whole block), into that worker's ``local_directory`` as raw rows
    (features then targets, in the training dtype) with a CRC-32 per chunk; Dask holds a :class:`DiskBlock` handle of a few hundred bytes, so the
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

The parts, each in its module: :mod:`pipeline.store_handles` (:class:`Recipe`, the handle and
reader base classes), :mod:`pipeline.store_disk` (:class:`DiskBlock`, :func:`write_block`),
:mod:`pipeline.store_write` (a block file written piece by piece),
:mod:`pipeline.store_stream` (:class:`StreamBlock`), :mod:`pipeline.store_worker` (the
per-worker state: readers, stream cache, prefetch thread, directories, release), and
:mod:`pipeline.store_blocks` (building, splitting and releasing a fit's stored blocks). Every
public name this module had before they were split out is still importable from here (the
tunables are read where they are used: patch ``pipeline.store_worker.memory_limit``, not this
module's re-export).
"""

from __future__ import annotations

from .store_disk import DiskBlock, blocks_per_worker, write_block
from .store_handles import Recipe, StoredBlock
from .store_stream import STREAM_CACHE_FRACTION, StreamBlock
from .store_worker import (
    READER_FRACTION,
    ROOT,
    memory_limit,
    release_all,
    release_local,
    store_dir,
)

__all__ = ["AUTO_MEMORY_FRACTION", "BLOCK_STORES", "READER_FRACTION", "ROOT",
           "STREAM_CACHE_FRACTION", "DiskBlock", "Recipe", "StoredBlock", "StreamBlock",
           "blocks_per_worker", "check_block_store", "memory_limit", "release_all",
           "release_local", "store_dir", "write_block"]

BLOCK_STORES = ("memory", "disk", "stream", "auto")
AUTO_MEMORY_FRACTION = 0.25  # "auto" keeps blocks in memory up to this share of the limits


def check_block_store(value: str) -> str:
    """``value`` if it names a block store, else a ValueError listing them."""
    if value not in BLOCK_STORES:
        raise ValueError(f"block_store must be one of {BLOCK_STORES}, got {value!r}")
    return value
