"""Model files: :func:`save` and :func:`load` (no pickle; format in :mod:`pipeline.serialization`).

This is the outermost persistence layer: it knows which classes may be saved (the estimators'
registry) and hands them to the format layer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from . import scoring
from .registry import saveable_classes
from .serialization import ModelFormatError, read_objects, write_model

__all__ = ["ModelFormatError", "SavedModel", "load", "save"]


class SavedModel(NamedTuple):
    """What :func:`load` returns: the model, its preprocessor (or None) and the metadata."""

    model: Any
    preprocessor: Any
    metadata: dict[str, Any]

    def transform(self, df: Any) -> Any:
        return df if self.preprocessor is None else self.preprocessor.transform(df)

    def predict(self, df: Any, *, keep: Sequence[str] | str | None = None) -> Any:
        """Preprocess (if a preprocessor was saved) and predict, lazily for dask input.

        ``keep`` (columns of ``df``, e.g. an id) returns a DataFrame of those columns and
        ``prediction`` instead of an array, so every prediction keeps its row's identity.
        """
        pred = self.model.predict(self.transform(df))
        if keep is None:
            return pred
        return scoring.with_columns(df, keep, pred, scoring.output_names(pred))

    def predict_proba(self, df: Any, *, keep: Sequence[str] | str | None = None) -> Any:
        """Class probabilities; with ``keep``, a DataFrame of those columns and ``proba_<c>``."""
        proba = self.model.predict_proba(self.transform(df))
        if keep is None:
            return proba
        names = scoring.output_names(proba, self.model.classes_, proba=True)
        return scoring.with_columns(df, keep, proba, names)


def save(path: str | os.PathLike[str], model: Any, *, preprocessor: Any = None,
         metadata: dict[str, Any] | None = None) -> str:
    """Save a fitted model (and its preprocessor) to the directory ``path``. No pickle."""
    return write_model(path, model, saveable_classes(), preprocessor=preprocessor,
                       metadata=metadata)


def load(path: str | os.PathLike[str]) -> SavedModel:
    """Load a model saved by :func:`save`; refuses foreign, tampered or pickled files."""
    objects, extra, manifest = read_objects(path, saveable_classes(), kind="model")
    if "model" not in objects:
        raise ModelFormatError(f"{path} holds no model")
    meta = {"versions": manifest.get("versions", {}), **extra}
    return SavedModel(objects["model"], objects.get("preprocessor"), meta)
