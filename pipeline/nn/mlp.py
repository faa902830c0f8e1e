"""Fully connected networks as scikit-learn builds them: :class:`MLPSpec` and the module-level
functions that take a spec (or any model with the protocol of
:class:`~pipeline.nn.sequential.Sequential`).

A spec's flat buffer holds, layer after layer, ``W_i`` (``fan_in * fan_out`` values, row-major
``(fan_in, fan_out)``) then ``b_i`` (``fan_out`` values). Losses and activations use
scikit-learn's names and conventions, so a model's ``coefs_``/``intercepts_`` copied from
``sklearn.neural_network`` give the same outputs.

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

from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np

from .layers import Context, Dense, Dropout, Identity, Layer, Logistic, ReLU, Tanh
from .losses import LOSSES as _LOSS_OBJECTS
from .sequential import Sequential

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
LOSSES = tuple(_LOSS_OBJECTS)  # ("binary_log_loss", "log_loss", "squared_error")

_ACTIVATION_LAYERS: dict[str, type[Layer]] = {
    "identity": Identity, "logistic": Logistic, "tanh": Tanh, "relu": ReLU,
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
    """Architecture of a fully connected network; also a model (the protocol of
    :class:`~pipeline.nn.sequential.Sequential`, by delegation to :attr:`sequential`).

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
    dropout : tuple of float
        Inverted-dropout rate after each hidden layer's activation (empty: none). Dropout has no
        parameters, so the flat layout does not depend on it.
    """

    layer_sizes: tuple[int, ...]
    activation: str = "relu"
    loss: str = "log_loss"
    dropout: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.layer_sizes)
        object.__setattr__(self, "layer_sizes", sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"layer_sizes needs at least (n_features, n_outputs), got {self.layer_sizes!r}"
            )
        if any(s < 1 for s in sizes):
            raise ValueError(f"every layer size must be >= 1, got {sizes!r}")
        rates = tuple(float(r) for r in self.dropout)
        object.__setattr__(self, "dropout", rates)
        if rates and len(rates) != len(sizes) - 2:
            raise ValueError(f"dropout needs one rate per hidden layer ({len(sizes) - 2}), "
                             f"got {rates!r}")
        if any(not 0 <= r < 1 for r in rates):
            raise ValueError(f"dropout rates must be in [0, 1), got {rates!r}")
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
        return _LOSS_OBJECTS[self.loss].out_activation

    @property
    def n_params(self) -> int:
        """Length of the flat parameter buffer."""
        return sum((fan_in + 1) * fan_out for fan_in, fan_out in pairwise(self.layer_sizes))

    def layout(self) -> list[LayerSlice]:
        """One :class:`LayerSlice` per layer, input layer first."""
        slices = []
        offset = 0
        for fan_in, fan_out in pairwise(self.layer_sizes):
            w_stop = offset + fan_in * fan_out
            b_stop = w_stop + fan_out
            slices.append(LayerSlice(offset, w_stop, (fan_in, fan_out), w_stop, b_stop))
            offset = b_stop
        return slices

    @property
    def sequential(self) -> Sequential:
        """The network as layers: ``Dense``, activation, ..., ``Dense`` (memoised per spec)."""
        # kept on the instance too (the model protocol asks twice per training step, and the
        # lru_cache look-up hashes and compares the fields); not pickled (see __getstate__)
        try:
            return self.__dict__["_sequential"]
        except KeyError:
            seq = self.__dict__["_sequential"] = _sequential(self)
            return seq

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_sequential"}

    # The model protocol, by delegation.
    def init_params(self, random_state: Any = None, dtype: Any = np.float32) -> np.ndarray:
        """A fresh host NumPy flat buffer, Glorot-uniform as scikit-learn's ``_init_coef``.

        Each layer draws ``W`` then ``b`` from ``uniform(-bound, bound)`` with
        ``bound = sqrt(factor / (fan_in + fan_out))``, ``factor`` 2 for logistic hidden units
        and 6 otherwise. ``random_state`` is an int, ``None`` or a ``numpy.random.Generator``
        (which is advanced). Draws are float64, then cast to ``dtype``.
        """
        return self.sequential.init_params(random_state, dtype)

    def forward(self, flat: Array, X: Array, ctx: Context | None = None) -> Array:
        return self.sequential.forward(flat, X, ctx)

    def decision_function(self, flat: Array, X: Array, ctx: Context | None = None) -> Array:
        return self.sequential.decision_function(flat, X, ctx)

    def loss_and_grad(self, flat: Array, X: Array, Y: Array, sample_weight: Array | None = None,
                      ctx: Context | None = None) -> tuple[float, Array]:
        return self.sequential.loss_and_grad(flat, X, Y, sample_weight, ctx)

    def l2_penalty(self, flat: Array, alpha: float, n_samples: float,
                   ctx: Context | None = None) -> tuple[float, Array]:
        return self.sequential.l2_penalty(flat, alpha, n_samples, ctx)


@lru_cache(maxsize=64)
def _sequential(spec: MLPSpec) -> Sequential:
    factor = 2.0 if spec.activation == "logistic" else 6.0
    layers: list[Layer] = []
    rates = spec.dropout or (0.0,) * (len(spec.layer_sizes) - 2)
    for size, rate in zip(spec.layer_sizes[1:-1], rates, strict=True):
        layers += [Dense(size, factor), _ACTIVATION_LAYERS[spec.activation]()]
        if rate > 0:
            layers.append(Dropout(rate))
    layers.append(Dense(spec.n_outputs, factor))
    return Sequential(layers, loss=spec.loss, in_shape=(spec.n_features,),
                      name=f"layer sizes {spec.layer_sizes}")


# Module-level functions, for any model with the protocol (MLPSpec, Sequential).


def init_params(spec: Any, random_state: Any = None, dtype: Any = np.float32) -> np.ndarray:
    """``spec.init_params(random_state, dtype)``: a fresh host NumPy flat buffer."""
    return spec.init_params(random_state, dtype)


def unpack(spec: MLPSpec, flat: Array) -> list[tuple[Array, Array]]:
    """``[(W, b), ...]`` per layer, ``W`` of shape ``(fan_in, fan_out)``, in ``flat``'s namespace.

    With NumPy (and CuPy) these are views: writing to them writes to ``flat``.
    """
    views = spec.sequential.unpack(flat)
    return list(zip(views[::2], views[1::2], strict=True))


def decision_function(spec: Any, flat: Array, X: Array) -> Array:
    """Raw output-layer values ``z``, shape ``(n_samples, n_outputs)``, in X's namespace/dtype."""
    return spec.decision_function(flat, X)


def forward(spec: Any, flat: Array, X: Array) -> Array:
    """Network outputs after the output activation, shape ``(n_samples, n_outputs)``.

    Probabilities for ``binary_log_loss`` (per output) and ``log_loss`` (rows sum to 1),
    predictions for ``squared_error``.
    """
    return spec.forward(flat, X)


def loss_and_grad(spec: Any, flat: Array, X: Array, Y: Array,
                  sample_weight: Array | None = None,
                  ctx: Context | None = None) -> tuple[float, Array]:
    """Summed data loss over the rows of ``X`` and its gradient w.r.t. the flat parameters
    (see :meth:`Sequential.loss_and_grad <pipeline.nn.sequential.Sequential.loss_and_grad>`).

    ``loss`` is ``Σ_rows w_i ℓ_i``, a *sum*, not a mean, and without the L2 penalty (see
    :func:`l2_penalty`): partitions' losses and gradients add up, and dividing by the total
    number of rows gives scikit-learn's mean loss. Accumulated in float64. ``grad`` is in X's
    namespace, device and dtype.
    """
    return spec.loss_and_grad(flat, X, Y, sample_weight, ctx)


def l2_penalty(spec: Any, flat: Array, alpha: float, n_samples: float) -> tuple[float, Array]:
    """scikit-learn's MLP penalty ``0.5 * alpha * Σ W² / n_samples`` and its gradient.

    Weights only: biases are not penalised. ``n_samples`` is the total number of rows (or the
    total sample weight) that the data loss was divided by. The gradient is
    ``alpha * W / n_samples`` at weight positions and 0 at bias positions, in ``flat``'s
    namespace, device and dtype.
    """
    return spec.l2_penalty(flat, alpha, n_samples)
