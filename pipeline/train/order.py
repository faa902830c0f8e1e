"""Which rows a block visits, in which order: the epoch order every block store shares.

A block's rows are cut into chunks of :data:`EPOCH_CHUNK_ROWS` contiguous rows; an epoch visits
the chunks in an order drawn from ``(seed, block, epoch)`` and the rows inside each chunk in an
order drawn from ``(seed, block, epoch, chunk)`` (:func:`epoch_order`), so a block held in
memory, on disk or re-read from its source (:mod:`pipeline.stores`) trains on the same rows in
the same order. Global step ``s`` of ``steps`` takes rows ``[s n / steps, (s + 1) n / steps)``
of that order (:func:`step_rows`): the mini-batches do not depend on the cluster.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["EPOCH_CHUNK_ROWS", "chunk_bounds", "chunk_permutation", "chunk_sequence",
           "epoch_order", "n_chunks", "span", "step_rows"]

EPOCH_CHUNK_ROWS = 32_768  # rows of one contiguous chunk of the epoch order (see epoch_order)
_SEQUENCE_KEY = 2**32 - 1  # last seed word of the chunks' visiting order

_ORDERS: OrderedDict[tuple[int, int, int], tuple[int, np.ndarray]] = OrderedDict()
_ORDERS_MAX_BYTES = 256 * 2**20  # a worker keeps at most this much of permutations


def n_chunks(n: int) -> int:
    """How many chunks of :data:`EPOCH_CHUNK_ROWS` rows (the last may be shorter) ``n`` rows
    make."""
    return -(-n // EPOCH_CHUNK_ROWS)


def chunk_bounds(n: int, chunk: int) -> tuple[int, int]:
    """Rows ``[a, b)`` of a block of ``n`` rows that chunk ``chunk`` holds (contiguous)."""
    return chunk * EPOCH_CHUNK_ROWS, min((chunk + 1) * EPOCH_CHUNK_ROWS, n)


def chunk_sequence(n: int, seed: int, block: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The order in which block ``block``'s chunks are visited in ``epoch``: a permutation
    drawn from ``(seed, block, epoch, 2**32 - 1)``, a key no chunk's rows use (``0, 1, ...``
    without ``shuffle``)."""
    if not shuffle:
        return np.arange(n_chunks(n))
    return np.random.default_rng([seed, block, epoch, _SEQUENCE_KEY]).permutation(n_chunks(n))


def chunk_permutation(n: int, seed: int, block: int, epoch: int, chunk: int) -> np.ndarray:
    """The order of the rows inside chunk ``chunk`` in ``epoch`` (offsets from the chunk's
    first row): a permutation drawn from ``(seed, block, epoch, chunk)``. (NumPy's seed
    sequences ignore trailing zero words, so chunk 0 draws what ``(seed, block, epoch)`` drew
    before chunks existed: a block of at most one chunk keeps its former order, bit for bit.)"""
    a, b = chunk_bounds(n, chunk)
    order = np.random.default_rng([seed, block, epoch, chunk]).permutation(b - a)
    return order.astype(np.int32)  # a chunk is far below 2**31 rows


def epoch_order(n: int, seed: int, block: int, epoch: int, shuffle: bool) -> np.ndarray | None:
    """Block ``block``'s row order in ``epoch`` (``None``: rows in storage order).

    The order is two-level, so that a block stored on disk or re-read from its source is read
    in large contiguous pieces: the block's rows are cut into chunks of :data:`EPOCH_CHUNK_ROWS`
    contiguous rows, the chunks are visited in the order :func:`chunk_sequence` draws from
    ``(seed, block, epoch)``, and the rows inside each chunk in the order
    :func:`chunk_permutation` draws from ``(seed, block, epoch, chunk)``. Every block store
    (memory, disk, stream; :mod:`pipeline.stores`) visits the same rows in the same order, so
    they give the same bits. A block of at most one chunk gets a full permutation.

    Kept for the current epoch only, one per block and seed (int32 where it fits: 4 bytes per
    row), in a cache bounded by bytes (least recently used first out), so a worker computes it
    once per epoch, not once per round.
    """
    if not shuffle:
        return None
    key = (seed, block, n)
    hit = _ORDERS.get(key)
    if hit is not None and hit[0] == epoch:
        _ORDERS.move_to_end(key)
        return hit[1]
    order = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    pos = 0
    for chunk in chunk_sequence(n, seed, block, epoch, shuffle):
        a, b = chunk_bounds(n, int(chunk))
        order[pos:pos + b - a] = chunk_permutation(n, seed, block, epoch, int(chunk))
        order[pos:pos + b - a] += a
        pos += b - a
    _ORDERS[key] = (epoch, order)
    _ORDERS.move_to_end(key)
    while len(_ORDERS) > 1 and sum(o.nbytes for _, o in _ORDERS.values()) > _ORDERS_MAX_BYTES:
        _ORDERS.popitem(last=False)
    return order


def step_rows(n: int, step: int, steps: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a block's epoch order that belong to global step ``step``."""
    return (step * n) // steps, ((step + 1) * n) // steps


def span(n: int, step: int, steps: int) -> int:
    lo, hi = step_rows(n, step, steps)
    return hi - lo
