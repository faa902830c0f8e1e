"""Epochs a mesh segment runs past the one the client asked for.

When nothing needs the client between epochs (no validation blocks to score, no per-epoch hook
such as a checkpoint), the client's whole part at an epoch's end is the stopping rule
(:mod:`.stopping`), a pure function of the epoch's mean training loss. Every rank of a mesh
holds the same folded round partials, so every rank computes that loss and the rule's verdict
itself and goes on into the next epoch without a new rendezvous (a few tens of ms, as much as a
small dataset's epoch). The client replays the epochs afterwards with the same functions
(:func:`add_round`, :func:`epoch_loss`, the rule): it reaches the same verdicts, and the
parameters have the bits of an epoch-by-epoch run (``tests/test_mesh.py``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .stopping import Progress, StoppingRule
from .tasks import Partial, Rate

__all__ = ["RunAhead", "add_round", "epoch_loss", "epoch_rate"]


def add_round(total: tuple[float, int], part: Partial) -> tuple[float, int]:
    """The epoch's (Σ round loss × rows, rows) after the round ``part``; its ``loss`` is a sum
    over its rows (with each step's penalty)."""
    loss = part.loss / max(part.n, 1)
    return total[0] + loss * part.n, total[1] + part.n


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
    where the run stands before the epoch, and the epoch budget."""

    rule: StoppingRule
    progress: Progress  # after the epochs before this one
    samples_seen: int  # rows trained on before this epoch
    max_epochs: int  # the run ends after this many epochs (``max_iter``)
    scheduled_rate: bool
    learning_rate_init: float

    def after(self, progress: Progress, loss_sum: float, rows: int, samples_seen: int,
              params: Any) -> Progress:
        """``progress`` after an epoch of ``rows`` rows, as the client's loop will find it."""
        return self.rule.update(progress, loss=epoch_loss(loss_sum, rows), score=None,
                                params=params, samples_seen=samples_seen)

    def rate(self, progress: Progress) -> Rate:
        return epoch_rate(progress, self.scheduled_rate, self.learning_rate_init)
