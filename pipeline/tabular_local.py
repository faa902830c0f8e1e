"""A small pandas frame's preprocessing and blocks, computed where the frame is: in the client.

A tabular fit of a dask DataFrame learns its preprocessing and builds its blocks in tasks on the
workers (:mod:`pipeline.tabular_base`). A pandas frame is already in the client's memory; for
small data (the rows that independent members each hold a copy of) shipping it to the workers
to compute a few statistics, bringing them back, and then building, finishing and splitting the
blocks in a chain of tasks costs a dozen scheduler round trips around ~50 ms of work (on
hotel_rates' 12,321 rows the members' training started 0.21-0.24 s into a fit whose epochs take
~0.08 s; built here, 0.08 s: ``benchmarks/probe_fit_phases.py``). Here the same functions run in the same order on the same partitions (dask's own, from
``dd.from_pandas``), so the blocks are the same bits; the finished blocks then go to every
worker at once (``scatter(broadcast=True)``): each member's worker holds them, as the members
need. A known gap: scattered blocks have no lineage, and the scheduler's active memory manager
(on by default) may drop the extra copies once no task waits on them, so a worker lost with
the last copy fails the fit instead of rerunning its member elsewhere (a dask frame's blocks
are rebuilt from their tasks).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import dask
import numpy as np

from .blocks import (
    BlockSet,
    _block_summary,
    _concat_raw,
    _final_block,
    _join_blocks,
    _raw_block,
    _split_block,
    _split_rows,
    coalesce_groups,
    target_layout,
)
from .tabular_blocks import _block_stats, _finish_block, _strip_weights

__all__ = ["LocalBlocks", "local_blocks"]


class LocalBlocks(NamedTuple):
    """What the fit's distributed steps give it, from :func:`local_blocks`."""

    blocks: BlockSet  # the training blocks (joined into one when asked), on every worker
    valid: BlockSet | None  # the held-out blocks, or None without early stopping
    target: tuple[float, float] | None  # the regression target's mean and scale
    class_weights: np.ndarray | None
    n_blocks: int  # blocks before the split and the join (the fit's n_partitions)


def partitions(frame: Any, npartitions: int) -> list[Any]:
    """``frame``'s partitions as ``dd.from_pandas(frame, npartitions, sort=False)`` makes them
    (its row split, its dtypes: strings converted as dask converts them), computed here. One
    partition is the frame with dask's own string conversion applied, without building and
    running its graph (~6 against ~22 ms on 12,321 rows)."""
    import dask.dataframe as dd

    if npartitions == 1:
        from dask.dataframe._pyarrow import to_pyarrow_string
        from dask.dataframe.utils import pyarrow_strings_enabled

        return [to_pyarrow_string(frame) if pyarrow_strings_enabled() else frame.copy()]
    ddf = dd.from_pandas(frame, npartitions=npartitions, sort=False)
    return list(dask.compute(*ddf.to_delayed(), scheduler="sync"))


def local_blocks(client: Any, parts: list[Any], features: list[Any], prep: Any, *,
                 label: str, weight: str | None, classification: bool,
                 min_block_rows: int | None, weighting: Any, needs_stats: bool,
                 early: bool, fraction: float, seed: int, join: bool) -> LocalBlocks:
    """The blocks a fit builds from ``parts`` (pandas partitions with the ``label`` and, if
    given, ``weight`` columns), by the functions of its tasks in their order: ``prep`` (fitted
    on them, :meth:`~pipeline.tabular_prep.TabularPreprocessor.fit_partitions`) applied, the raw
    blocks coalesced to ``min_block_rows`` and encoded, the loss statistics summed and the
    blocks finished, then split (``fraction`` held out with ``seed``) and joined, then sent to
    every worker.

    The estimator's choices: ``needs_stats`` (finish the blocks, with ``weighting(stats,
    classes)`` giving ``(target, class_weights, weight_scale)``), ``early`` (hold out rows),
    ``join`` (the training blocks into one).
    """
    raws, summaries = [], []
    for p in parts:
        Xt = prep.transform(p[features])
        if weight is not None:
            Xt = Xt.assign(**{weight: p[weight].astype("float32")})
        raw = _raw_block(Xt, p[label], "float32", False)
        raws.append(raw)
        summaries.append(_block_summary(raw, classification))
    rows = [s["rows"] for s in summaries]
    groups = coalesce_groups(rows, min_block_rows) if min_block_rows and len(rows) > 1 \
        else [[i] for i in range(len(rows))]
    block_rows = [sum(rows[i] for i in g) for g in groups]
    n_features, classes, n_outputs = target_layout(summaries, block_rows, True,
                                                    classification, None)
    blocks = [_final_block(raws[g[0]] if len(g) == 1 else _concat_raw(*[raws[i] for i in g]),
                           classes, "float32") for g in groups]
    weighted = weight is not None
    target, class_weights = None, None
    if needs_stats:
        n_classes = None if classes is None else len(classes)
        stats = np.sum([_block_stats(b, weighted, n_classes) for b in blocks], axis=0)
        target, class_weights, weight_scale = weighting(stats, classes)
        blocks = [_finish_block(b, weighted, class_weights, weight_scale, target)
                  for b in blocks]
    n_features -= 1 if weighted else 0
    valid = None
    if early:
        counts = [_split_rows(n, fraction, seed, i) for i, n in enumerate(block_rows)]
        valid = [_split_block(b, fraction, seed, i, True) for i, b in enumerate(blocks)]
        blocks = [_split_block(b, fraction, seed, i, False) for i, b in enumerate(blocks)]
        if weighted or class_weights is not None:
            valid = [_strip_weights(b, n_outputs) for b in valid]
        train_rows, valid_rows = [c[0] for c in counts], [c[1] for c in counts]
    else:
        train_rows, valid_rows = block_rows, []
    if join and len(blocks) > 1:
        blocks, train_rows = [_join_blocks(*blocks)], [sum(train_rows)]
    # (hash=False: keys of their own, never another fit's blocks of the same values)
    futures = client.scatter(blocks + (valid or []), broadcast=True, hash=False)
    common = (n_features, n_outputs, classes, "float32")
    return LocalBlocks(
        BlockSet(futures[:len(blocks)], train_rows, *common),
        None if valid is None else BlockSet(futures[len(blocks):], valid_rows, *common),
        target, class_weights, len(groups))
