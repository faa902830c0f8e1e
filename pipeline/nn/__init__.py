"""Neural-network math on one flat parameter buffer: layers, losses, networks, workspaces.

See :mod:`pipeline.nn.layers` (the layer interface; :mod:`~pipeline.nn.conv`,
:mod:`~pipeline.nn.norm` and :mod:`~pipeline.nn.image` hold the image layers), :mod:`pipeline.nn.sequential` (the model
protocol the trainer uses), :mod:`pipeline.nn.mlp` (scikit-learn's MLPs) and
:mod:`pipeline.nn.workspace` (buffers reused across steps).
"""

from .combinators import Chain, ColumnSplit
from .conv import AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D
from .embedding import Embedding
from .ensemble import EnsembleDense, EnsembleSequential, IndependentMembers
from .image import Augment, Normalize, Rescale, augment, augment_indices
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
from .norm import GroupNorm
from .periodic import Periodic
from .sequential import Sequential
from .workspace import Workspace

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "Augment",
    "AvgPool2D",
    "Chain",
    "ColumnSplit",
    "Context",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "EnsembleDense",
    "EnsembleSequential",
    "Flatten",
    "GlobalAvgPool2D",
    "GroupNorm",
    "Identity",
    "IndependentMembers",
    "Layer",
    "LayerNorm",
    "LayerSlice",
    "Logistic",
    "Loss",
    "MLPSpec",
    "MaxPool2D",
    "Normalize",
    "Periodic",
    "ReLU",
    "Rescale",
    "Sequential",
    "Tanh",
    "Workspace",
    "augment",
    "augment_indices",
    "decision_function",
    "forward",
    "get_loss",
    "init_params",
    "l2_penalty",
    "loss_and_grad",
    "unpack",
]
