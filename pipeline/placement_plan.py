"""Which worker each block goes to: pure plans over row counts, applied by
:mod:`pipeline.placement`.

The plan gives every worker one run of consecutive block positions with rows per worker as even
as whole blocks allow: a worker then folds its run into a few complete subtrees of the fixed
reduction tree (:func:`pipeline.reduce.tree_fold_owned`) and ships those, not one partial per
block. Placement never changes the numbers (blocks keep their positions in the tree); it only
changes what travels each round.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["contiguous_runs", "plan_placement"]


def plan_placement(rows: Sequence[int], current: Sequence[str | None],
                   workers: Sequence[str]) -> list[str]:
    """A worker per block: runs of consecutive blocks, balancing rows per worker, keeping blocks
    in place where possible.

    Parameters
    ----------
    rows : sequence of int
        Rows of each block.
    current : sequence of str or None
        Worker holding each block now (``None`` or a worker not in ``workers``: not placed).
    workers : sequence of str
        Workers to place on.

    Returns
    -------
    list of str
        Target worker per block. The spread of rows per worker left is at most the largest
        block. Each worker gets one run of consecutive block positions (:func:`contiguous_runs`)
        when such a split is that balanced (always, seen over random row counts; otherwise the
        greedy plan below): a worker then folds its run into a few complete subtrees of the
        fixed reduction tree before shipping its partials (:mod:`pipeline.train.ahead`), a few
        vectors per round instead of one per block. Runs go to the workers so that the most
        rows stay where they are; a placement that already is such a split is kept as it is.
        Deterministic: ties break by run and worker order.

    >>> plan_placement([10] * 4, ["b", "b", "a", "b"], ["a", "b"])
    ['b', 'b', 'a', 'a']
    """
    if not workers:
        return [str(c) for c in current]
    limit = max(rows, default=0)
    if _is_runs(current, workers) and _spread(rows, current, workers) <= limit:
        return [str(c) for c in current]
    runs = contiguous_runs(rows, len(workers))
    loads = [sum(rows[i] for i in run) for run in runs]
    if max(loads) - min(loads) > limit:  # no balanced split into runs found: spread by rows
        return _plan_greedy(rows, current, workers)
    return _assign_runs(rows, current, workers, runs)


def contiguous_runs(rows: Sequence[int], n: int) -> list[range]:
    """``n`` runs of consecutive block positions (some maybe empty) that cover ``rows``: the
    most rows in a run as few as any split allows, then the fewest as many as possible.

    Exact: binary searches over the bounds, each bound checked by the cut positions reachable
    run by run (``O(n * blocks * log(rows))``). Depends only on ``rows`` and ``n``.

    >>> contiguous_runs([5, 5, 5, 5, 5, 5, 5], 3)
    [range(0, 3), range(3, 5), range(5, 7)]
    """
    prefix = np.concatenate([[0], np.cumsum(np.asarray(rows, dtype=np.int64))])
    total = int(prefix[-1])
    lo_max = max(-(-total // n), int(max(rows, default=0)))
    hi_max = total
    while lo_max < hi_max:  # the smallest feasible largest run
        mid = (lo_max + hi_max) // 2
        if _reachable(prefix, n, 0, mid)[-1][-1]:
            hi_max = mid
        else:
            lo_max = mid + 1
    top = lo_max
    lo_min, hi_min = 0, top
    while lo_min < hi_min:  # then the largest feasible smallest run
        mid = (lo_min + hi_min + 1) // 2
        if _reachable(prefix, n, mid, top)[-1][-1]:
            lo_min = mid
        else:
            hi_min = mid - 1
    reach = _reachable(prefix, n, lo_min, top)
    cuts = [len(rows)]
    for k in range(n - 1, 0, -1):  # back from the end: the latest cut that the run allows
        end = prefix[cuts[-1]]
        ok = np.flatnonzero(reach[k] & (prefix >= end - top) & (prefix <= end - lo_min))
        cuts.append(int(ok[ok <= cuts[-1]][-1]))
    cuts.append(0)
    cuts.reverse()
    return [range(cuts[k], cuts[k + 1]) for k in range(n)]


def _reachable(prefix: np.ndarray, n: int, low: int, high: int) -> list[np.ndarray]:
    """``reach[k][j]``: positions ``0..j`` split into ``k`` runs of ``low..high`` rows each."""
    size = len(prefix)
    reach = [np.zeros(size, dtype=bool)]
    reach[0][0] = True
    for _ in range(n):
        at = np.flatnonzero(reach[-1])
        starts = prefix[at]
        # a run ends at or after its start (blocks of 0 rows share a prefix)
        first = np.maximum(np.searchsorted(prefix, starts + low, side="left"), at)
        last = np.searchsorted(prefix, starts + high, side="right")  # exclusive
        step = np.zeros(size + 1, dtype=np.int64)
        np.add.at(step, first, 1)
        np.add.at(step, last, -1)
        nxt = np.cumsum(step[:-1]) > 0
        reach.append(nxt)
    return reach


def _is_runs(current: Sequence[str | None], workers: Sequence[str]) -> bool:
    """Every block on one of ``workers``, each worker's blocks one run of positions."""
    known = set(workers)
    seen: set[Any] = set()
    for i, w in enumerate(current):
        if w not in known:
            return False
        if w in seen and current[i - 1] != w:
            return False
        seen.add(w)
    return True


def _spread(rows: Sequence[int], target: Sequence[str | None], workers: Sequence[str]) -> int:
    load = dict.fromkeys(workers, 0)
    for r, w in zip(rows, target, strict=True):
        load[str(w)] += r
    return max(load.values()) - min(load.values())


def _assign_runs(rows: Sequence[int], current: Sequence[str | None], workers: Sequence[str],
                 runs: Sequence[range]) -> list[str]:
    """A worker per run keeping the most rows where they are: every assignment tried for up
    to 7 workers (the first best in lexicographic order), else runs holding most rows on a
    worker first."""
    order = {w: k for k, w in enumerate(workers)}
    here = np.zeros((len(runs), len(workers)), dtype=np.int64)  # rows of run r on worker w
    for r, run in enumerate(runs):
        for i in run:
            if current[i] in order:
                here[r, order[str(current[i])]] += rows[i]
    if len(workers) <= 7:
        perms = np.array(list(itertools.permutations(range(len(workers)))), dtype=np.intp)
        kept = here[np.arange(len(runs)), perms].sum(axis=1)
        of_run = [workers[k] for k in perms[int(np.argmax(kept))]]
    else:
        pairs = sorted(((r, k) for r in range(len(runs)) for k in range(len(workers))),
                       key=lambda p: (-here[p], p))
        chosen: dict[int, str] = {}
        taken: set[int] = set()
        for r, k in pairs:
            if r not in chosen and k not in taken:
                chosen[r] = workers[k]
                taken.add(k)
        of_run = [chosen[r] for r in range(len(runs))]
    target = [""] * len(rows)
    for r, run in enumerate(runs):
        for i in run:
            target[i] = of_run[r]
    return target


def _plan_greedy(rows: Sequence[int], current: Sequence[str | None],
                 workers: Sequence[str]) -> list[str]:
    """Blocks not placed go to the least loaded worker, largest first; then a block moves from
    the most to the least loaded worker while that narrows their gap (each move lowers the sum
    of squared loads, so this ends). The spread left is less than the largest block; a
    balanced placement is kept; ties break by worker order."""
    order = {w: k for k, w in enumerate(workers)}
    load = dict.fromkeys(workers, 0)
    target: list[str | None] = [c if c in order else None for c in current]
    for i, w in enumerate(target):
        if w is not None:
            load[w] += rows[i]
    for i in sorted((i for i, w in enumerate(target) if w is None), key=lambda i: -rows[i]):
        w = min(workers, key=lambda w: (load[w], order[w]))
        target[i] = w
        load[w] += rows[i]
    while True:
        hi = max(workers, key=lambda w: (load[w], -order[w]))
        lo = min(workers, key=lambda w: (load[w], order[w]))
        gap = load[hi] - load[lo]
        movable = [i for i, w in enumerate(target) if w == hi and 0 < rows[i] < gap]
        if not movable:
            break
        i = min(movable, key=lambda i: (abs(gap - 2 * rows[i]), i))
        target[i] = lo
        load[hi] -= rows[i]
        load[lo] += rows[i]
    return [str(w) for w in target]
