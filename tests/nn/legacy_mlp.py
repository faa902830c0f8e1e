"""Multi-layer perceptron math on one flat parameter buffer.

A model is an :class:`MLPSpec` (layer sizes, hidden activation, loss) plus a 1-D array ``flat``
holding every parameter. Layer ``i`` occupies ``W_i`` (``fan_in * fan_out`` values, row-major
``(fan_in, fan_out)``) followed by ``b_i`` (``fan_out`` values); layers follow each other in
order. A flat buffer is one message to ship, one array to reduce and one array to checkpoint.

Everything here is a pure function of its arguments and namespace-clean: the arrays decide
whether NumPy, CuPy or any other array-API library does the work, and new arrays are created on
the input's device. Losses and activations use scikit-learn's names and conventions, so a
model's ``coefs_``/``intercepts_`` copied from ``sklearn.neural_network`` give the same outputs.

Example
-------
>>> import numpy as np
>>> spec = MLPSpec((3, 8, 2), activation="tanh", loss="log_loss")
>>> flat = init_params(spec, random_state=0)
>>> X = np.ones((5, 3), dtype=np.float32)
>>> Y = np.eye(2, dtype=np.float32)[[0, 1, 1, 0, 1]]
>>> loss, grad = loss_and_grad(spec, flat, X, Y)
>>> forward(spec, flat, X).shape, grad.shape == flat.shape
((5, 2), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import device

from pipeline.backend import aligned, namespace

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "LayerSlice",
    "MLPSpec",
    "decision_function",
    "forward",
    "init_params",
    "l2_penalty",
    "loss_and_grad",
    "unpack",
]

Array = Any

ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
LOSSES = ("binary_log_loss", "log_loss", "squared_error")

# The output activation is fixed by the loss, as in scikit-learn's MLPs.
_OUT_ACTIVATION = {
    "binary_log_loss": "logistic",
    "log_loss": "softmax",
    "squared_error": "identity",
}


class LayerSlice(NamedTuple):
    """Where one layer's parameters sit in the flat buffer (half-open ``[start, stop)``)."""

    w_start: int
    w_stop: int
    w_shape: tuple[int, int]  # (fan_in, fan_out), stored row-major
    b_start: int
    b_stop: int


@dataclass(frozen=True)
class MLPSpec:
    """Architecture of a fully connected network.

    Parameters
    ----------
    layer_sizes : tuple of int
        ``(n_features, *hidden_layer_sizes, n_outputs)``. With no hidden layer the model is
        linear (``squared_error``) or logistic/softmax regression.
    activation : str
        Hidden-layer activation, one of :data:`ACTIVATIONS`.
    loss : str
        One of :data:`LOSSES`. It fixes the output activation: logistic for
        ``binary_log_loss`` (one independent probability per output, binary or multilabel),
        softmax for ``log_loss`` (multiclass, at least two outputs), identity for
        ``squared_error``.
    """

    layer_sizes: tuple[int, ...]
    activation: str = "relu"
    loss: str = "log_loss"

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.layer_sizes)
        object.__setattr__(self, "layer_sizes", sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"layer_sizes needs at least (n_features, n_outputs), got {self.layer_sizes!r}"
            )
        if any(s < 1 for s in sizes):
            raise ValueError(f"every layer size must be >= 1, got {sizes!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.loss == "log_loss" and sizes[-1] < 2:
            # A softmax over one output is constantly 1: the model could never learn.
            raise ValueError(
                "loss='log_loss' (softmax) needs at least 2 outputs; "
                "use loss='binary_log_loss' for a single binary target"
            )

    @property
    def n_features(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    @property
    def out_activation(self) -> str:
        """``"logistic"``, ``"softmax"`` or ``"identity"``, from :attr:`loss`."""
        return _OUT_ACTIVATION[self.loss]

    @property
    def n_params(self) -> int:
        """Length of the flat parameter buffer."""
        return sum((fan_in + 1) * fan_out for fan_in, fan_out in self._fans())

    def _fans(self) -> list[tuple[int, int]]:
        return list(pairwise(self.layer_sizes))

    def layout(self) -> list[LayerSlice]:
        """One :class:`LayerSlice` per layer, input layer first."""
        slices = []
        offset = 0
        for fan_in, fan_out in self._fans():
            w_stop = offset + fan_in * fan_out
            b_stop = w_stop + fan_out
            slices.append(LayerSlice(offset, w_stop, (fan_in, fan_out), w_stop, b_stop))
            offset = b_stop
        return slices


def init_params(spec: MLPSpec, random_state: Any = None, dtype: Any = np.float32) -> np.ndarray:
    """A fresh host NumPy flat buffer, Glorot-uniform as scikit-learn's ``_init_coef``.

    Each layer draws ``W`` then ``b`` from ``uniform(-bound, bound)`` with
    ``bound = sqrt(factor / (fan_in + fan_out))``, ``factor`` 2 for logistic hidden units and 6
    otherwise. ``random_state`` is an int, ``None`` or a ``numpy.random.Generator`` (which is
    advanced). Draws are float64, then cast to ``dtype``.
    """
    rng = np.random.default_rng(random_state)
    factor = 2.0 if spec.activation == "logistic" else 6.0
    pieces = []
    for fan_in, fan_out in spec._fans():
        bound = math.sqrt(factor / (fan_in + fan_out))
        pieces.append(rng.uniform(-bound, bound, (fan_in, fan_out)).ravel())
        pieces.append(rng.uniform(-bound, bound, fan_out))
    return np.concatenate(pieces).astype(dtype, copy=False)


def unpack(spec: MLPSpec, flat: Array) -> list[tuple[Array, Array]]:
    """``[(W, b), ...]`` per layer, ``W`` of shape ``(fan_in, fan_out)``, in ``flat``'s namespace.

    With NumPy (and CuPy) these are views: writing to them writes to ``flat``.
    """
    xp = namespace(flat)
    _check_flat(spec, flat)
    return [
        (xp.reshape(flat[s.w_start : s.w_stop], s.w_shape), flat[s.b_start : s.b_stop])
        for s in spec.layout()
    ]


# ---------------------------------------------------------------------------------------------
# Building blocks. Each forward sits next to its backward; a backward maps the gradient of the
# loss w.r.t. the block's output to the gradient w.r.t. its input (and its parameters).
# Activation backwards are written in terms of the activation's *output* ``a``, as scikit-learn
# does, so the forward pass only has to keep one array per layer.


# Dense layer: z = x W + b
def _dense(x: Array, W: Array, b: Array) -> Array:
    return x @ W + b


def _dense_backward(
    xp: Any, dz: Array, x: Array, W: Array, need_dx: bool
) -> tuple[Array | None, Array, Array]:
    """``(dx, dW, db)``; ``dx`` is skipped (``None``) for the input layer."""
    dW = x.T @ dz
    db = xp.sum(dz, axis=0)
    dx = dz @ W.T if need_dx else None
    return dx, dW, db


# identity: a = z
def _identity(xp: Any, z: Array) -> Array:
    return z


def _identity_backward(xp: Any, a: Array, da: Array) -> Array:
    return da


# logistic: a = 1 / (1 + exp(-z)), a' = a (1 - a)
def _logistic(xp: Any, z: Array) -> Array:
    # Clipping keeps exp(-z) finite; it only changes outputs that would be subnormal anyway.
    # (xp.where on the sign of z would be as exact but is ~5x slower in NumPy.)
    limit = math.log(float(xp.finfo(z.dtype).max)) - 1.0
    return 1.0 / (1.0 + xp.exp(-xp.clip(z, -limit, None)))


def _logistic_backward(xp: Any, a: Array, da: Array) -> Array:
    return da * a * (1.0 - a)


# tanh: a = tanh(z), a' = 1 - a²
def _tanh(xp: Any, z: Array) -> Array:
    return xp.tanh(z)


def _tanh_backward(xp: Any, a: Array, da: Array) -> Array:
    return da * (1.0 - a * a)


# relu: a = max(z, 0), a' = [a > 0]
def _relu(xp: Any, z: Array) -> Array:
    return xp.maximum(z, 0.0)


def _relu_backward(xp: Any, a: Array, da: Array) -> Array:
    return da * xp.astype(a > 0, da.dtype)


# softmax over outputs (axis 1): a_k = exp(z_k - max z) / Σ exp(z_j - max z)
def _softmax(xp: Any, z: Array) -> Array:
    e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


ActivationPair = tuple[Callable[[Any, Array], Array], Callable[[Any, Array, Array], Array]]
_HIDDEN: dict[str, ActivationPair] = {
    "identity": (_identity, _identity_backward),
    "logistic": (_logistic, _logistic_backward),
    "tanh": (_tanh, _tanh_backward),
    "relu": (_relu, _relu_backward),
}
_OUTPUT: dict[str, Callable[[Any, Array], Array]] = {
    "identity": _identity,
    "logistic": _logistic,
    "softmax": _softmax,
}


# Losses, per row, from the raw output z (so they stay finite where probabilities round to 0/1).
# For all three, d(row loss)/dz = p - y with p the output activation of z: the output layer's
# backward is the same subtraction whatever the loss.
def _binary_log_loss(xp: Any, z: Array, y: Array) -> tuple[Array, Array]:
    """Σ_k softplus(z_k) - y_k z_k  (= -y log p - (1 - y) log(1 - p)), and p = logistic(z)."""
    softplus = xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))
    return xp.sum(softplus - y * z, axis=1), _logistic(xp, z)


def _log_loss(xp: Any, z: Array, y: Array) -> tuple[Array, Array]:
    """logsumexp(z) - Σ_k y_k z_k  (= -Σ_k y_k log p_k for one-hot y), and p = softmax(z)."""
    m = xp.max(z, axis=1, keepdims=True)
    s = z - m
    e = xp.exp(s)
    se = xp.sum(e, axis=1, keepdims=True)
    # logsumexp(z) - y·z = log Σ e^s - y·s + m (1 - Σ y); written with s it has no
    # cancellation between two large numbers for one-hot y.
    loss = xp.log(se[:, 0]) - xp.sum(y * s, axis=1) + m[:, 0] * (1.0 - xp.sum(y, axis=1))
    return loss, e / se


def _squared_error(xp: Any, z: Array, y: Array) -> tuple[Array, Array]:
    """½ Σ_k (z_k - y_k)², and p = z."""
    r = z - y
    return 0.5 * xp.sum(r * r, axis=1), z


_LOSS_FUNCTIONS: dict[str, Callable[[Any, Array, Array], tuple[Array, Array]]] = {
    "binary_log_loss": _binary_log_loss,
    "log_loss": _log_loss,
    "squared_error": _squared_error,
}


# ---------------------------------------------------------------------------------------------
# Whole network.


def _check_flat(spec: MLPSpec, flat: Array) -> None:
    if tuple(flat.shape) != (spec.n_params,):
        raise ValueError(
            f"flat parameters must have shape ({spec.n_params},) for layer sizes "
            f"{spec.layer_sizes}, got {tuple(flat.shape)}"
        )


def _check_X(spec: MLPSpec, X: Array) -> None:
    if X.ndim != 2 or X.shape[1] != spec.n_features:
        raise ValueError(f"X must have shape (n_samples, {spec.n_features}), got {tuple(X.shape)}")


def _params_like(spec: MLPSpec, flat: Array, X: Array) -> list[tuple[Array, Array]]:
    """``flat`` (host or device) as per-layer ``(W, b)`` in X's namespace, device and dtype."""
    xp = namespace(X)
    _check_flat(spec, flat)
    flat = aligned(xp.asarray(flat, dtype=X.dtype, device=device(X)))
    return unpack(spec, flat)


def _hidden_forward(
    spec: MLPSpec, layers: list[tuple[Array, Array]], X: Array
) -> tuple[list[Array], Array]:
    """Inputs of every layer (``[X, a_1, ..., a_L-1]``) and the raw output ``z``."""
    X = aligned(X)  # BLAS, not NumPy's fallback loop: same bits wherever X was deserialized
    xp = namespace(X)
    act = _HIDDEN[spec.activation][0]
    inputs = [X]
    for W, b in layers[:-1]:
        inputs.append(act(xp, _dense(inputs[-1], W, b)))
    W, b = layers[-1]
    return inputs, _dense(inputs[-1], W, b)


def decision_function(spec: MLPSpec, flat: Array, X: Array) -> Array:
    """Raw output-layer values ``z``, shape ``(n_samples, n_outputs)``, in X's namespace/dtype."""
    _check_X(spec, X)
    return _hidden_forward(spec, _params_like(spec, flat, X), X)[1]


def forward(spec: MLPSpec, flat: Array, X: Array) -> Array:
    """Network outputs after the output activation, shape ``(n_samples, n_outputs)``.

    Probabilities for ``binary_log_loss`` (per output) and ``log_loss`` (rows sum to 1),
    predictions for ``squared_error``.
    """
    xp = namespace(X)
    return _OUTPUT[spec.out_activation](xp, decision_function(spec, flat, X))


def loss_and_grad(
    spec: MLPSpec, flat: Array, X: Array, Y: Array, sample_weight: Array | None = None
) -> tuple[float, Array]:
    """Summed data loss over the rows of ``X`` and its gradient w.r.t. the flat parameters.

    Parameters
    ----------
    flat : array, shape (n_params,)
        Parameters, any namespace/device: converted to X's namespace, device and dtype.
    X : array, shape (n_samples, n_features)
    Y : array, shape (n_samples, n_outputs)
        Targets as floats: a 0/1 column per output for ``binary_log_loss``, one-hot rows for
        ``log_loss``, values for ``squared_error``.
    sample_weight : array, shape (n_samples,), optional
        Multiplies each row's loss (and so its gradient).

    Returns
    -------
    loss : float
        ``Σ_rows w_i ℓ_i``, a *sum*, not a mean, and without the L2 penalty (see
        :func:`l2_penalty`): partitions' losses and gradients add up, and dividing by the total
        number of rows gives scikit-learn's mean loss. Accumulated in float64.
    grad : array, shape (n_params,)
        Gradient of ``loss``, in X's namespace, device and dtype.
    """
    xp = namespace(X)
    dev = device(X)
    _check_X(spec, X)
    n = X.shape[0]
    if tuple(Y.shape) != (n, spec.n_outputs):
        raise ValueError(
            f"Y must have shape ({n}, {spec.n_outputs}) to match X, got {tuple(Y.shape)}"
        )
    layers = _params_like(spec, flat, X)
    if n == 0:
        return 0.0, xp.zeros((spec.n_params,), dtype=X.dtype, device=dev)
    Y = xp.asarray(Y, dtype=X.dtype, device=dev)

    inputs, z = _hidden_forward(spec, layers, X)
    row_loss, p = _LOSS_FUNCTIONS[spec.loss](xp, z, Y)
    dz = p - Y
    if sample_weight is not None:
        sw = xp.asarray(sample_weight, dtype=X.dtype, device=dev)
        if tuple(sw.shape) != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), got {tuple(sw.shape)}")
        row_loss = row_loss * sw
        dz = dz * xp.reshape(sw, (-1, 1))
    loss = float(xp.sum(row_loss, dtype=xp.float64))

    # Backward, output layer first: dense backward, then the hidden activation's backward.
    act_backward = _HIDDEN[spec.activation][1]
    grads: list[Array] = []
    for i in range(len(layers) - 1, -1, -1):
        W, _ = layers[i]
        x = inputs[i]
        dx, dW, db = _dense_backward(xp, dz, x, W, need_dx=i > 0)
        grads += [db, xp.reshape(dW, (-1,))]
        if dx is not None:
            dz = act_backward(xp, x, dx)  # x = a_i is the previous layer's activation output
    return loss, xp.concat(grads[::-1])


def l2_penalty(spec: MLPSpec, flat: Array, alpha: float, n_samples: float) -> tuple[float, Array]:
    """scikit-learn's MLP penalty ``0.5 * alpha * Σ W² / n_samples`` and its gradient.

    Weights only: biases are not penalised. ``n_samples`` is the total number of rows (or the
    total sample weight) that the data loss was divided by. The gradient is
    ``alpha * W / n_samples`` at weight positions and 0 at bias positions, in ``flat``'s
    namespace, device and dtype.
    """
    xp = namespace(flat)
    if not n_samples > 0:
        raise ValueError(f"n_samples must be > 0, got {n_samples!r}")
    scale = float(alpha) / float(n_samples)
    total = 0.0
    grads = []
    for W, b in unpack(spec, flat):
        total += float(xp.sum(W * W, dtype=xp.float64))
        grads += [xp.reshape(W, (-1,)) * scale, xp.zeros_like(b)]
    return 0.5 * scale * total, xp.concat(grads)
