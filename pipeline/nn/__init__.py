"""Neural-network math on one flat parameter buffer: layers, losses, networks, workspaces.

See :mod:`pipeline.nn.layers` (the layer interface), :mod:`pipeline.nn.sequential` (the model
protocol the trainer uses), :mod:`pipeline.nn.mlp` (scikit-learn's MLPs) and
:mod:`pipeline.nn.workspace` (buffers reused across steps).
"""

from .combinators import Chain, ColumnSplit
from .embedding import Embedding
from .ensemble import EnsembleDense, EnsembleSequential
from .layers import (
    Context,
    Dense,
    Dropout,
    Flatten,
    Identity,
    Layer,
    LayerNorm,
    Logistic,
    ReLU,
    Tanh,
)
from .losses import Loss, get_loss
from .mlp import (
    ACTIVATIONS,
    LOSSES,
    LayerSlice,
    MLPSpec,
    decision_function,
    forward,
    init_params,
    l2_penalty,
    loss_and_grad,
    unpack,
)
from .sequential import Sequential
from .workspace import Workspace

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "Chain",
    "ColumnSplit",
    "Context",
    "Dense",
    "Dropout",
    "Embedding",
    "EnsembleDense",
    "EnsembleSequential",
    "Flatten",
    "Identity",
    "Layer",
    "LayerNorm",
    "LayerSlice",
    "Logistic",
    "Loss",
    "MLPSpec",
    "ReLU",
    "Sequential",
    "Tanh",
    "Workspace",
    "decision_function",
    "forward",
    "get_loss",
    "init_params",
    "l2_penalty",
    "loss_and_grad",
    "unpack",
]
