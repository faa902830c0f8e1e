"""What the preprocessors accept as input frames: dask, pandas or cuDF DataFrames, their
columns and the dtype classes that decide numeric versus categorical.

Errors name the columns at fault and list the ones available.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import dask.dataframe as dd
import pandas as pd

__all__ = [
    "as_dask",
    "check_column_list",
    "check_columns",
    "check_fitted_columns",
    "frame_meta",
    "is_categorical_dtype",
    "is_numeric_dtype",
    "resolve_feature_columns",
]


def is_categorical_dtype(dtype: Any) -> bool:
    """Whether ``dtype`` is a pandas or cuDF categorical dtype."""
    # pandas' and cuDF's CategoricalDtype both report the name "category".
    return getattr(dtype, "name", None) == "category"


def is_numeric_dtype(dtype: Any) -> bool:
    """Numbers and bools; never a categorical dtype, even one whose categories are numbers."""
    return not is_categorical_dtype(dtype) and pd.api.types.is_numeric_dtype(dtype)


def as_dask(df: Any) -> dd.DataFrame:
    """``df`` as a dask DataFrame (a pandas or cuDF frame becomes one partition)."""
    if isinstance(df, dd.DataFrame):
        return df
    if hasattr(df, "columns") and hasattr(df, "dtypes"):  # pandas or cuDF DataFrame
        return dd.from_pandas(df, npartitions=1)
    raise TypeError(
        f"expected a dask, pandas or cuDF DataFrame, got {type(df).__module__}.{type(df).__name__}"
    )


def frame_meta(df: Any) -> Any:
    """An empty frame with ``df``'s columns and dtypes (``df`` itself when it is in memory)."""
    return df._meta if isinstance(df, dd.DataFrame) else df


def check_columns(columns: Sequence[Hashable], wanted: Sequence[Hashable], what: str) -> None:
    """Raise naming the ``wanted`` columns (``what``: how to call them) missing from ``columns``."""
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(
            f"{what} {missing!r} not found in the data; available columns: {list(columns)!r}"
        )


def check_column_list(value: Any, name: str) -> list[Hashable] | None:
    """Parameter ``name=`` as a list of column names (``None`` stays ``None``); a bare string
    is refused, since iterating it would give its characters."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name}= takes a list of column names, e.g. {name}=[{value!r}]")
    return list(value)



def resolve_feature_columns(
    meta: Any, label: Hashable | None, categorical: Any, numeric: Any
) -> tuple[list[Hashable], list[Hashable]]:
    """``(numeric, categorical)`` feature columns of a frame with ``meta``'s columns.

    ``categorical``/``numeric`` are the declared lists (or ``None``); with ``numeric=None``
    every other non-label column is a feature: categorical-dtype columns are added to
    ``categorical``, the rest must be numeric. Raises on duplicate or missing columns, a label
    declared as a feature, a column declared both ways, or no feature at all.
    """
    columns = list(meta.columns)
    if len(set(columns)) != len(columns):
        dup = sorted({str(c) for c in columns if columns.count(c) > 1})
        raise ValueError(f"duplicate column names in the data: {dup}")
    if label is not None:
        check_columns(columns, [label], "label column")
    categorical = check_column_list(categorical, "categorical") or []
    numeric = check_column_list(numeric, "numeric")
    check_columns(columns, categorical, "categorical column(s)")
    if numeric is not None:
        check_columns(columns, numeric, "numeric column(s)")

    declared = categorical + (numeric or [])
    if label is not None and label in declared:
        raise ValueError(f"the label column {label!r} cannot also be a feature")
    both = [c for c in categorical if c in (numeric or [])]
    if both:
        raise ValueError(f"column(s) {both!r} are declared both numeric and categorical")

    if numeric is None:
        rest = [c for c in columns if c != label and c not in categorical]
        categorical = categorical + [c for c in rest if is_categorical_dtype(meta[c].dtype)]
        numeric = [c for c in rest if c not in categorical]
        bad = [c for c in numeric if not is_numeric_dtype(meta[c].dtype)]
        if bad:
            dtypes = {str(c): str(meta[c].dtype) for c in bad}
            raise ValueError(
                f"non-numeric column(s) {dtypes}: declare them in categorical=[...] "
                "to one-hot encode them, or drop them"
            )
    if not numeric and not categorical:
        raise ValueError(f"no feature columns to preprocess; columns: {columns!r}")
    return numeric, categorical


def check_fitted_columns(meta: Any, features: Sequence[Hashable],
                         numeric: Sequence[Hashable]) -> None:
    """Raise unless a frame with ``meta``'s columns has every fitted feature column and the
    fitted ``numeric`` ones are still numeric (the schema the model was trained on)."""
    check_columns(list(meta.columns), list(features), "feature column(s)")
    wrong = {str(c): str(meta[c].dtype) for c in numeric if not is_numeric_dtype(meta[c].dtype)}
    if wrong:
        raise ValueError(
            f"column(s) {wrong} were numeric when the preprocessor was fitted but are not "
            "numeric here: the data does not match the schema the model was trained on"
        )
