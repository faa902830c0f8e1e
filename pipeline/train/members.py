"""Independent members trained at once: ``k`` runs of :func:`pipeline.train.train` on the same
blocks, one per worker, as a deep ensemble's networks are trained (each its own weights, seed,
gradient clipping and early stopping; :class:`pipeline.nn.IndependentMembers` averages them).

A one-block run is one task (:mod:`pipeline.train.fused`) on one worker; a ``k``-member
ensemble sharing its input encoding (:class:`pipeline.nn.EnsembleSequential`) is that task
doing ``k`` members' arithmetic while the other workers idle. Independent members are ``k``
such tasks: :func:`train_members` starts the runs together and asks for a different worker
for each (the worker holding the block first; the block travels to the others, a copy of the
data, small by construction), so the ensemble trains in about the time of one member.

Runs may carry per-epoch hooks (checkpoints); then they are not fused and go round by round,
still concurrently. The runs share nothing, so their results do not depend on where or in
what order they ran.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..cluster import workers_info
from .core import TrainResult, train

__all__ = ["ensemble_score", "member_seeds", "member_workers", "train_members"]


def member_seeds(seed: int, k: int) -> list[int]:
    """Member ``i``'s seed: ``seed`` itself for the first (one member is the plain run), then
    independent draws of :class:`numpy.random.SeedSequence` children of ``seed``."""
    import numpy as np

    children = np.random.SeedSequence(seed).spawn(max(k - 1, 0))
    return [int(seed)] + [int(c.generate_state(1)[0] % 2**31) for c in children]


def member_workers(client: Any, block: Any, k: int) -> list[str]:
    """A worker address for each of ``k`` members: the workers holding ``block`` first, then
    the rest in address order, round robin."""
    workers = sorted(workers_info(client))  # (fetched now, not the client's cached identity)
    if not workers:
        raise RuntimeError("the cluster has no workers")
    holders = sorted(client.who_has([block]).get(block.key, ()))
    order = [w for w in holders if w in workers] + [w for w in workers if w not in holders]
    return [order[i % len(order)] for i in range(k)]


def train_members(client: Any, blocks: Any, runs: list[dict[str, Any]],
                  **common: Any) -> list[TrainResult]:
    """``train(client, blocks, **common, **runs[i])`` for every ``i`` at once, each asked onto
    its own worker (:func:`member_workers`); results in the runs' order. The first failure is
    raised once every run has ended."""
    if len(runs) <= 1:  # (one run: wherever the scheduler puts it, as train() alone)
        return [train(client, blocks, **common, **run) for run in runs]
    where = member_workers(client, blocks.futures[0], len(runs))
    with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="member") as pool:
        futures = [pool.submit(train, client, blocks, workers=[w], **common, **run)
                   for run, w in zip(runs, where, strict=True)]
        return [f.result() for f in futures]


def ensemble_score(client: Any, blocks: Any, params: Any, model: Any, scoring: str,
                   results: list[TrainResult] | None = None) -> float:
    """The validation score (``scoring``, as early stopping reads it) of the whole ensemble
    ``model`` (:class:`pipeline.nn.IndependentMembers`) at ``params`` on ``blocks``: each
    member stopped on its own score, so the ensemble's is computed once at the end.

    When every member's run ``results`` brought back its outputs on the validation blocks
    (``train(valid_outputs=True)``, a fused run), the ensemble's are their mean, summed member
    by member as :meth:`IndependentMembers.forward` sums them, and no scoring round runs
    (one round trip and a forward pass of every member on a worker, 20-60 ms of a small fit);
    otherwise a scoring round computes them."""
    from .scores import fold_scores, outputs_score, score_value

    if results and all(r.valid_outputs is not None for r in results):
        from ..nn.ensemble import member_mean

        parts = [(i, outputs_score(member_mean(out for out, _ in block), block[0][1],
                                   model.loss))
                 for i, block in enumerate(zip(*(r.valid_outputs for r in results),
                                               strict=True))]
        return score_value(fold_scores([parts], 8), model.loss, scoring)
    import uuid

    from .rounds import Rounds

    rounds = Rounds(client, blocks, model, split_every=8,
                    run_id=f"members-score-{uuid.uuid4().hex[:8]}")
    return score_value(rounds.score(blocks, params, "members", with_loss=False), model.loss,
                       scoring)
