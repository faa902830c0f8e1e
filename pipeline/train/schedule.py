"""Which inner steps each local-SGD replica takes in each round.

A replica's steps are numbered across epochs (its *cursor*: local steps taken so far); a step
is ``(epoch, step, global rows)``, the rows every replica's share of that step sums to. With
``balance="none"`` every replica takes the same steps and stops at the epoch's end, so an
epoch's rounds are fixed in advance (:func:`epoch_plan`); ``"throughput"`` lets each replica run
its own count, across epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Schedule", "epoch_plan", "round_schedules"]

Schedule = tuple[tuple[int, int, int], ...]  # a replica's steps in one round


def round_schedules(cursors: list[int], counts: Sequence[int], end: int, steps: int,
                    step_rows: Sequence[int], across_epochs: bool = False) -> list[Schedule]:
    """Each replica's steps in the next round, from its cursor (advanced in place): ``counts``
    steps, stopping at ``end`` (the epoch's last step) unless ``across_epochs``."""
    schedules = []
    for i, c in enumerate(cursors):
        stop = c + counts[i] if across_epochs else min(c + counts[i], end)
        schedules.append(tuple((j // steps, j % steps, step_rows[j % steps])
                               for j in range(c, stop)))
        cursors[i] = stop
    return schedules


def epoch_plan(epoch: int, n_replicas: int, per_round: int, steps: int,
               step_rows: Sequence[int]) -> tuple[list[list[Schedule]], list[list[int]]]:
    """Every round of ``epoch`` when each of ``n_replicas`` takes ``per_round`` steps a round
    (``balance="none"``), from the epoch's start: the rounds' schedules and the cursors after
    each round."""
    end = (epoch + 1) * steps
    cursors = [epoch * steps] * n_replicas
    plan, after = [], []
    while cursors != [end] * n_replicas:
        plan.append(round_schedules(cursors, [per_round] * n_replicas, end, steps, step_rows))
        after.append(list(cursors))
    return plan, after
