"""Dask pipeline: profile, clean, standardize, train, evaluate and score tabular data on Dask."""

from .cluster import connect
from .estimators import MLPClassifier, MLPRegressor
from .persist import SavedModel, load, save

__all__ = ["MLPClassifier", "MLPRegressor", "SavedModel", "connect", "load", "save"]

__version__ = "0.1.0"
