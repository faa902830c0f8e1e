"""Command-line interface: ``pipeline demo``, ``pipeline run``, ``pipeline profile``,
``pipeline predict``. The outermost layer: the only part of ``pipeline`` that uses ``analytics``."""

from .main import main

__all__ = ["main"]
