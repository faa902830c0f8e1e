"""Where training blocks live: spread across workers by rows, and spread again after changes.

Dask places a partition where its read ran, which can leave one worker with most of the rows:
in a synchronous round every worker waits for the busiest one. :func:`plan_placement` chooses a
worker per block so that rows per worker are as even as whole blocks allow, each worker holding
one run of consecutive blocks (so it ships a few folded subtrees of the reduction tree per round,
not one partial per block), keeping blocks where they are when that is already so;
:func:`rebalance` applies such a plan to a :class:`~pipeline.blocks.BlockSet` on a
running cluster (call it at an epoch boundary, after a worker is lost or joins).

Placement never changes the numbers: blocks keep their positions in the combine tree, and a
moved block is copied into owned, aligned memory, as a block built in place is.
Blocks move only between workers of the same device class (GPU workers, CPU workers).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from .cluster import workers_info

__all__ = [
    "block_workers", "cluster_look", "colocate", "contiguous_runs", "layout", "move_block",
    "place", "plan_for_cluster", "plan_placement", "rebalance", "release_restrictions",
    "worker_groups",
]


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
        vectors per round instead of one per block. Runs go to the workers already holding most
        of their rows; a placement that already is such a split is kept as it is.
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
    """A worker per run, the runs holding most rows on a worker first (fewest rows move)."""
    order = {w: k for k, w in enumerate(workers)}
    here = [dict.fromkeys(workers, 0) for _ in runs]
    for r, run in enumerate(runs):
        for i in run:
            if current[i] in order:
                here[r][str(current[i])] += rows[i]
    pairs = sorted(((r, w) for r in range(len(runs)) for w in workers),
                   key=lambda p: (-here[p[0]][p[1]], p[0], order[p[1]]))
    of_run: dict[int, str] = {}
    taken: set[str] = set()
    for r, w in pairs:
        if r not in of_run and w not in taken:
            of_run[r] = w
            taken.add(w)
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


def worker_groups(client: Any) -> list[list[str]]:
    """Running workers grouped by device class (GPU workers, then CPU workers), sorted."""
    return _device_groups(workers_info(client))


def _device_groups(info: dict[str, Any]) -> list[list[str]]:
    gpu = sorted(w for w, d in info.items() if (d.get("resources") or {}).get("GPU", 0) > 0)
    cpu = sorted(w for w in info if w not in gpu)
    return [g for g in (gpu, cpu) if g]


def block_workers(client: Any, futures: Sequence[Any]) -> list[str | None]:
    """The worker holding each future's data (the first replica), ``None`` if not in memory."""
    who = client.who_has(list(futures))
    return [next(iter(sorted(who.get(f.key) or ())), None) for f in futures]


def cluster_look(client: Any, futures: Sequence[Any]) -> tuple[dict[str, Any], dict[Any, Any]]:
    """The scheduler's workers (address -> info, as :func:`~pipeline.cluster.workers_info`)
    and who holds each future (``who_has``), asked in one round trip."""
    keys = [f.key for f in futures]

    async def both() -> tuple[Any, Any]:
        return await asyncio.gather(client.scheduler.identity(n_workers=-1),
                                    client.scheduler.who_has(keys=keys))

    try:
        identity, who = client.sync(both)
    except TypeError:  # a distributed whose identity() takes no n_workers: ask separately
        return workers_info(client), dict(client.who_has(list(futures)))
    return dict(identity.get("workers") or {}), dict(who)


def layout(client: Any, futures: Sequence[Any]) -> tuple[list[str | None], list[list[str]]]:
    """:func:`block_workers` and :func:`worker_groups` in one scheduler round trip."""
    info, who = cluster_look(client, futures)
    holders = [next(iter(sorted(who.get(f.key) or ())), None) for f in futures]
    return holders, _device_groups(info)


def plan_for_cluster(client: Any, rows: Sequence[int], current: Sequence[str | None],
                     groups: Sequence[Sequence[str]] | None = None) -> list[str]:
    """:func:`plan_placement` per device class of the running workers (``groups``, as
    :func:`worker_groups` returns them; asked of the scheduler when ``None``).

    A block stays within the device class of the worker holding it; blocks held nowhere go
    to the first class (GPU workers if any).
    """
    if groups is None:
        groups = worker_groups(client)
    target = [str(c) for c in current]
    for k, group in enumerate(groups):
        members = [i for i, c in enumerate(current)
                   if c in group or (k == 0 and not any(c in g for g in groups))]
        plan = plan_placement([rows[i] for i in members], [current[i] for i in members], group)
        for i, w in zip(members, plan, strict=True):
            target[i] = w
    return target


def move_block(block: Any) -> Any:
    """``block`` (a NamedTuple of arrays) copied into memory this worker owns.

    Arrays a worker receives are views into message frames, often misaligned, which slows
    row gathers and sends ``matmul`` down a slower, differently rounding loop (TECH_NOTES:
    Memory and the worker process); a block built in place owns aligned memory.
    """
    from .backend import namespace

    def own(a: Any) -> Any:
        if a is None:
            return None
        if isinstance(a, np.ndarray):
            out = np.empty(a.shape, dtype=a.dtype)  # NumPy's allocator aligns
            out[...] = a
            return out
        xp = namespace(a)
        return xp.asarray(a, copy=True)

    if not isinstance(block, tuple):  # a store handle (pipeline.stores): it reads (or
        return block                   # rebuilds from its recipe) its rows wherever it runs
    return type(block)(*(own(a) for a in block))


def rebalance(client: Any, blocks: Any, *, name: str = "placed-block") -> Any:
    """``blocks`` (a :class:`~pipeline.blocks.BlockSet`) spread across the running workers.

    Call it between rounds (at an epoch boundary), e.g. after a worker was lost (its blocks
    were rebuilt wherever Dask chose) or joined (it holds nothing yet). Returns ``blocks``
    itself when nothing needs to move, else a new BlockSet whose moved futures are copies
    placed on their target worker (rebuilt elsewhere from lineage if it is lost), with the
    same rows, in the same order. The caller releases the old futures by dropping them.
    """
    current, groups = layout(client, blocks.futures)
    return place(client, blocks, plan_for_cluster(client, blocks.rows, current, groups),
                 name=name, current=current)


def colocate(client: Any, blocks: Any, units: Sequence[Sequence[int]], *,
             name: str = "colocated-block") -> Any:
    """``blocks`` with every unit's blocks (e.g. a local-SGD replica's) on one worker, units
    spread across the running workers by rows (greedy, largest first; a unit stays where most
    of its rows already are when that worker is among the least loaded)."""
    current, groups = layout(client, blocks.futures)
    workers = sorted(w for group in groups for w in group)
    load = dict.fromkeys(workers, 0)
    target: list[str | None] = list(current)
    order = sorted(range(len(units)), key=lambda u: -sum(blocks.rows[i] for i in units[u]))
    for u in order:
        rows = sum(blocks.rows[i] for i in units[u])
        least = min(load.values())
        here: dict[str, int] = {}
        for i in units[u]:
            if current[i] in load:
                here[current[i]] = here.get(current[i], 0) + blocks.rows[i]
        candidates = [w for w in workers if load[w] == least]
        w = max(candidates, key=lambda c: (here.get(c, 0), -workers.index(c)))
        load[w] += rows
        for i in units[u]:
            target[i] = w
    return place(client, blocks, target, name=name, current=current)


def place(client: Any, blocks: Any, target: Sequence[str | None], *, name: str,
          current: Sequence[str | None] | None = None) -> Any:
    """``blocks`` with block ``i`` moved to worker ``target[i]`` (None: left where it is).
    ``current``: the worker holding each block now, when the caller has just asked."""
    from distributed import wait

    if current is None:
        current = block_workers(client, blocks.futures)
    moves = [i for i, (c, t) in enumerate(zip(current, target, strict=True))
             if t is not None and c != t]
    if not moves:
        return blocks
    tag = uuid.uuid4().hex[:8]
    futures = list(blocks.futures)
    for i in moves:
        futures[i] = client.submit(move_block, blocks.futures[i], key=f"{name}-{tag}-{i}",
                                   workers=[target[i]], allow_other_workers=False)
    with client.as_current():
        wait([futures[i] for i in moves])
    release_restrictions(client, [futures[i].key for i in moves])
    return blocks._replace(futures=futures)


def _loosen(dask_scheduler: Any, keys: list[Any]) -> None:
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        if ts is not None:
            ts.loose_restrictions = True


def release_restrictions(client: Any, keys: Sequence[Any]) -> None:
    """Let Dask recompute ``keys`` on any worker if their pinned worker is lost.

    Placement pins a task to its worker strictly while it runs: with loose restrictions work
    stealing may run it on an idle worker instead (seen with small blocks). Once the data is in
    place the pin only matters for recomputation from lineage, where a strict pin to a lost
    worker would wait forever. ``TaskState.loose_restrictions`` is distributed's own flag for
    ``allow_other_workers=True`` (internal, hence the ``<2027`` pin and the worker-loss test).
    """
    client.run_on_scheduler(_loosen, keys=list(keys))
