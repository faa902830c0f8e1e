"""Building, splitting and releasing blocks kept in a disk or stream store (:mod:`pipeline.stores`).

:func:`stored_blocks` is :func:`pipeline.blocks.to_blocks` for ``block_store != "memory"``. It
never holds the data in Dask memory: one streaming pass reads every partition once for its
summary (rows, labels), then one task per block builds the block from its recipe on a worker and
writes it to that worker's disk (``"disk"``), or only records the recipe (``"stream"``).
"""

from __future__ import annotations

import contextvars
import functools
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dask
import numpy as np
from distributed import WorkerPlugin, wait

from .blocks import (
    BlockSet,
    _block_summary,
    _raw_block,
    _split_rows,
    coalesce_groups,
    target_layout,
)
from .cluster import workers_info
from .placement import release_restrictions
from .store_disk import build_file
from .store_handles import split_parts
from .store_write import write_pieces
from .stores import (
    AUTO_MEMORY_FRACTION,
    ROOT,
    DiskBlock,
    Recipe,
    StoredBlock,
    StreamBlock,
    check_block_store,
    release_all,
    release_local,
    store_dir,
)

__all__ = ["BlockFilesPlugin", "release", "releasing", "split_stored", "stored_blocks"]

_ACTIVE: contextvars.ContextVar[list[tuple[Any, str]] | None] = contextvars.ContextVar(
    "pipeline_block_stores", default=None)


class BlockFilesPlugin(WorkerPlugin):
    """Removes the worker's block files when it closes (a fit still running loses nothing it
    cannot rebuild: handles rebuild missing files from their recipes)."""

    name = "pipeline-block-files"

    def teardown(self, worker: Any) -> None:
        import shutil
        from pathlib import Path

        release_all(worker)  # prefetches cancelled or finished before the files go
        shutil.rmtree(Path(worker.local_directory) / ROOT, ignore_errors=True)


def release(client: Any, store_ids: Sequence[str]) -> None:
    """Remove stores ``store_ids`` (files, readers, caches) on every worker."""
    ids = [x for sid in store_ids for x in (sid, *split_store_ids(sid))]
    if ids:
        client.run(release_local, ids)


def releasing(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a fitting method: the stores created inside it are released when it returns,
    raises or is interrupted."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _ACTIVE.get() is not None:  # nested (fit calls partial_fit...): the outer releases
            return method(*args, **kwargs)
        token = _ACTIVE.set([])
        try:
            return method(*args, **kwargs)
        finally:
            created = _ACTIVE.get() or []
            _ACTIVE.reset(token)
            by_client: dict[int, tuple[Any, list[str]]] = {}
            for client, sid in created:
                by_client.setdefault(id(client), (client, []))[1].append(sid)
            for client, sids in by_client.values():
                try:
                    release(client, sids)
                except Exception:  # a closed cluster has nothing left to remove
                    pass

    return wrapper


def _summary(x: Any, y: Any, dtype: str, want_labels: bool) -> dict[str, Any]:
    return _block_summary(_raw_block(x, y, dtype), want_labels)


def _build_disk(recipe: Recipe, store_id: str, index: int, n: int, d: int, k: int,
                dtype: str) -> DiskBlock:
    path = store_dir(store_id) / f"block-{index}.bin"
    sums = build_file(recipe, path, n, d, k, dtype)  # a partition at a time, never the block
    return DiskBlock(store_id, index, n, d, k, dtype, recipe, checksums=sums, path=str(path))


def _disk_pins(client: Any, rows: list[int]) -> list[list[str] | None]:
    """The worker each disk block is built on: the workers (sorted) take contiguous runs of
    blocks of about equal rows, the runs local SGD's replicas are (``replica_groups`` with one
    replica per worker, ``replicas="auto"``), so colocating the replicas moves no block: a
    moved disk block is rebuilt from its source on its new worker."""
    from .train.strategies import replica_groups

    workers = sorted(workers_info(client))
    if len(workers) < 2 or len(rows) < 2:
        return [None] * len(rows)
    pins: list[list[str] | None] = [None] * len(rows)
    for w, run in zip(workers, replica_groups(rows, len(workers)), strict=False):
        for j in run:
            pins[j] = [w]
    return pins


def _combined_limit(client: Any) -> int:
    limits = [int(w.get("memory_limit") or 0) for w in workers_info(client).values()]
    return 0 if (not limits or min(limits) == 0) else sum(limits)


def stored_blocks(client: Any, X: Any, y: Any, x_parts: list[Any], y_parts: list[Any], *,
                  block_store: str, classes: Sequence[Any] | None, classification: bool,
                  dtype: str, min_block_rows: int | None, name: str,
                  memory: Callable[[], BlockSet]) -> BlockSet:
    """The blocks of ``to_blocks`` in a disk or stream store (``"auto"``: see
    :mod:`pipeline.stores`; ``memory()`` builds them in memory instead)."""
    check_block_store(block_store)
    dask.base.tokenize(X, y, dtype)
    pieces = [dask.optimize(xp_, yp)[0:2] if yp is not None else (dask.optimize(xp_)[0], None)
              for xp_, yp in zip(x_parts, y_parts, strict=True)]
    summaries = client.gather(client.compute([
        dask.delayed(_summary, pure=True)(x, yp, dtype, classification) for x, yp in pieces]))
    rows = [s["rows"] for s in summaries]
    groups = [[i] for i in range(len(rows))]
    if min_block_rows and len(rows) > 1:
        groups = coalesce_groups(rows, min_block_rows)
    rows = [sum(rows[i] for i in g) for g in groups]
    d, cls_arr, k = target_layout(summaries, rows, y is not None, classification, classes)
    if block_store == "auto":
        limit = _combined_limit(client)
        need = sum(rows) * (d + k) * np.dtype(dtype).itemsize
        if limit == 0 or need <= AUTO_MEMORY_FRACTION * limit:
            return memory()
        block_store = "disk"
    store_id = f"{name}-{uuid.uuid4().hex[:12]}"
    active = _ACTIVE.get()
    if active is not None:
        active.append((client, store_id))
    if block_store == "disk":
        client.register_plugin(BlockFilesPlugin())
    recipes = [Recipe([pieces[i] for i in g], cls_arr, dtype) for g in groups]
    keys = [f"{name}-{block_store}-{store_id}-{j}" for j in range(len(groups))]
    if block_store == "disk":
        pins = _disk_pins(client, rows)
        futures = [client.submit(_build_disk, r, store_id, j, rows[j], d, k, dtype, key=key,
                                 pure=False, workers=pins[j])
                   for j, (r, key) in enumerate(zip(recipes, keys, strict=True))]
    else:
        futures = [client.submit(StreamBlock, store_id, j, rows[j], d, k, dtype, r, key=key,
                                 pure=False)
                   for j, (r, key) in enumerate(zip(recipes, keys, strict=True))]
    with client.as_current():
        wait(futures)
    if block_store == "disk" and any(p is not None for p in pins):
        release_restrictions(client, keys)  # a lost worker's blocks rebuild anywhere
    for f in futures:
        if f.status == "error":
            f.result()  # raises the block's error, naming its partition's task
    return BlockSet(futures, rows, d, k, cls_arr, str(np.dtype(dtype)), block_store, store_id)


def split_stored(handle: StoredBlock, fraction: float, seed: int, index: int,
                 keep_valid: bool) -> StoredBlock:
    """The training (or held-out) rows of a stored block, in the same store."""
    recipe = Recipe([], handle.recipe.classes, str(handle.dtype),
                    split=(handle.recipe, fraction, seed, index, keep_valid))
    train_n, valid_n = _split_rows(handle.n, fraction, seed, index)
    n = valid_n if keep_valid else train_n
    sid = f"{handle.store_id}-{'valid' if keep_valid else 'train'}"
    if isinstance(handle, StreamBlock):
        return StreamBlock(sid, handle.index, n, handle.d, handle.k, str(handle.dtype), recipe)
    # the parent's file read a chunk at a time, the kept rows written as they come
    path = store_dir(sid) / f"block-{handle.index}.bin"
    sums = write_pieces(split_parts(handle.file_parts(), fraction, seed, index, keep_valid),
                        path, n, handle.d, handle.k, handle.dtype)
    return DiskBlock(sid, handle.index, n, handle.d, handle.k, str(handle.dtype), recipe,
                     checksums=sums, path=str(path))


def split_store_ids(store_id: str | None) -> list[str]:
    """The store ids :func:`split_stored` derives from ``store_id`` (released with it)."""
    return [] if store_id is None else [f"{store_id}-train", f"{store_id}-valid"]
