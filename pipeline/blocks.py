"""Training data layout: one contiguous feature block and target block per partition.

Each partition of the preprocessed data becomes a :class:`Block` (``X`` of shape ``(n, d)`` and
``Y`` of shape ``(n, k)``, both in the training dtype, NumPy or CuPy) on the worker that computed
it, spread across the workers by rows, one run of consecutive blocks per worker
(:mod:`pipeline.placement_plan`). The blocks are persisted as
futures and reused every round: data never moves between workers
or to the client during training; only parameters and gradients travel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import dask
import numpy as np
from array_api_compat import is_array_api_obj
from distributed import wait

from .backend import (
    device,
    frame_to_array,
    namespace,
    owned,
    to_device_of,
    to_host,
    to_worker_device,
    values_of,
)
from .placement import layout, plan_for_cluster, release_restrictions

__all__ = ["Block", "BlockSet", "coalesce_groups", "encode_targets", "join_blocks", "split_blocks",
           "to_blocks"]


class Block(NamedTuple):
    """One partition's training rows, resident on one worker.

    A block that travels (to a second member's worker, or a validation block to the worker
    that scores it) is unpickled from Dask's message frames, where its arrays are views at
    arbitrary byte offsets; it is rebuilt in owned, aligned memory on arrival
    (:func:`_arrived`), since every mini-batch ``take`` from a misaligned view costs ~40x more:
    a one-block member on a copied block ran its epochs up to 30% slower.
    """

    X: Any  # (n, n_features), contiguous, training dtype
    Y: Any  # (n, n_outputs), contiguous, training dtype

    def __reduce__(self) -> tuple[Any, tuple[Any, Any]]:
        return _arrived, (self.X, self.Y)


def _arrived(X: Any, Y: Any) -> Block:
    """An unpickled :class:`Block`: its arrays in owned, aligned, C-contiguous memory."""
    return Block(owned(X), None if Y is None else owned(Y))


class BlockSet(NamedTuple):
    """Futures of the blocks (in partition order) and what the trainer needs to know of them."""

    futures: list[Any]
    rows: list[int]
    n_features: int
    n_outputs: int
    classes: np.ndarray | None
    dtype: str = "float32"
    store: str = "memory"  # where the blocks live: "memory", "disk", "stream" (pipeline.stores)
    store_id: str | None = None  # the disk/stream store's id (its files' directory name)

    @property
    def n_samples(self) -> int:
        return int(sum(self.rows))


def _raw_block(x_part: Any, y_part: Any, dtype: str, keep: bool = False) -> tuple[Any, Any]:
    X = namespace(x_part).asarray(x_part) if keep else frame_to_array(x_part, dtype=dtype)
    if y_part is None:
        return to_worker_device(X), None
    # Numeric cuDF labels stay on the GPU; strings, categories and labels with nulls come to
    # the host (CuPy cannot hold them), where the summary checks them and names the problem.
    return to_worker_device(X), _labels_of(y_part, X.shape[0])


def _labels_of(y_part: Any, rows: int) -> Any:
    """A partition's labels as an array, checked against its ``rows`` of features."""
    y = values_of(y_part)
    if y.shape[0] != rows:
        raise ValueError(
            f"features and target disagree in a partition: {rows} rows vs {y.shape[0]} labels"
        )
    return y


def _block_summary(raw: tuple[Any, Any], want_labels: bool) -> dict[str, Any]:
    X, y = raw
    out: dict[str, Any] = {"rows": int(X.shape[0]),
                           "n_features": int(np.prod(X.shape[1:], dtype=np.int64))}
    if y is not None:
        y_host = to_host(y)
        out["y_ndim"] = y_host.ndim
        out["y_cols"] = 1 if y_host.ndim == 1 else int(y_host.shape[1])
        if want_labels:
            null = _isnull(y_host)
            out["y_null"] = int(np.sum(null))
            # without the missing ones: np.unique cannot order None among strings
            out["labels"] = np.unique(y_host[~null] if out["y_null"] else y_host)
        else:
            out["y_nonfinite"] = int(np.sum(~np.isfinite(y_host.astype(np.float64))))
    return out


def target_layout(summaries: Sequence[dict[str, Any]], rows: Sequence[int], has_y: bool,
                  classification: bool, classes: Any) -> tuple[int, np.ndarray | None, int]:
    """``(n_features, classes, n_outputs)`` of the blocks whose partitions :func:`_block_summary`
    described (``rows``: rows per block). Classes are the sorted labels seen (or the given ones,
    brought to the host); raises on no rows, missing labels, a single class, or missing or
    non-finite regression targets."""
    if sum(rows) == 0:
        raise ValueError("the training data is empty: every partition has 0 rows")
    cls_arr: np.ndarray | None = None
    n_outputs = 0
    if has_y:
        if classification:
            if sum(s.get("y_null", 0) for s in summaries):
                raise ValueError("the label has missing values; drop or impute those rows first")
            if classes is None:
                labels = [s["labels"] for s in summaries if s["rows"]]
                cls_arr = np.unique(np.concatenate(labels))
            else:
                cls_arr = to_host(classes)  # the user's classes may be a CuPy array
            if len(cls_arr) < 2:
                raise ValueError(
                    f"the label has a single class {cls_arr.tolist()}: a classifier needs at "
                    "least two"
                )
            n_outputs = 1 if len(cls_arr) == 2 else len(cls_arr)
        else:
            bad = sum(s.get("y_nonfinite", 0) for s in summaries)
            if bad:
                raise ValueError(f"the regression target has {bad} missing or non-finite values")
            n_outputs = summaries[0]["y_cols"]
    return summaries[0]["n_features"], cls_arr, n_outputs


def _isnull(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind in "fc":
        return np.isnan(y)
    if y.dtype.kind == "O":  # None, NaN, pandas NA (nullable labels), NaT
        import pandas as pd  # here: a worker that trains on arrays never imports pandas

        return np.asarray(pd.isna(y), dtype=bool)
    return np.zeros(y.shape, dtype=bool)


def encode_targets(y: Any, classes: np.ndarray | None, dtype: Any) -> Any:
    """Targets as the ``(n, k)`` float matrix the loss expects, on ``y``'s device.

    Binary classification: a 0/1 column (1 = ``classes[1]``); multi-class: one-hot; regression
    (``classes is None``): the values as a column (or the given columns).
    """
    if classes is None:
        y_host = np.asarray(to_host(y), dtype=np.float64)
        Y = y_host.reshape(-1, 1) if y_host.ndim == 1 else y_host
        return _like(np.ascontiguousarray(Y, dtype=dtype), y)
    y_host = to_host(y)
    idx = np.searchsorted(classes, y_host)
    idx = np.clip(idx, 0, len(classes) - 1)
    unknown = classes[idx] != y_host
    if np.any(unknown):
        bad = np.unique(y_host[unknown])[:5]
        raise ValueError(
            f"labels {bad.tolist()} are not among the classes seen in training {classes.tolist()}"
        )
    if len(classes) == 2:
        Y = (idx == 1).astype(dtype).reshape(-1, 1)
    else:
        Y = np.zeros((len(idx), len(classes)), dtype=dtype)
        Y[np.arange(len(idx)), idx] = 1
    return _like(Y, y)


def _like(host: np.ndarray, like: Any) -> Any:
    """``host`` on ``like``'s device (no-op for NumPy)."""
    try:
        xp = namespace(like)
    except TypeError:
        return host
    if xp.__name__.endswith("numpy"):
        return host
    return to_device_of(host, like)


def coalesce_groups(rows: Sequence[int], min_rows: int) -> list[list[int]]:
    """Group consecutive partitions so that every group has at least ``min_rows`` rows.

    Greedy in partition order; a short tail joins the last group. Depends only on ``rows``.

    >>> coalesce_groups([5, 5, 5, 20, 1], 10)
    [[0, 1], [2, 3, 4]]
    """
    groups: list[list[int]] = []
    current: list[int] = []
    count = 0
    for i, n in enumerate(rows):
        current.append(i)
        count += n
        if count >= min_rows:
            groups.append(current)
            current, count = [], 0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


def _concat_raw(*raws: tuple[Any, Any]) -> tuple[Any, Any]:
    xs = [r[0] for r in raws]
    try:
        xp = namespace(*xs)
    except TypeError:  # partitions from CPU and GPU workers: meet on the host, then move
        xs = [to_host(x) for x in xs]
        xp = namespace(*xs)
    X = to_worker_device(xp.concat(xs, axis=0))
    ys = [r[1] for r in raws]
    if ys[0] is None:
        return X, None
    return X, np.concatenate([to_host(y) for y in ys])  # labels are small: host


def _final_block(raw: tuple[Any, Any], classes: np.ndarray | None, dtype: str) -> Block:
    X, y = raw
    # targets follow the features onto their device (labels may have stayed on the host);
    # both own their memory (see backend.owned: client data arrives as misaligned views)
    return Block(X=owned(X), Y=owned(to_device_of(encode_targets(y, classes, dtype), X)))


def _partitions(obj: Any) -> list[Any]:
    """One delayed piece per declared partition (see TECH_NOTES: Parquet column fusion)."""
    import dask.array as da

    if isinstance(obj, da.Array):
        if any(n > 1 for n in obj.numblocks[1:]):
            obj = obj.rechunk({i: -1 for i in range(1, obj.ndim)})
        pieces = obj.to_delayed()
        return [p for p in np.asarray(pieces, dtype=object).reshape(len(obj.chunks[0]), -1)[:, 0]]
    return list(obj.to_delayed())


def _in_memory(a: Any) -> Any:
    """An in-memory array as it is (NumPy, or CuPy, which ``np.asarray`` refuses to copy to the
    host); anything else (lists, ...) as a NumPy array."""
    return a if is_array_api_obj(a) else np.asarray(a)


def _as_dask(X: Any, y: Any, npartitions: int | None) -> tuple[Any, Any]:
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(X, (dd.DataFrame, dd.Series, da.Array)):
        return X, y
    n = npartitions or 1
    if hasattr(X, "iloc"):
        Xd = dd.from_pandas(X, npartitions=n, sort=False)
    else:
        X = _in_memory(X)
        rows = max(1, -(-len(X) // n))
        Xd = da.from_array(X, chunks=(rows,) + (-1,) * (X.ndim - 1))
    if y is None or isinstance(y, (dd.DataFrame, dd.Series, da.Array)):
        return Xd, y
    if hasattr(y, "iloc"):
        yd = dd.from_pandas(y, npartitions=n, sort=False)
    else:
        y = _in_memory(y)
        rows = max(1, -(-len(y) // n))
        yd = da.from_array(y, chunks=(rows,) + ((-1,) if y.ndim == 2 else ()))
    return Xd, yd


def to_blocks(
    client: Any,
    X: Any,
    y: Any = None,
    *,
    classes: Sequence[Any] | None = None,
    classification: bool = False,
    dtype: str = "float32",
    npartitions: int | None = None,
    min_block_rows: int | None = None,
    name: str = "training-block",
    keep_shape: bool = False,
    block_store: str = "memory",
) -> BlockSet:
    """Materialise ``X`` (and targets ``y``) as one :class:`Block` per partition on the workers.

    Parameters
    ----------
    X, y : dask DataFrame/Series/Array (or pandas/NumPy, split into ``npartitions``)
        Same partitioning: partition ``i`` of ``X`` pairs with partition ``i`` of ``y``.
    classes : sequence, optional
        Known class labels (classification). Discovered from the blocks when ``None``.
    classification : bool
        Encode ``y`` as class indicators (True) or regression targets (False).
    min_block_rows : int, optional
        Coalesce consecutive partitions into blocks of at least this many rows (see
        :func:`coalesce_groups`). Many tiny partitions are the usual way Dask training gets
        slow: every block is a task per round. The grouping depends only on the partitions' row
        counts, never on the workers, so the model stays the same whatever the cluster size.
    keep_shape : bool
        Keep X's shape and dtype in the blocks (an array of images ``(N, H, W, C)``, uint8
        pixels): the model's first layers (:class:`pipeline.nn.Rescale`/``Normalize``) turn
        each mini-batch into ``dtype``, so the data set is never copied to floats. Targets are
        still encoded in ``dtype``. ``n_features`` is then the product of the sample axes.
    block_store : {"memory", "disk", "stream", "auto"}
        Where the blocks live between epochs (see :mod:`pipeline.stores`): Dask memory, files on
        the workers' local disks, or nowhere (re-read every epoch). Same bits in every store.

    Returns
    -------
    BlockSet
        Futures in partition order plus row counts, feature/output sizes and ``classes``.
    """
    X, y = _as_dask(X, y, npartitions)
    x_parts = _partitions(X)
    y_parts = _partitions(y) if y is not None else [None] * len(x_parts)
    if len(x_parts) != len(y_parts):
        raise ValueError(
            f"X has {len(x_parts)} partitions but y has {len(y_parts)}: they must be aligned"
        )
    if block_store != "memory":
        if keep_shape:
            raise ValueError("block_store='disk'/'stream' hold 2-D tabular blocks; image "
                             "blocks (keep_shape=True) live in memory")
        from .store_blocks import stored_blocks

        return stored_blocks(
            client, X, y, x_parts, y_parts, block_store=block_store, classes=classes,
            classification=classification, dtype=dtype, min_block_rows=min_block_rows,
            name=name, memory=lambda: to_blocks(
                client, X, y, classes=classes, classification=classification, dtype=dtype,
                min_block_rows=min_block_rows, name=name))
    token = dask.base.tokenize(X, y, dtype, keep_shape)
    from .blocks_declared import declared_rows, planned_blocks  # it builds on this module

    declared = declared_rows(X, y)
    if declared is not None:  # planned on the client and submitted at once
        return planned_blocks(client, x_parts, y_parts, declared, X.shape, classes=classes,
                              classification=classification, dtype=dtype,
                              keep_shape=keep_shape, min_block_rows=min_block_rows, name=name,
                              token=token)
    raw_delayed = [
        dask.delayed(_raw_block, pure=True, name=False)(xp_, yp, dtype, keep_shape,
                                                        dask_key_name=(f"raw-{name}-{token}", i))
        for i, (xp_, yp) in enumerate(zip(x_parts, y_parts, strict=True))
    ]
    raw = client.compute(raw_delayed)
    partitions = raw  # held until the blocks exist: releasing inputs early loses dependencies
    summaries = client.gather(
        client.map(_block_summary, raw, want_labels=classification, key=[
            f"block-summary-{token}-{i}" for i in range(len(raw))
        ])
    )
    rows = [s["rows"] for s in summaries]
    groups, rows, target = plan_blocks(client, rows, min_block_rows, raw)
    placed: set[str] = set()
    if target != [None]:  # pinned while built, then free to be rebuilt anywhere
        placed = {f"coalesce-{name}-{token}-{j}" for j in range(len(groups))}
        placed |= {f"{name}-{token}-{j}" for j in range(len(groups))}

    def pin(j: int) -> list[str] | None:
        return None if target[j] is None else [str(target[j])]

    raw = [
        raw[g[0]] if len(g) == 1 else client.submit(
            _concat_raw, *[raw[i] for i in g], key=f"coalesce-{name}-{token}-{j}",
            workers=pin(j))
        for j, g in enumerate(groups)
    ]
    n_features, cls_arr, n_outputs = target_layout(summaries, rows, y is not None,
                                                   classification, classes)
    futures = [
        client.submit(_final_block, r, classes=cls_arr, dtype=dtype, key=f"{name}-{token}-{i}",
                      workers=pin(i))
        for i, r in enumerate(raw)
    ]
    with client.as_current():  # wait() looks for the current client, not the futures'
        wait(futures)
    if placed:
        release_restrictions(client, sorted(placed))
    del raw, partitions
    return BlockSet(futures, rows, n_features, n_outputs, cls_arr, str(np.dtype(dtype)))


def plan_blocks(client: Any, rows: list[int], min_block_rows: int | None,
                parts: Sequence[Any]) -> tuple[list[list[int]], list[int], list[str | None]]:
    """The blocks of partitions of ``rows`` rows: ``(groups of partition indices, rows per
    block, the worker each block is built on)``. ``parts``: the partitions' futures (or anything
    with their ``key``), asked where they are held.

    One block: the plan is "stay where the read ran" (``[None]``): a task with no restriction
    runs where its inputs are, so there is nothing to ask the scheduler or to release. Else the
    blocks are spread across workers by rows, whatever Dask did with the reads (in a round every
    worker waits for the one with the most rows), one run of consecutive blocks per worker (it
    ships its run's partials folded); a block starts on the worker holding most of its rows.
    Placement never changes the numbers."""
    groups = [[i] for i in range(len(rows))]
    if min_block_rows and len(rows) > 1:
        groups = coalesce_groups(rows, min_block_rows)
    block_rows = [sum(rows[i] for i in g) for g in groups]
    if len(groups) == 1:
        return groups, block_rows, [None]
    current = [max(g, key=lambda i: (rows[i], -i)) for g in groups]
    holders, worker_sets = layout(client, parts)
    return groups, block_rows, list(plan_for_cluster(client, block_rows,
                                                     [holders[i] for i in current], worker_sets))


def split_generator(seed: int, index: int) -> np.random.Generator:
    """The generator of block ``index``'s validation mask (``random(n) < fraction``): drawn in
    row order, so a block's mask is the same whether drawn whole or piece by piece."""
    return np.random.default_rng([seed, index, 7])


def _split_block(block: Block, fraction: float, seed: int, index: int, keep_valid: bool) -> Block:
    if not isinstance(block, Block):  # a disk or stream store's handle: split in that store
        from .store_blocks import split_stored

        return split_stored(block, fraction, seed, index, keep_valid)
    n = block.X.shape[0]
    mask = split_generator(seed, index).random(n) < fraction
    rows = np.flatnonzero(mask if keep_valid else ~mask)
    xp = namespace(block.X)
    idx = xp.asarray(rows, device=device(block.X))
    return Block(xp.take(block.X, idx, axis=0), xp.take(block.Y, idx, axis=0))


def _join_blocks(*blocks: Block) -> Block:
    X = _concat_raw(*[(b.X, None) for b in blocks])[0]
    Y = _concat_raw(*[(b.Y, None) for b in blocks])[0]
    return Block(owned(X), owned(Y))


def join_blocks(client: Any, blocks: BlockSet, name: str = "joined") -> BlockSet:
    """``blocks`` as one block, rows in block order, on one worker (the scheduler's choice:
    the one holding most of them). For small data whose every row one worker should see (a
    deep ensemble's members, :mod:`pipeline.train.members`); the block keeps its lineage, so
    a lost worker's copy is rebuilt from the blocks'."""
    if len(blocks.futures) <= 1:
        return blocks
    if blocks.store != "memory":
        raise ValueError(f"join_blocks joins blocks held in memory, not in a {blocks.store!r} "
                         "store")
    key = f"{name}-{dask.base.tokenize([f.key for f in blocks.futures])}"
    joined = client.submit(_join_blocks, *blocks.futures, key=key)
    with client.as_current():
        wait([joined])
    return blocks._replace(futures=[joined], rows=[blocks.n_samples])


def _split_rows(n: int, fraction: float, seed: int, index: int) -> tuple[int, int]:
    valid = int(np.sum(split_generator(seed, index).random(n) < fraction))
    return n - valid, valid


def split_blocks(client: Any, blocks: BlockSet, fraction: float, seed: int) -> tuple[BlockSet,
                                                                                    BlockSet]:
    """Hold out ``fraction`` of every block's rows for validation, on the block's worker.

    The held-out rows depend only on ``seed`` and the block index, never on the workers.
    """
    idx = list(range(len(blocks.futures)))
    # idx is mapped (positional), not a keyword: client.map passes keywords whole to every call
    train = client.map(_split_block, blocks.futures, [fraction] * len(idx), [seed] * len(idx),
                       idx, [False] * len(idx), key=[f"train-{f.key}" for f in blocks.futures])
    valid = client.map(_split_block, blocks.futures, [fraction] * len(idx), [seed] * len(idx),
                       idx, [True] * len(idx), key=[f"valid-{f.key}" for f in blocks.futures])
    counts = [_split_rows(n, fraction, seed, i) for i, n in enumerate(blocks.rows)]
    with client.as_current():
        wait(train + valid)
    common = (blocks.n_features, blocks.n_outputs, blocks.classes, blocks.dtype, blocks.store,
              blocks.store_id)
    return (
        BlockSet(train, [c[0] for c in counts], *common),
        BlockSet(valid, [c[1] for c in counts], *common),
    )
