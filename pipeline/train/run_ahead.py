"""Epochs a mesh segment runs past the one the client asked for.

When nothing needs the client between epochs (no per-epoch hook such as a checkpoint), the
client's part at an epoch's end is to score the validation blocks and apply the stopping rule
(:mod:`.stopping`), a pure function of the epoch's mean training loss and validation score.
Every rank of a mesh holds the same folded round partials, so every rank computes that loss;
each scores its share of the validation blocks and the ranks all-gather the score partials,
folded by block position as the client's scoring round folds them (:func:`fold_scores`). So
every rank reaches the rule's verdict itself and goes on into the next epoch without a new
rendezvous (a few tens of ms, as much as a small dataset's epoch) and without a scoring round.
The client replays the epochs afterwards with the same functions (:func:`add_round`,
:func:`epoch_loss`, the rule) on the ranks' scores: it reaches the same verdicts, and the
parameters have the bits of an epoch-by-epoch run (``tests/test_run_ahead.py``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .scores import fold_scores, partition_scores, score_value
from .stopping import Progress, StoppingRule
from .tasks import Partial, Rate

__all__ = ["Ahead", "EpochsAhead", "RankEpochs", "RunAhead", "add_mean", "add_round", "epoch_loss",
           "epoch_rate"]


def add_mean(total: tuple[float, int], loss: float, rows: int) -> tuple[float, int]:
    """The epoch's (Σ round loss × rows, rows) after a round of ``rows`` rows and mean loss
    ``loss``."""
    return total[0] + loss * rows, total[1] + rows


def add_round(total: tuple[float, int], part: Partial) -> tuple[float, int]:
    """:func:`add_mean` for a local-SGD round, whose ``loss`` is a sum over its rows (with each
    step's penalty)."""
    return add_mean(total, part.loss / max(part.n, 1), part.n)


def epoch_loss(loss_sum: float, rows: int) -> float:
    """The epoch's mean training loss, as the loss curve records it."""
    return loss_sum / max(rows, 1)


def epoch_rate(progress: Progress, scheduled_rate: bool, learning_rate_init: float) -> Rate:
    """The rate an epoch runs with: the stopping rule's learning rate, or, for an optimizer
    that follows its own schedule, that rate as a multiple of the initial one."""
    if scheduled_rate:
        return Rate(progress.learning_rate / learning_rate_init, as_scale=True)
    return Rate(progress.learning_rate)


class RunAhead(NamedTuple):
    """What a strategy needs to go on past an epoch without the client: the stopping rule,
    where the run stands before the epoch, the epoch budget and the validation blocks."""

    rule: StoppingRule
    progress: Progress  # after the epochs before this one
    samples_seen: int  # rows trained on before this epoch
    max_epochs: int  # the run ends after this many epochs (``max_iter``)
    scheduled_rate: bool
    learning_rate_init: float
    validation: Any = None  # the validation BlockSet (client); whether there is one (ranks)
    keep_bytes: int = 64 << 20  # a segment ends once its epochs' parameters take this much

    def shipped(self) -> RunAhead:
        """This, for the ranks: their validation blocks travel as task inputs, not in here."""
        return self._replace(validation=self.validation is not None)

    def after(self, progress: Progress, loss_sum: float, rows: int, samples_seen: int,
              params: Any, score: float | None = None) -> Progress:
        """``progress`` (its average already taken, :meth:`StoppingRule.average`) after an
        epoch of ``rows`` rows judged by ``params``, as the client's loop will find it."""
        return self.rule.update(progress, loss=epoch_loss(loss_sum, rows), score=score,
                                params=params, samples_seen=samples_seen)

    def rate(self, progress: Progress) -> Rate:
        return epoch_rate(progress, self.scheduled_rate, self.learning_rate_init)


class RankEpochs:
    """A rank's side of running ahead: the running epoch's (Σ round loss × rows, rows), where
    the run stands, and for every epoch the segment finished, ``(rounds of the segment by
    then, parameters then, validation score)`` (what :meth:`EpochsAhead.keep` gets back).
    Without ``run`` (no running ahead) it only counts the epoch's loss."""

    def __init__(self, run: RunAhead | None, epoch: int, so_far: tuple[float, int]) -> None:
        self.run, self.epoch, self.total = run, epoch, so_far
        self.progress = run.progress if run is not None else None
        self.seen = run.samples_seen if run is not None else 0
        self.ends: list[tuple[int, Any, float | None]] = []

    def end_epoch(self, mesh: Any, scoring: list[tuple[int, Any]], rounds_done: int,
                  params: Any, model: Any, split_every: int, stop: bool) -> bool:
        """The client's end-of-epoch rule, here on every rank alike: the validation score
        (this rank's ``scoring`` blocks, ``(position, block)``, scored and all-gathered over
        ``mesh``), the run's progress; whether the segment goes on into the next epoch (not
        when rank 0 ended it (``stop``), the rule stopped the run, its epochs are done, or the
        epochs' parameters, which rank 0 ships to the client, take ``keep_bytes``: every rank
        decides alike, from the same sizes)."""
        run = self.run
        assert run is not None and self.progress is not None
        self.seen += self.total[1]
        score = None
        progress, judged = run.rule.average(self.progress, params)
        if run.validation:
            # the score needs the outputs only: no loss (a forward and backward pass) here
            parts = partition_scores([b for _, b in scoring], [i for i, _ in scoring], judged,
                                     model, False)
            score = score_value(fold_scores(mesh.allgather(parts), split_every), model.loss,
                                run.rule.scoring)
        self.progress = run.after(progress, *self.total, self.seen, judged, score)
        self.epoch, self.total = self.epoch + 1, (0.0, 0)
        self.ends.append((rounds_done, params, score))
        full = len(self.ends) * int(params.nbytes) >= run.keep_bytes
        return not (stop or self.progress.stopped or self.epoch >= run.max_epochs or full)

    def rate(self) -> Rate:
        """The next epoch's rate."""
        assert self.run is not None and self.progress is not None
        return self.run.rate(self.progress)


class Ahead(NamedTuple):
    """An epoch (or its first rounds) a mesh segment ran past the one it was started for."""

    epoch: int
    rounds: list[tuple[Partial, float]]  # (round partial without its vector, seconds)
    params: Any  # at the epoch's end, or at the segment's end when not ``complete``
    complete: bool
    score: float | None = None  # the validation score at the epoch's end


class EpochsAhead:
    """What a strategy's last mesh segment ran past the epoch it was started for, handed out
    one epoch a call. ``end_state``: the optimizer state(s) at the segment's end, the state of
    the last epoch handed out (an epoch before it carries only its parameters: running ahead
    needs no per-epoch hook, so no one sees its state)."""

    def __init__(self) -> None:
        self.epochs: list[Ahead] = []
        self.end_state: Any = None

    def ran(self, epoch: int) -> bool:
        """Whether the segment ran ``epoch``, or its first rounds."""
        return bool(self.epochs) and self.epochs[0].epoch == epoch

    def take(self, epoch: int) -> Ahead:
        done = self.epochs.pop(0)
        if done.epoch != epoch:
            raise RuntimeError(f"epoch {epoch} asked for, but the mesh ran epoch {done.epoch} "
                               "ahead")
        return done

    def keep(self, epoch: int, parts: list[tuple[Partial, float]],
             ends: list[tuple[int, Any, float | None]], params: Any, end_state: Any) -> float:
        """Keep the epochs after ``epoch`` that a segment ran (``ends``: for every epoch that
        ended in it, the segment's rounds by then, the parameters and the validation score
        then; ``params``, ``end_state``: the segment's end); the seconds of their rounds."""
        cuts = [at for at, _, _ in ends]
        self.epochs = [Ahead(epoch + i, parts[cuts[i - 1]:cuts[i]], ends[i][1], True,
                             ends[i][2]) for i in range(1, len(ends))]
        if cuts[-1] < len(parts):  # the segment ended inside an epoch
            self.epochs.append(Ahead(epoch + len(ends), parts[cuts[-1]:], params, False))
        self.end_state = end_state
        return sum(seconds for a in self.epochs for _, seconds in a.rounds)
