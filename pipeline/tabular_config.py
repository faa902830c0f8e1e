"""The tabular estimators' entry from a run configuration (``pipeline run`` with
``model: {estimator: tabular}``): :class:`RawColumns`, the stand-in preprocessor, and
:func:`tabular_from_config`, the estimator the config asks for.
"""

from __future__ import annotations

from typing import Any

from .tabular_base import _BaseTabular


class RawColumns:
    """``pipeline run``'s stand-in preprocessor for the tabular estimators: splits a frame into
    its raw feature columns and the label (the estimator learns the encoding inside fit)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def transform_xy(self, df: Any) -> tuple[Any, Any]:
        return df.drop(columns=[self.label]), df[self.label]


def tabular_from_config(cfg: Any) -> _BaseTabular:
    """The estimator a run configuration's ``model: {estimator: tabular}`` asks for: the
    type, the declared categorical columns, the seed and the epoch budget from the config;
    every other setting at its default (the defaults are the point of these estimators)."""
    from .tabular import TabularClassifier, TabularRegressor  # (tabular re-exports this module)

    m, t = cfg.model, cfg.train
    Est = TabularClassifier if m.type == "classifier" else TabularRegressor
    return Est(categorical=list(cfg.data.categorical) or None, random_state=t.random_state,
               max_iter=max(int(t.max_iter), 1), verbose=False)
