"""Describe data and models: one-pass profiles, metrics on Dask collections, training reports,
and live training monitoring (dashboard page and Prometheus)."""

from . import metrics
from .profile import Profile, profile
from .report import report

__all__ = ["Profile", "metrics", "profile", "report"]
