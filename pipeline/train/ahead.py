"""Worker tasks of pipelined exact-gradient rounds (``sync="gradient"``, ``rounds_ahead > 1``).

A round is one task per worker, ``step_and_partition_grads``: it folds the previous round's
partials of *every* worker, applies the optimizer step to its own replica of the parameters and
optimizer state, then computes the partials of the blocks it holds at the new parameters. Every
worker runs the same fold (the fixed tree of block positions) and the same step on the same
inputs, so the replicas are equal bit for bit, and equal to what one ``combine_grads_and_step``
task (or the client, one round at a time) computes. A round is then one hop (report, dispatch,
fetch the other workers' partials) instead of two (gradients → step task → gradients).

Each worker folds the subtrees of the tree whose blocks it holds all by itself
(:func:`pipeline.reduce.tree_fold_owned`) before shipping, so contiguous blocks cost one
transfer per worker instead of one per block.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import optim
from ..backend import namespace
from ..reduce import Node, tree_fold_nodes, tree_fold_owned
from .tasks import (
    Partial,
    Rate,
    StepState,
    _host_partial,
    _worker_address,
    check_finite,
    combine_grads,
    gradient_step,
    partition_grad,
)

__all__ = ["RoundOut", "last_step", "round_metrics", "step_and_partition_grads"]


class Packed(NamedTuple):
    """A worker's folded nodes with their vectors stacked into one array: one buffer to
    serialise and ship instead of one per block (the values, hence the fold's bits, are the
    same)."""

    places: list[tuple[int, int]]  # (level, index) of each node
    losses: list[float]
    rows: list[int]
    timings: list[tuple[Any, ...]]
    vectors: Any  # (nodes, n_params), the nodes' vectors in ``places`` order

    @classmethod
    def of(cls, nodes: list[Node]) -> Packed:
        if not nodes:
            return cls([], [], [], [], None)
        vectors = [p.vector for _, _, p in nodes]
        xp = namespace(*vectors)
        return cls([(d, i) for d, i, _ in nodes], [p.loss for _, _, p in nodes],
                   [p.n for _, _, p in nodes], [p.timings for _, _, p in nodes],
                   xp.stack(vectors))

    def nodes(self) -> list[Node]:
        return [(d, i, Partial(loss, self.vectors[k, ...], n, timings))
                for k, ((d, i), loss, n, timings) in enumerate(
                    zip(self.places, self.losses, self.rows, self.timings, strict=True))]


class RoundOut(NamedTuple):
    """What one worker's pipelined round leaves for the next round's tasks."""

    state: StepState  # the parameters this round's gradients were taken at, and how they came
    packed: Packed  # this worker's partials, complete subtrees folded


class StepArgs(NamedTuple):
    """The fixed inputs of every round's step (shipped with the tasks)."""

    model: Any
    optimizer: optim.GradientTransformation
    alpha: float
    learning_rate: Rate
    n_blocks: int
    split_every: int


def _step(outs: list[RoundOut], own: int, args: StepArgs, round_no: int) -> StepState:
    """The fold of every worker's nodes, then the optimizer update of replica ``own``."""
    part = _host_partial(tree_fold_nodes([n for o in outs for n in o.packed.nodes()],
                                         args.n_blocks,
                                         combine_grads, split_every=args.split_every))
    check_finite(part, round_no, "loss or gradient")
    prev = outs[own].state
    params, opt_state, loss = gradient_step(part, prev.params, prev.opt_state, args.model,
                                            args.optimizer, args.alpha, args.learning_rate)
    return StepState(params, opt_state, loss, part.n, part.timings)


def step_and_partition_grads(prev: StepState | list[RoundOut], own: int, args: StepArgs,
                             round_no: int, blocks: list[Any], indices: list[int], epoch: int,
                             step: int, steps: int, seed: int, shuffle: bool) -> RoundOut:
    """Round ``step`` on one worker: the step of the previous round (``prev``: every worker's
    :class:`RoundOut` of it; the epoch's starting :class:`StepState` in its first round), then
    the partials of ``blocks`` (positions ``indices``) at the new parameters, subtrees folded."""
    state = prev if isinstance(prev, StepState) else _step(prev, own, args, round_no - 1)
    where = _worker_address()
    # no copy of each gradient out of its block's workspace: the fold below sums them into new
    # arrays and Packed.of stacks the nodes it ships (a copy either way)
    parts = [(i, partition_grad(b, state.params, args.model, i, epoch, step, steps, seed,
                                shuffle, worker=where, copy=False))
             for b, i in zip(blocks, indices, strict=True)]
    return RoundOut(state, Packed.of(tree_fold_owned(parts, args.n_blocks, combine_grads,
                                                     split_every=args.split_every)))


def last_step(outs: list[RoundOut], args: StepArgs, round_no: int) -> StepState:
    """The epoch's last optimizer step, on the last round's partials."""
    return _step(outs, 0, args, round_no)


def round_metrics(outs: list[RoundOut | StepState]) -> list[tuple[float, int, tuple[Any, ...]]]:
    """The few numbers the client gathers per pipelined round: loss, rows and timings of each
    round whose step produced one of ``outs``' states (one task and one fetch per graph)."""
    states = [o.state if isinstance(o, RoundOut) else o for o in outs]
    return [(s.round_loss, s.n, s.timings) for s in states]
