"""Losses, per row, from the raw network output ``z``, with scikit-learn's names.

Each loss fixes the output activation (as in scikit-learn's MLPs) and is computed from ``z``
directly, so it stays finite where probabilities round to 0 or 1. For all three,
``d(row loss)/dz = p - y`` with ``p`` the output activation of ``z``: the output layer's
backward is the same subtraction whatever the loss.
"""

from __future__ import annotations

from typing import Any

from .. import backend as bk
from ..backend import namespace
from .layers import logistic
from .workspace import Workspace

__all__ = ["LOSSES", "Loss", "get_loss"]

Array = Any


class Loss:
    """``name``, the output activation, and ``(row losses, dLoss/dz)`` from ``z``."""

    name: str
    out_activation: str

    def output(self, z: Array) -> Array:
        """Network outputs (probabilities or predictions) from raw outputs ``z``."""
        raise NotImplementedError

    def row_loss_and_delta(self, z: Array, y: Array,
                           ws: Workspace | None = None) -> tuple[Array, Array]:
        """Loss of each row, shape ``(n,)``, and ``p - y``, shape of ``z``; in ``ws``'s
        buffers when given (valid until the next call with it)."""
        raise NotImplementedError


def _buffers(ws: Workspace | None, z: Array) -> tuple[Any, ...]:
    """Two ``z``-shaped scratch buffers, a delta buffer and a row buffer (or ``None``s)."""
    if ws is None:
        return None, None, None, None
    n = z.shape[0]
    return (ws.get("a", tuple(z.shape), z), ws.get("b", tuple(z.shape), z),
            ws.get("delta", tuple(z.shape), z), ws.get("row", (n,), z))


class BinaryLogLoss(Loss):
    """Σ_k softplus(z_k) - y_k z_k  (= -y log p - (1 - y) log(1 - p)), p = logistic(z):
    one independent probability per output (binary or multilabel)."""

    name, out_activation = "binary_log_loss", "logistic"

    def output(self, z: Array) -> Array:
        return logistic(z)

    def row_loss_and_delta(self, z: Array, y: Array,
                           ws: Workspace | None = None) -> tuple[Array, Array]:
        a, b, delta, row = _buffers(ws, z)
        e = bk.elementwise("negative", bk.elementwise("abs", z, out=a), out=a)
        log_term = bk.elementwise("log1p", bk.elementwise("exp", e, out=a), out=a)
        softplus = bk.elementwise("add", bk.elementwise("maximum", z, 0.0, out=b), log_term,
                                  out=b)
        terms = bk.elementwise("subtract", softplus, bk.elementwise("multiply", y, z, out=a),
                               out=b)
        loss = bk.reduce("sum", terms, axis=1, out=row)
        return loss, bk.elementwise("subtract", logistic(z, out=delta), y, out=delta)


class LogLoss(Loss):
    """logsumexp(z) - Σ_k y_k z_k  (= -Σ_k y_k log p_k for one-hot y), p = softmax(z):
    multiclass."""

    name, out_activation = "log_loss", "softmax"

    def output(self, z: Array) -> Array:
        xp = namespace(z)
        e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)

    def row_loss_and_delta(self, z: Array, y: Array,
                           ws: Workspace | None = None) -> tuple[Array, Array]:
        a, b, delta, row = _buffers(ws, z)
        n = z.shape[0]
        col = None if ws is None else ws.get("col", (n, 1), z)
        col2 = None if ws is None else ws.get("col2", (n, 1), z)
        row2 = None if ws is None else ws.get("row2", (n,), z)
        m = bk.reduce("max", z, axis=1, keepdims=True, out=col)
        s = bk.elementwise("subtract", z, m, out=a)
        e = bk.elementwise("exp", s, out=delta)
        se = bk.reduce("sum", e, axis=1, keepdims=True, out=col2)
        # logsumexp(z) - y·z = log Σ e^s - y·s + m (1 - Σ y); written with s it has no
        # cancellation between two large numbers for one-hot y.
        loss = bk.elementwise("log", se[:, 0], out=row)
        ys = bk.reduce("sum", bk.elementwise("multiply", y, s, out=b), axis=1, out=row2)
        loss = bk.elementwise("subtract", loss, ys, out=row)
        sy = bk.elementwise("subtract", 1.0, bk.reduce("sum", y, axis=1, out=row2), out=row2)
        loss = bk.elementwise("add", loss, bk.elementwise("multiply", m[:, 0], sy, out=row2),
                              out=row)
        p = bk.elementwise("divide", e, se, out=delta)
        return loss, bk.elementwise("subtract", p, y, out=delta)


class SquaredError(Loss):
    """½ Σ_k (z_k - y_k)², p = z: regression."""

    name, out_activation = "squared_error", "identity"

    def output(self, z: Array) -> Array:
        return z

    def row_loss_and_delta(self, z: Array, y: Array,
                           ws: Workspace | None = None) -> tuple[Array, Array]:
        _, b, delta, row = _buffers(ws, z)
        r = bk.elementwise("subtract", z, y, out=delta)  # = p - y, as p = z
        total = bk.reduce("sum", bk.elementwise("multiply", r, r, out=b), axis=1, out=row)
        return bk.elementwise("multiply", 0.5, total, out=row), r


LOSSES: dict[str, Loss] = {loss.name: loss for loss in (BinaryLogLoss(), LogLoss(),
                                                         SquaredError())}


def get_loss(name: str) -> Loss:
    """The loss called ``name`` (one of :data:`LOSSES`)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {name!r}") from None
