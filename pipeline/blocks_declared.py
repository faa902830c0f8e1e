"""Blocks of a collection that declares its partitions' lengths (a dask Array): planned on the
client and submitted in one go (:func:`pipeline.blocks.to_blocks`' fast path).

Without declared lengths, :func:`~pipeline.blocks.to_blocks` reads every partition, brings the
summaries (rows, labels) to the client, then plans the coalescing and placement and builds the
blocks: four levels of tasks and a round trip to the client, each ~5-10 ms on a small fit.
With them, the plan needs nothing from the workers: one task per block reads its partitions,
concatenates and encodes them (the functions of the slow path, in the same order, so the same
bits), and a small task per block summarises its partitions' labels. A classifier's blocks merge the
summaries themselves (the class list), so the client never sits between the reads and the
blocks; it checks the summaries (errors name the partition, as before) while the blocks build.

Blocks are pinned to their planned workers while built. A planned worker that leaves before its
block exists would leave the task waiting for it forever: the wait then lets every block run
anywhere (placement never changes the numbers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

import dask
import numpy as np
from dask.utils import parse_timedelta
from distributed import wait

from . import blocks as _blocks  # module lookups: the fault tests patch _raw_block on workers
from .backend import to_host
from .cluster import workers_info
from .placement import release_restrictions

__all__ = ["declared_rows", "planned_blocks"]


class _Shape(NamedTuple):
    """A partition's shape, standing in for its array where only the shape is read."""

    shape: tuple[int, ...]


class _Keyed(NamedTuple):
    """An input partition's key, asked of the scheduler like a future's."""

    key: Any


def declared_rows(X: Any, y: Any) -> list[int] | None:
    """Rows per partition when ``X`` (a dask Array, and ``y`` if it is one, chunked alike)
    declares them all, else ``None`` (a DataFrame's partition lengths are known once read)."""
    import dask.array as da

    if not isinstance(X, da.Array) or any(np.isnan(n) for n in X.chunks[0]):
        return None
    if y is not None and (not isinstance(y, da.Array) or y.chunks[0] != X.chunks[0]):
        return None
    return [int(n) for n in X.chunks[0]]


def _labels_summary(ys: list[Any], rows: list[int], n_features: int,
                    want_labels: bool) -> list[dict[str, Any]]:
    """:func:`~pipeline.blocks._block_summary` of each partition of a block, from its labels
    and its declared shape (its features are not read)."""
    return [_blocks._block_summary((_Shape((n, n_features)), _blocks._labels_of(y, n)),
                                   want_labels) for y, n in zip(ys, rows, strict=True)]


def _planned_block(xs: list[Any], ys: list[Any], dtype: str, keep: bool, classes: Any,
                   summaries: list[list[dict[str, Any]]] | None) -> Any:
    """One block from its partitions, as the slow path's ``_raw_block`` → ``_concat_raw`` →
    ``_final_block`` chain makes it; ``summaries`` (every block's): find the class list there."""
    raws = [_blocks._raw_block(x, y, dtype, keep) for x, y in zip(xs, ys, strict=True)]
    raw = raws[0] if len(raws) == 1 else _blocks._concat_raw(*raws)
    if summaries is not None:
        flat = [s for group in summaries for s in group]
        classes = _blocks.target_layout(flat, [s["rows"] for s in flat], True, True, None)[1]
    return _blocks._final_block(raw, classes, dtype)


def planned_blocks(client: Any, x_parts: Sequence[Any], y_parts: Sequence[Any],
                   rows: list[int], shape: tuple[int, ...], *, classes: Any,
                   classification: bool, dtype: str, keep_shape: bool,
                   min_block_rows: int | None, name: str, token: str) -> _blocks.BlockSet:
    """:func:`~pipeline.blocks.to_blocks` for partitions of declared lengths ``rows`` (same
    keys for the blocks and summaries, same plan, same bits). ``shape``: the features'."""
    has_y = y_parts[0] is not None
    n = len(x_parts)
    parts = client.compute([*x_parts, *(y_parts if has_y else [])])  # persisted: no new task
    xs, ys = parts[:n], (parts[n:] if has_y else [None] * n)
    groups, group_rows, target = _blocks.plan_blocks(client, rows, min_block_rows,
                                                     [_Keyed(p.key) for p in x_parts])

    def pin(j: int) -> list[str] | None:
        return None if target[j] is None else [str(target[j])]

    # one summary per block, from its labels alone (the features' shape is declared)
    n_features = int(np.prod(shape[1:], dtype=np.int64))
    summary_futures = [
        client.submit(_labels_summary, [ys[i] for i in g], [rows[i] for i in g], n_features,
                      classification, key=f"block-summary-{token}-{j}")
        for j, g in enumerate(groups)
    ] if has_y else []
    find_classes = classification and has_y and classes is None
    given = to_host(classes) if classification and has_y and classes is not None else None
    futures = [
        client.submit(_planned_block, [xs[i] for i in g], [ys[i] for i in g], dtype,
                      keep_shape, given, summary_futures if find_classes else None,
                      key=f"{name}-{token}-{j}", workers=pin(j))
        for j, g in enumerate(groups)
    ]
    try:  # a partition's error, raised as it is
        summaries = ([s for group in client.gather(summary_futures) for s in group] if has_y
                     else [{"rows": r, "n_features": n_features} for r in rows])
        n_features, cls_arr, n_outputs = _blocks.target_layout(summaries, group_rows, has_y,
                                                               classification, classes)
        _wait_placed(client, futures, {str(t) for t in target if t is not None})
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        del parts, xs, ys
    return _blocks.BlockSet(futures, group_rows, n_features, n_outputs, cls_arr,
                            str(np.dtype(dtype)))


def _wait_placed(client: Any, futures: list[Any], planned: set[str]) -> None:
    """Wait for the blocks and raise a block's own error; once built (or once a planned worker
    has left) their pins are loosened, so a block lost later is rebuilt wherever Dask likes."""
    keys = sorted(f.key for f in futures)
    interval = parse_timedelta(dask.config.get("pipeline.train.watchdog-interval", "1s"))
    while True:
        try:
            with client.as_current():  # wait() looks for the current client
                wait(futures, timeout=interval if planned else None)
            break
        except (TimeoutError, asyncio.TimeoutError):
            if planned - set(workers_info(client)):
                release_restrictions(client, keys)  # the lost worker's block goes elsewhere
                planned = set()
    errored = [f for f in futures if f.status == "error"]
    if errored:
        errored[0].result()  # raises the task's exception
    if planned:
        release_restrictions(client, keys)
