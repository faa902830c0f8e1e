"""Global magnitude pruning of a fitted MLP, and the mask that keeps pruned weights at zero.

:func:`prune` zeroes the ``round(sparsity * n_weights)`` weights of smallest magnitude over all
layers at once (biases are never pruned) and returns the boolean mask of the kept parameters,
over the model's flat parameter buffer (:mod:`pipeline.nn` layout).

Keeping the pruned weights at zero while training goes on is an optimizer concern:
:func:`masked` wraps any :class:`pipeline.optim.GradientTransformation` so that the gradient
and the update are zero wherever the mask is False. A weight that starts at zero then stays
*exactly* zero, whatever the optimizer (Adam's moments stay zero there, SGD's velocity too),
and the L2 penalty's gradient ``alpha * W / n`` is zero at a zero weight. This is what the
training core needs to accept (an optimizer object, or a ``keep_mask`` transformation chained
after it) to fine-tune with a fixed mask inside every step, on every block.

Until the trainer takes an optimizer object, :func:`fine_tune` fine-tunes through the
estimator's public ``partial_fit`` (one epoch per call) and projects the parameters back onto
the mask after each epoch: pruned weights move during an epoch and are reset at its end, so
the model is exactly as sparse as asked after every epoch, but the epoch itself is not a masked
optimizer step.

Gradual pruning (:func:`prune_gradually`) interleaves the two: the sparsity rises epoch by epoch
on Zhu & Gupta's cubic schedule, each epoch training with the current mask.

Example
-------
>>> mask = prune(model, 0.8)                     # doctest: +SKIP
>>> history = fine_tune(model, X, y, mask, epochs=3, validation_data=(Xv, yv))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import nn, optim

__all__ = ["cubic_sparsity", "fine_tune", "keep_mask", "masked", "prune", "prune_gradually",
           "sparsity", "weight_positions"]


def weight_positions(spec: nn.MLPSpec) -> np.ndarray:
    """Boolean ``(n_params,)``: True at the weights ``W`` of every layer, False at biases."""
    out = np.zeros(spec.n_params, dtype=bool)
    for s in spec.layout():
        out[s.w_start : s.w_stop] = True
    return out


def sparsity(spec: nn.MLPSpec, params: Any) -> float:
    """Fraction of the weights (not biases) that are exactly zero."""
    w = np.asarray(params)[weight_positions(spec)]
    return float(np.count_nonzero(w == 0)) / w.size


def _set_params(model: Any, params: np.ndarray) -> None:
    """Replace a fitted estimator's parameters (and the views ``coefs_``/``intercepts_``)."""
    model.params_ = params
    layers = nn.unpack(model.spec_, params)
    model.coefs_ = [np.asarray(W) for W, _ in layers]
    model.intercepts_ = [np.asarray(b) for _, b in layers]


def prune(model: Any, sparsity: float) -> np.ndarray:
    """Zero the ``round(sparsity * n_weights)`` smallest-magnitude weights of a fitted MLP
    (globally over layers; ties broken by position) and return the kept-parameter mask.

    Parameters
    ----------
    model : fitted ``MLPClassifier`` or ``MLPRegressor``
        Modified in place: ``params_``, ``coefs_`` and ``intercepts_`` are replaced (already
        zero weights count as pruned first, so pruning twice to the same sparsity is a no-op).
    sparsity : float in [0, 1)

    Returns
    -------
    mask : ndarray of bool, shape (n_params,)
        True where a parameter is kept (every bias, the largest weights), in the flat layout of
        ``model.params_``.
    """
    if not hasattr(model, "params_") or not hasattr(model, "spec_"):
        raise ValueError(f"{type(model).__name__} is not fitted: call fit first")
    if isinstance(sparsity, bool) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    params = np.array(model.params_, copy=True)
    weights = weight_positions(model.spec_)
    index = np.flatnonzero(weights)
    n_prune = round(float(sparsity) * index.size)
    # Stable sort on |w|: equal magnitudes are pruned in position order, so the count is exact.
    order = np.argsort(np.abs(params[index]), kind="stable")
    mask = np.ones(params.shape, dtype=bool)
    mask[index[order[:n_prune]]] = False
    params[~mask] = 0
    _set_params(model, params)
    return mask


# The optimizer wrappers live with the optimizers; re-exported here where pruning uses them.
keep_mask = optim.keep_mask
masked = optim.masked


def fine_tune(model: Any, X: Any, y: Any, mask: np.ndarray, *, epochs: int = 1,
              validation_data: tuple[Any, Any] | None = None,
              client: Any = None) -> list[dict[str, float]]:
    """Train a pruned model ``epochs`` more epochs on the cluster with its mask fixed.

    Each epoch is one ``model.partial_fit(X, y)`` (the estimator's own data-parallel training,
    continuing its optimizer state) whose optimizer is wrapped in :func:`pipeline.optim.masked`:
    pruned weights see zero gradients and get zero updates, in the synchronous step and in every
    local step, so they stay exactly zero. Returns one record per
    epoch: ``epoch``, ``sparsity`` (of the weights) and, with ``validation_data``, ``score``
    (``model.score``: accuracy or R², computed on the workers).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != np.shape(model.params_):
        raise ValueError(f"mask has shape {mask.shape}, the model has "
                         f"{np.shape(model.params_)} parameters")
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    history = []
    kwargs = {"client": client} if client is not None else {}
    # The optimizer of every fine-tuning epoch ends with optim.keep_mask(mask): pruned weights
    # get zero updates in the synchronous step and in every local step, so they stay exactly 0.
    params = np.where(mask, model.params_, 0).astype(model.params_.dtype)
    _set_params(model, params)
    model._fixed_mask = mask
    # fresh optimizer states: momentum carried over from the unpruned training would move the
    # pruned weights (the outer Nesterov velocity of local SGD, for one)
    model.train_state_ = None
    try:
        for epoch in range(1, epochs + 1):
            if hasattr(model, "classes_"):
                model.partial_fit(X, y, classes=model.classes_, **kwargs)
            else:
                model.partial_fit(X, y, **kwargs)
            record = {"epoch": epoch, "sparsity": sparsity(model.spec_, model.params_)}
            if validation_data is not None:
                record["score"] = float(model.score(*validation_data))
            history.append(record)
    finally:
        del model._fixed_mask
    return history



def cubic_sparsity(final: float, step: int, ramp: int) -> float:
    """Sparsity after ``step`` of ``ramp`` pruning steps on the cubic schedule of Zhu & Gupta
    (2017), "To prune, or not to prune": ``final * (1 - (1 - step / ramp) ** 3)``, ``final``
    from ``step >= ramp`` on. Most weights go early, while the network can still recover;
    the last steps remove few."""
    if ramp < 1 or step < 0:
        raise ValueError(f"need ramp >= 1 and step >= 0, got ramp={ramp!r}, step={step!r}")
    return float(final) * (1.0 - (1.0 - min(step, ramp) / ramp) ** 3)


def prune_gradually(model: Any, X: Any, y: Any, sparsity: float, *, epochs: int,
                    ramp_epochs: int | None = None,
                    validation_data: tuple[Any, Any] | None = None,
                    client: Any = None) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Gradual magnitude pruning of a fitted MLP while it trains ``epochs`` more epochs.

    Before epoch ``e`` (1-based) the weights are pruned (:func:`prune`, global magnitude) to
    :func:`cubic_sparsity` ``(sparsity, e, ramp_epochs)``, then the epoch trains with that mask
    fixed (:func:`fine_tune`); weights pruned once stay pruned. ``ramp_epochs`` defaults to
    about two thirds of ``epochs`` (at least 1), so the last third fine-tunes at the final
    sparsity, as in Zhu & Gupta's schedule.

    Returns ``(mask, history)``: the final kept-parameter mask and one :func:`fine_tune` record
    per epoch (``epoch`` counts from 1 over the whole run).
    """
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    ramp = max(1, -(-2 * epochs // 3)) if ramp_epochs is None else int(ramp_epochs)
    if not 1 <= ramp <= epochs:
        raise ValueError(f"ramp_epochs must be in [1, epochs={epochs}], got {ramp_epochs!r}")
    history: list[dict[str, float]] = []
    mask = np.ones(np.shape(model.params_), dtype=bool)
    for epoch in range(1, epochs + 1):
        mask = prune(model, cubic_sparsity(sparsity, epoch, ramp))
        (record,) = fine_tune(model, X, y, mask, epochs=1, validation_data=validation_data,
                              client=client)
        history.append({**record, "epoch": epoch})
    return mask, history
