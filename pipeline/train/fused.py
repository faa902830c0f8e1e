"""Every epoch of a one-block local-SGD run in one task (``train(..., fuse_epochs=True)``).

With one block, ``sync="average"`` is sequential mini-batch training: a round is one task that
runs an epoch's steps, and the client's part is to add the change, score the validation blocks
and apply the stopping rule. On small data that part costs more than the epoch: two rounds and
a few scheduler round trips per epoch (``benchmarks/where_time_goes.md``, tabular section).
:func:`fused_epochs` runs the same functions in the same order inside one task on the block's
worker (the local steps, the fold, the parameter update, the validation fold, the stopping
rule), so the parameters are the same bits as the round-by-round loop's; the client then
replays the per-epoch events and history. The round trips that remain are one per fit.

:func:`can_fuse` says when the loop may be fused: one block, ``LocalSGD`` without replicas,
balancing, outer momentum or an outer rate, each round a whole epoch, and no per-epoch hook
(checkpoints need the client between epochs).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from .. import events
from ..backend import to_host
from .local_steps import fold_local, partitions_local_steps
from .order import span
from .scores import fold_scores, partition_outputs, partition_scores, score_value
from .stopping import Progress, StoppingRule
from .strategies import LocalSGD
from .tasks import Partial, Rate, check_finite

__all__ = ["EpochRecord", "FusedResult", "Replayed", "can_fuse", "fused_epochs", "replay"]


def can_fuse(strategy: Any, n_blocks: int, local_steps: int | None,
             on_epoch_end: Any) -> bool:
    """Whether :func:`fused_epochs` reproduces the round-by-round loop for this run."""
    return (isinstance(strategy, LocalSGD) and n_blocks == 1 and strategy.replicas is None
            and strategy.balance == "none" and strategy.outer_momentum == 0.0
            and strategy.outer_learning_rate == 1.0 and local_steps is None
            and on_epoch_end is None)


class EpochRecord(NamedTuple):
    part: Partial  # the round's partial, without its vector (events)
    loss: float  # mean training loss of the epoch
    score: float | None  # validation score
    learning_rate: float  # the rate the epoch ran with
    seconds: float  # the epoch on the worker (steps, update, scoring)
    round_seconds: float  # its local steps


class FusedResult(NamedTuple):
    params: np.ndarray
    local_state: Any  # the block's inner optimizer state, host arrays
    progress: Progress
    cursor: int  # local steps the block has taken
    records: list[EpochRecord]
    # (valid_outputs=True) per validation block, the output activations of the parameters the
    # run ends with and the block's targets, host arrays
    valid_outputs: list[tuple[np.ndarray, np.ndarray]] | None = None


def fused_epochs(block: Any, valid_blocks: list[Any], params: np.ndarray, local_state: Any,
                 model: Any, optimizer: Any, alpha: float, n_rows: int, steps: int,
                 rule: StoppingRule, progress: Progress, scheduled_rate: bool,
                 learning_rate_init: float, first_epoch: int, max_iter: int, round_no: int,
                 t: int, seed: int, shuffle: bool, split_every: int,
                 valid_outputs: bool = False) -> FusedResult:
    """Epochs ``first_epoch .. max_iter - 1`` (or until the rule stops) of local SGD on one
    block, with validation scoring and the stopping rule after each, as
    :func:`pipeline.train.core._train_epochs` drives :class:`LocalSGD` and
    :meth:`pipeline.train.rounds.Rounds.score` round by round. ``valid_outputs``: also the
    validation blocks' outputs at the parameters the run ends with (a deep ensemble's members
    return theirs, so the ensemble is scored without another round,
    :func:`pipeline.train.members.ensemble_score`)."""
    step_rows = [span(n_rows, s, steps) for s in range(steps)]
    valid_idx = list(range(len(valid_blocks)))
    records: list[EpochRecord] = []
    epoch, cursor = first_epoch, first_epoch * steps
    while epoch < max_iter:
        e0 = time.perf_counter()
        lr = (Rate(progress.learning_rate / learning_rate_init, as_scale=True)
              if scheduled_rate else Rate(progress.learning_rate))
        schedule = tuple((j // steps, j % steps, step_rows[j % steps])
                         for j in range(cursor, (epoch + 1) * steps))
        cursor = (epoch + 1) * steps
        out = fold_local([partitions_local_steps([block], [0], params, [local_state], model,
                                                 optimizer, alpha, lr, [schedule], steps,
                                                 seed, shuffle)], split_every)
        part, local_state = out.partial, out.states[0]
        round_seconds = time.perf_counter() - e0
        if part.n == 0:
            raise RuntimeError(f"round {round_no + 1} trained on no rows: the block holds "
                               f"fewer rows than its BlockSet says ({n_rows})")
        check_finite(part, round_no, "loss or parameter update")
        m = max(part.n, 1)
        params = params + (to_host(part.vector) / float(m)).astype(params.dtype)
        round_no += 1
        loss = (part.loss / m) * part.n / max(part.n, 1)
        epoch += 1
        t += part.n
        score = None
        progress, judged = rule.average(progress, params)
        if valid_blocks:
            # the score needs the outputs only: no loss (a forward and backward pass) here
            # the validation blocks are scored every epoch: their activations in buffers
            score = score_value(fold_scores([partition_scores(valid_blocks, valid_idx, judged,
                                                              model, False, buffered=True)],
                                            split_every), model.loss, rule.scoring)
        rate = progress.learning_rate
        progress = rule.update(progress, loss=loss, score=score, params=judged, samples_seen=t)
        records.append(EpochRecord(part._replace(vector=None), loss, score, rate,
                                   time.perf_counter() - e0, round_seconds))
        if progress.stopped:
            break
    outputs = None
    if valid_outputs and valid_blocks:
        outputs = partition_outputs(valid_blocks, rule.final(progress, params), model)
    return FusedResult(params, local_state, progress, cursor, records, outputs)


class Replayed(NamedTuple):
    loss_curve: list[float]
    validation_scores: list[float]
    history: list[dict[str, Any]]
    t: int  # samples seen
    rounds: int
    epoch: int


def replay(client: Any, run_id: str, records: list[EpochRecord], steps: int,
           loss_curve: list[float], validation_scores: list[float],
           history: list[dict[str, Any]], t: int, round_no: int, epoch: int) -> Replayed:
    """The loss curve, scores and history a fused run's ``records`` extend the given ones to,
    as the round-by-round loop builds them; their ``round`` and ``epoch`` events are
    published in one scheduler round trip (:func:`pipeline.events.emit_many`) instead of two
    per epoch."""
    loss_curve, validation_scores, history = (list(loss_curve), list(validation_scores),
                                              list(history))
    msgs: list[dict[str, Any]] = []
    for rec in records:
        round_no += 1
        epoch += 1
        t += rec.part.n
        loss_curve.append(rec.loss)
        if rec.score is not None:
            validation_scores.append(rec.score)
        msgs.append(events.round_message(run_id, **events.round_fields(
            round_no, epoch, rec.part, rec.round_seconds, rec.part.loss / max(rec.part.n, 1))))
        record = {
            "epoch": epoch, "loss": rec.loss, "validation_score": rec.score,
            "samples_per_s": rec.part.n / rec.seconds if rec.seconds > 0 else None,
            "seconds": rec.seconds, "learning_rate": rec.learning_rate, "rounds": 1,
            "round_seconds_median": rec.round_seconds, "local_steps": [steps],
        }
        history.append(record)
        msgs.append(events.epoch_message(run_id, round=round_no, **record))
    events.emit_many(client, msgs)
    return Replayed(loss_curve, validation_scores, history, t, round_no, epoch)
