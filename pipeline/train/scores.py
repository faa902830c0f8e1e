"""Scoring tasks: per-block loss and accuracy (or squared error) sums, folded in block order,
for validation and ``score`` (no dropout or augmentation, no input gradient)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import namespace, to_host
from ..blocks import Block
from ..nn import Workspace
from ..nn.layers import make_context
from ..reduce import tree_fold
from .tasks import _EVALUATION, _as_block, _in_block_order, workspace_for

__all__ = ["SCORINGS", "ScorePartial", "combine_scores", "fold_scores", "outputs_score",
           "partition_outputs", "partition_score", "partition_scores", "score_value"]



class ScorePartial(NamedTuple):
    n: int
    loss: float
    correct: float  # classification
    sse: np.ndarray  # regression, per output
    sum_y: np.ndarray
    sum_y2: np.ndarray
    nll: float = 0.0  # classification: Σ -log(probability the outputs give the true class)


SCORINGS = ("score", "neg_log_loss")
# the smallest probability the log loss takes (scikit-learn's log_loss clips at its dtype's eps)
_EPS = float(np.finfo(np.float64).eps)


def partition_score(block: Block, params: np.ndarray, model: Any,
                    with_loss: bool = True, workspace: Workspace | None = None) -> ScorePartial:
    """Sums behind accuracy / R² and the mean loss on a validation block (``with_loss=False``:
    loss 0.0, and no forward-and-backward pass for it; the other sums are the same bits).

    ``workspace``: the forward pass's activations go into its buffers (a model whose
    ``forward`` takes a context; the same bits), not into fresh arrays that a worker faults in
    again at every scoring (see :mod:`pipeline.nn.workspace`)."""
    X, Y = _as_block(block)
    n = int(X.shape[0])
    if n == 0:
        zeros = np.zeros(int(Y.shape[1]) if Y.ndim == 2 else 1)
        return ScorePartial(0, 0.0, 0.0, zeros, zeros, zeros)
    rows = getattr(model, "score_rows", None)
    if rows and n > rows:  # a model with large activations (images) scores in slices
        return combine_scores([partition_score(Block(X[a:a + rows], Y[a:a + rows]), params,
                                               model, with_loss, workspace)
                               for a in range(0, n, rows)])
    loss = model.loss_and_grad(params, X, Y, ctx=_EVALUATION)[0] if with_loss else 0.0
    return outputs_score(_forward(model, params, X, workspace), Y, model.loss, float(loss))


def _forward(model: Any, params: Any, X: Any, workspace: Workspace | None) -> Any:
    """The scoring forward pass, its activations in ``workspace``'s buffers if given."""
    if workspace is None:
        return model.forward(params, X)
    return model.forward(params, X, make_context(False, None, workspace, False))


def outputs_score(out: Any, Y: Any, loss_name: str, loss: float = 0.0) -> ScorePartial:
    """The sums of :func:`partition_score` from a block's output activations ``out`` and its
    targets ``Y`` (``loss``: the block's summed loss, if computed)."""
    xp = namespace(out)
    n = int(Y.shape[0])
    k = int(Y.shape[1]) if Y.ndim == 2 else 1
    zeros = np.zeros(k)
    if loss_name == "squared_error":
        r = out - Y
        return ScorePartial(
            n, float(loss), 0.0,
            to_host(xp.sum(r * r, axis=0)).astype(np.float64),
            to_host(xp.sum(Y, axis=0)).astype(np.float64),
            to_host(xp.sum(Y * Y, axis=0)).astype(np.float64),
        )
    if loss_name == "binary_log_loss":
        pred = xp.astype(out[:, 0] > 0.5, Y.dtype)
        correct = xp.sum(xp.astype(pred == Y[:, 0], xp.float64))
    else:
        correct = xp.sum(xp.astype(xp.argmax(out, axis=1) == xp.argmax(Y, axis=1), xp.float64))
    return ScorePartial(n, float(loss), float(to_host(correct)), zeros, zeros, zeros,
                        _nll(out, Y, loss_name))


def _nll(out: Any, Y: Any, loss: str) -> float:
    """Σ over rows of -log(the probability ``out`` gives the row's class), in float64, the
    probabilities clipped to [eps, 1 - eps] (``out``: probabilities, one column for a binary
    model (of class 1), else one per class; ``Y``: 0/1, or one-hot)."""
    xp = namespace(out)
    p = xp.clip(xp.astype(out, xp.float64), _EPS, 1.0 - _EPS)
    y = xp.astype(Y, xp.float64)
    if loss == "binary_log_loss":
        ll = y[:, 0] * xp.log(p[:, 0]) + (1.0 - y[:, 0]) * xp.log(1.0 - p[:, 0])
    else:
        ll = xp.sum(y * xp.log(p), axis=1)
    return -float(to_host(xp.sum(ll)))


def partition_scores(blocks: list[Block], indices: list[int], params: np.ndarray,
                     model: Any, with_loss: bool = True,
                     buffered: bool = False) -> list[tuple[int, ScorePartial]]:
    """:func:`partition_score` of each block; ``buffered``: each block's forward pass in a
    workspace of its own on this worker (kept between calls: for a loop that scores the same
    blocks again and again, with a model whose ``forward`` takes a context)."""
    out = []
    for b, i in zip(blocks, indices, strict=True):
        ws = None
        if buffered:
            b = _as_block(b)  # a store handle loads once, here
            ws = workspace_for(("score", i), b.X)
        out.append((i, partition_score(b, params, model, with_loss, ws)))
    return out


def partition_outputs(blocks: list[Block], params: np.ndarray,
                      model: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per block, ``(outputs at params, targets)`` as host arrays, the forward passes in the
    buffers :func:`partition_scores` (``buffered``) uses for block ``i`` (the same bits),
    copied out of them."""
    out = []
    for i, b in enumerate(blocks):
        X, Y = _as_block(b)
        o = _forward(model, params, X, workspace_for(("score", i), X))
        out.append((np.array(to_host(o), copy=True), to_host(Y)))
    return out


def combine_scores(parts: list[ScorePartial]) -> ScorePartial:
    return ScorePartial(
        sum(p.n for p in parts),
        sum(p.loss for p in parts),
        sum(p.correct for p in parts),
        sum((p.sse for p in parts), np.zeros_like(parts[0].sse)),
        sum((p.sum_y for p in parts), np.zeros_like(parts[0].sum_y)),
        sum((p.sum_y2 for p in parts), np.zeros_like(parts[0].sum_y2)),
        sum(p.nll for p in parts),
    )


def fold_scores(groups: list[list[tuple[int, ScorePartial]]], split_every: int) -> ScorePartial:
    return tree_fold(_in_block_order(groups), combine_scores, split_every=split_every)


def score_value(s: ScorePartial, loss: str, scoring: str = "score") -> float:
    """Accuracy (classification) or mean R² over outputs (regression) from the summed counts;
    ``scoring="neg_log_loss"``: minus the mean log loss for classification (scikit-learn's
    scorer of that name; a proper scoring rule, which moves with every better probability where
    accuracy, on imbalanced classes, can sit at the majority rate), R² for regression (the
    mean squared error's order)."""
    if s.n == 0:
        return float("nan")
    if scoring == "neg_log_loss" and loss != "squared_error":
        return -s.nll / s.n
    if loss == "squared_error":
        ss_tot = s.sum_y2 - s.sum_y**2 / s.n
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - s.sse / ss_tot, np.where(s.sse == 0, 1.0, 0.0))
        return float(np.mean(r2))
    return float(s.correct / s.n)
