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
from .placement_plan import contiguous_runs, plan_placement

__all__ = [
    "block_workers", "cluster_look", "colocate", "contiguous_runs", "device_groups",
    "first_holders", "layout", "move_block", "place", "plan_for_cluster", "plan_placement",
    "rebalance", "release_restrictions", "worker_groups",
]


def worker_groups(client: Any) -> list[list[str]]:
    """Running workers grouped by device class (GPU workers, then CPU workers), sorted."""
    return device_groups(workers_info(client))


def device_groups(info: dict[str, Any]) -> list[list[str]]:
    """The workers of ``info`` (address -> scheduler info) as :func:`worker_groups` groups them."""
    gpu = sorted(w for w, d in info.items() if (d.get("resources") or {}).get("GPU", 0) > 0)
    cpu = sorted(w for w in info if w not in gpu)
    return [g for g in (gpu, cpu) if g]


def block_workers(client: Any, futures: Sequence[Any]) -> list[str | None]:
    """The worker holding each future's data (the first replica), ``None`` if not in memory."""
    who = client.who_has(list(futures))
    return first_holders(who, [f.key for f in futures])


def first_holders(who: Any, keys: Sequence[Any]) -> list[str | None]:
    """For each key, the first of the workers ``who`` (a ``who_has`` answer) says hold it."""
    return [next(iter(sorted(who.get(k) or ())), None) for k in keys]


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
    return first_holders(who, [f.key for f in futures]), device_groups(info)


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
             name: str = "colocated-block",
             look: tuple[list[str | None], list[list[str]]] | None = None) -> Any:
    """``blocks`` with every unit's blocks (e.g. a local-SGD replica's) on one worker, units
    spread across the running workers by rows (greedy, largest first; a unit stays where most
    of its rows already are when that worker is among the least loaded). ``look``: what
    :func:`layout` would answer, when the caller has just asked."""
    current, groups = look if look is not None else layout(client, blocks.futures)
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
    stuck = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        if ts is not None:
            ts.loose_restrictions = True
            if ts.state == "no-worker":  # pinned to a worker that left: it may run now
                stuck[key] = "processing"  # (what the scheduler does when a worker joins)
    if stuck:
        dask_scheduler.transitions(stuck, stimulus_id=f"pipeline-loosen-{uuid.uuid4().hex}")


def release_restrictions(client: Any, keys: Sequence[Any]) -> None:
    """Let Dask recompute ``keys`` on any worker if their pinned worker is lost.

    Placement pins a task to its worker strictly while it runs: with loose restrictions work
    stealing may run it on an idle worker instead (seen with small blocks). Once the data is in
    place the pin only matters for recomputation from lineage, where a strict pin to a lost
    worker would wait forever. ``TaskState.loose_restrictions`` is distributed's own flag for
    ``allow_other_workers=True`` (internal, hence the ``<2027`` pin and the worker-loss test).
    A task already waiting for its lost worker (``no-worker``) is sent to another at once.
    """
    client.run_on_scheduler(_loosen, keys=list(keys))
