"""Dask pipeline: profile, clean, standardize, train, evaluate and score tabular data on Dask."""

from .cluster import connect

__all__ = ["connect"]

__version__ = "0.1.0"
