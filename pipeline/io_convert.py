"""Dtypes for :func:`pipeline.io.read`: inferring a column's dtype from text, converting CSV
text to typed columns and finding the bad values (mistyped, non-finite) on the way."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# pandas' default missing-value markers, so a clean file reads as pandas.read_csv would read it.
NA_VALUES = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
_NA_SET = frozenset(NA_VALUES)
_TRUE_VALUES = ("True", "TRUE", "true")
_FALSE_VALUES = ("False", "FALSE", "false")


# --------------------------------------------------------------------------------------------
# Dtypes


def _is_float(dtype) -> bool:
    return pd.api.types.is_float_dtype(dtype)


def _is_int(dtype) -> bool:
    return pd.api.types.is_integer_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)


def _is_bool(dtype) -> bool:
    return pd.api.types.is_bool_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)


def _arrow_type(dtype) -> pa.DataType:
    """The Arrow type the fast CSV path parses a column as; anything else is read as text."""
    if isinstance(dtype, np.dtype) and dtype.kind in "iufb":
        return pa.from_numpy_dtype(dtype)
    return pa.string()


def _empty_frame(dtypes: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in dtypes.items()})


def _infer_column(raw: pd.Series) -> Any:
    """The dtype of one column of sample strings, as pandas.read_csv infers it, except that a
    column whose values are *mostly* numbers is numeric (float64): its stray words are then bad
    rows instead of turning the whole column into text."""
    missing = raw.isna() | raw.isin(_NA_SET)
    present = raw[~missing]
    if len(present) == 0:
        return np.dtype("float64")  # pandas reads an all-empty column as float64
    if present.isin(_TRUE_VALUES + _FALSE_VALUES).all():
        # pandas makes booleans with gaps an object column; text is the nearest dtype here
        return pd.StringDtype(na_value=np.nan) if missing.any() else np.dtype("bool")
    numbers = pd.to_numeric(present, errors="coerce")
    parsed = numbers.notna() | present.str.strip().str.lower().isin(("nan", "-nan", "+nan"))
    if parsed.all() and not missing.any() and numbers.dtype.kind in "iu":
        return np.dtype("int64")
    if parsed.mean() > 0.5:
        return np.dtype("float64")
    return pd.StringDtype(na_value=np.nan)


def _resolve_dtypes(inferred: dict[str, Any], dtype, where: str) -> dict[str, Any]:
    out = dict(inferred)
    if dtype is None:
        return out
    if isinstance(dtype, dict):
        unknown = sorted(set(dtype) - set(out))
        if unknown:
            raise ValueError(f"dtype= names column(s) {unknown} that {where} does not have")
        out.update({c: pd.api.types.pandas_dtype(d) for c, d in dtype.items()})
    else:
        out = {c: pd.api.types.pandas_dtype(dtype) for c in out}
    return out


# --------------------------------------------------------------------------------------------
# Converting text to typed columns and finding bad values


def _convert(col: pa.ChunkedArray, dtype) -> tuple[pd.Series, list[tuple[np.ndarray, str]]]:
    """Parse one column of CSV fields (Arrow strings; missing-value markers already null) as
    ``dtype``. Returns the values and ``(mask, reason)`` pairs marking the bad entries.

    A clean column is one Arrow cast; only a column that fails it is parsed value by value.
    """
    missing = col.is_null().to_numpy(zero_copy_only=False)
    if _is_float(dtype) or _is_int(dtype):
        try:
            values = pc.cast(col, pa.float64() if _is_float(dtype) else pa.int64())
            numbers = values.to_pandas()
            unparsed = np.zeros(len(col), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raw = col.to_pandas()
            numbers = pd.to_numeric(raw, errors="coerce")
            unparsed = ~missing & numbers.isna().to_numpy()
            if _is_float(dtype):
                # other spellings of NaN (" nan", "NAN") are missing values too, as in pandas
                for j in np.flatnonzero(unparsed):
                    unparsed[j] = raw.iat[j].strip().lower() not in ("nan", "-nan", "+nan")
        as_float = numbers.to_numpy(dtype="float64", na_value=np.nan)
        if _is_float(dtype):
            return numbers, [(unparsed, "type"), (np.isinf(as_float), "non_finite")]
        with np.errstate(invalid="ignore"):
            not_int = missing | unparsed | (np.mod(as_float, 1) != 0) | np.isinf(as_float)
        return numbers, [(not_int, "type")]
    raw = col.to_pandas()
    if _is_bool(dtype):
        truth = raw.isin(_TRUE_VALUES)
        return truth, [(~(truth | raw.isin(_FALSE_VALUES)).to_numpy(), "type")]
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        stamps = pd.to_datetime(raw, errors="coerce")
        return stamps, [(~missing & stamps.isna().to_numpy(), "type")]
    return raw, []


def _bad_message(reason: str, dtype, value: Any) -> str:
    if reason == "non_finite":
        return f"non-finite value {value!r} (only finite numbers or missing values are allowed)"
    return f"value {value!r} does not parse as {dtype}"
