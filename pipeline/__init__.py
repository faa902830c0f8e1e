"""Dask pipeline: profile, clean, standardize, train, evaluate and score tabular data on Dask.

The public names are re-exported lazily (PEP 562) so that a worker unpickling a task from
``pipeline.train`` does not pay for importing scikit-learn and the estimators.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ImageClassifier": "image_estimator",
    "MLPClassifier": "estimators",
    "MLPRegressor": "estimators",
    "Preprocessor": "preprocessing",
    "SavedModel": "persist",
    "TabularClassifier": "tabular",
    "TabularPreprocessor": "tabular_prep",
    "TabularRegressor": "tabular",
    "connect": "cluster",
    "export_onnx": "export",
    "load": "persist",
    "read": "io",
    "read_images": "images",
    "save": "persist",
    "train_test_split": "preprocessing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
