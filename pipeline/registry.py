"""The allow-list of classes that model files and checkpoints may hold (no pickle: a saved
file names its classes, and :mod:`pipeline.serialization` builds only these)."""

from __future__ import annotations

__all__ = ["saveable_classes"]


def saveable_classes() -> dict[str, type]:
    """The allow-list of classes model files and checkpoints may hold, by name: the estimators,
    the network spec, the optimizer states, the trainer's state and the preprocessing."""
    from . import nn, optim
    from . import preprocessing as pp
    from .estimators import MLPClassifier, MLPRegressor
    from .sketch import QuantileSketch
    from .tabular import TabularClassifier, TabularRegressor
    from .tabular_prep import TabularPreprocessor
    from .train import TrainState

    classes: dict[str, type] = {
        "MLPClassifier": MLPClassifier,
        "MLPRegressor": MLPRegressor,
        "MLPSpec": nn.MLPSpec,
        "TrainState": TrainState,
    }
    # optimizer states, chained ones included (a chain's state is a tuple of these)
    classes.update({cls.__name__: cls for cls in optim.STATE_TYPES})
    for cls in (pp.Preprocessor, pp.Moments, pp.Counts, pp.StatsSpec, pp.PartialStats,
                QuantileSketch, TabularPreprocessor, TabularClassifier, TabularRegressor):
        classes[cls.__name__] = cls
    from .image_estimator import ImageClassifier, saveable_layers

    classes["ImageClassifier"] = ImageClassifier
    classes.update({cls.__name__: cls for cls in saveable_layers()})
    return classes
