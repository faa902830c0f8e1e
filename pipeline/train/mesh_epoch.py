"""An exact-gradient epoch as one task per worker, rounds exchanged over a socket mesh.

``mesh_epoch`` runs on each worker holding blocks and does, round after round, what the
pipelined rounds of :mod:`pipeline.train.ahead` do one task at a time: the partials of its
blocks at the current parameters (complete subtrees folded), an all-gather of every worker's
partials over the mesh (:mod:`pipeline.train.mesh`), the fold of all of them by the fixed tree of
block positions, and the optimizer step on its own replica of the parameters. The functions and
their order are those of ``step_and_partition_grads``, so every replica has the same bits as a
pipelined epoch, a one-round-at-a-time epoch, or one process (``tests/test_mesh.py``). Dask sees
one task per worker per epoch (``mesh_epoch-<token>`` on the dashboard) instead of one per round:
a round costs its compute plus a direct exchange, not a scheduler hop.

:func:`run_mesh_epoch` is the client's side: listeners on the workers, the epoch tasks pinned to
the workers holding their blocks, and the first error (a peer's :class:`~.mesh.MeshBroken`
when a worker dies) raised at once, for the caller to redo the epoch through Dask.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import dask
from dask.utils import parse_timedelta

from .ahead import RoundOut, StepArgs, _step, step_and_partition_grads
from .mesh import Mesh, MeshBroken, abort, listen, mesh_capable
from .recovery import DISRUPTIONS
from .tasks import Partial, StepState

__all__ = ["MeshBroken", "cancelled_on_error", "mesh_epoch", "mesh_usable", "run_mesh_epoch"]


class MeshResult(NamedTuple):
    """Rank 0's end of the epoch (the other ranks hold the same bits and return ``None``s)."""

    state: StepState | None
    metrics: list[tuple[float, int, tuple[Any, ...], float]] | None  # per round


def mesh_epoch(blocks: list[Any], indices: list[int], rank: int,
               addresses: list[tuple[str, int] | None], key: str, token: bytes,
               args: StepArgs, start: StepState, round_no: int, epoch: int, steps: int,
               seed: int, shuffle: bool, timeout: float) -> MeshResult:
    """Every round of an exact-gradient epoch on this worker's ``blocks`` (positions
    ``indices``), as rank ``rank`` of the mesh."""
    state = start
    metrics = []
    with Mesh(key, rank, addresses, token, timeout) as mesh:
        for step in range(steps):
            began = time.perf_counter()
            out = step_and_partition_grads(state, rank, args, round_no + step, blocks, indices,
                                           epoch, step, steps, seed, shuffle)
            packs = mesh.allgather(out.packed)
            outs = [RoundOut(state, p) if j == rank else RoundOut(None, p)
                    for j, p in enumerate(packs)]
            state = _step(outs, rank, args, round_no + step)
            metrics.append((state.round_loss, state.n, state.timings,
                            time.perf_counter() - began))
    return MeshResult(state, metrics) if rank == 0 else MeshResult(None, None)


@contextlib.contextmanager
def cancelled_on_error(client: Any, futures: list[Any], key: str,
                       workers: list[str]) -> Iterator[None]:
    """Cancel a mesh epoch's ``futures`` when waiting for them fails, and break the mesh
    ``key`` on the workers still there (a rank may be waiting for a peer whose worker died
    before its task started). A disruption is raised as a :class:`MeshBroken` naming the
    mesh's ``workers`` that are gone (a peer's end-of-file is all its rank saw)."""
    try:
        yield
    except BaseException as exc:
        client.cancel(futures)
        from ..cluster import workers_info

        alive = frozenset(workers_info(client))
        with contextlib.suppress(Exception):
            client.run(abort, key, workers=sorted(alive & frozenset(workers)))
        if not isinstance(exc, (MeshBroken, *DISRUPTIONS)):
            raise
        gone = frozenset(workers) - alive
        broken = MeshBroken(f"{type(exc).__name__}: {exc}; worker(s) "
                            f"{', '.join(sorted(gone))} lost" if gone else str(exc))
        broken.lost = gone
        raise broken from exc


def mesh_usable(workers: list[str]) -> bool:
    """Whether an epoch over blocks held by ``workers`` may run on a mesh: plain-TCP workers,
    and ``pipeline.train.mesh`` (dask config, default True) not turned off."""
    return bool(workers) and bool(dask.config.get("pipeline.train.mesh", True)) and all(
        mesh_capable(w) for w in workers)


def run_mesh_epoch(rounds: Any, params: Any, opt_state: Any, step_args: tuple[Any, ...],
                   epoch: int, steps: int, round_no: int, seed: int, shuffle: bool
                   ) -> tuple[Any, Any, list[tuple[Partial, float]]]:
    """The client's side of one mesh epoch over ``rounds``' blocks (a :class:`~.rounds.Rounds`):
    ``(params, opt_state, [(round partial without its vector, seconds), ...])`` like
    :meth:`~.rounds.Rounds.pipelined_epoch`."""
    client = rounds.client
    started = time.perf_counter()
    futures = rounds.block_keys
    groups, workers = rounds.groups_and_workers(futures)
    args = StepArgs(rounds.model, *step_args, len(futures), rounds.split_every)
    token = rounds._token("mesh", epoch)
    key = f"mesh-{token}"
    secret = os.urandom(16)
    timeout = parse_timedelta(dask.config.get("pipeline.train.mesh-timeout", "300s"))
    # every rank but the last accepts connections from the ranks above it
    listening = [client.submit(listen, key, key=f"mesh_listen-{token}-{j}", workers=[w],
                               allow_other_workers=False, pure=False)
                 for j, w in enumerate(workers[:-1])]
    with cancelled_on_error(client, listening, key, workers):
        addresses: list[Any] = [*(rounds.watchdog.gather(listening, "the mesh's listeners",
                                                         needs=workers)
                                  if listening else []), None]
    start = StepState(params, opt_state, 0.0, 0, ())
    tasks = [client.submit(mesh_epoch, [futures[i] for i in idx], idx, j, addresses, key, secret,
                           args, start, round_no, epoch, steps, seed, shuffle, timeout,
                           key=f"mesh_epoch-{token}-{j}", workers=[workers[j]],
                           allow_other_workers=False, pure=False)
             for j, idx in enumerate(groups)]
    with cancelled_on_error(client, tasks + listening, key, workers):
        rounds.watchdog.wait(tasks, f"epoch {epoch} (mesh)", first_error=True, needs=workers)
        (result,) = rounds.watchdog.gather(tasks[:1], f"epoch {epoch} (mesh)")
    rounds.round += steps
    out = [(Partial(loss, None, n, timings), seconds)
           for loss, n, timings, seconds in result.metrics]
    rounds.observe_epoch([out[0][0]], started)  # blocks rebuilt elsewhere: a worker was lost
    return result.state.params, result.state.opt_state, out
