"""Parsing one CSV block on a GPU worker with ``cudf.read_csv``: the fast path of
:func:`pipeline.io.read` with ``backend="cudf"``.

The host reader's promise stays: a clean block reads as on the CPU (same columns, dtypes and
missing-value markers), and a block with anything bad in it is not guessed at. cuDF's reader
does not report bad values (an unparsable number becomes a null), so every column is parsed as
text on the GPU and checked there before it is converted; a block that fails any check (a
quoted field, a line with another number of fields, a word in a number column, a missing int or
bool, an infinite float, anything cuDF cannot cast) returns ``None`` and goes to the host's
line-by-line path, which names the bad rows exactly as on a CPU worker. The rows it keeps cross
to the GPU in :func:`to_gpu_frame`, the one boundary.

Only imported on workers that read with ``backend="cudf"``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["parse_block", "to_gpu_frame"]


def to_gpu_frame(frame: pd.DataFrame) -> Any:
    """A host frame (the host path's rows, an empty block, the meta) as a cuDF frame."""
    import cudf

    return cudf.from_pandas(frame)


def parse_block(data: bytes, names: Sequence[str], dtypes: dict[str, Any],
                na_values: Sequence[str], true_values: Sequence[str],
                false_values: Sequence[str]) -> Any:
    """The rows of ``data`` (CSV without its header line) as a cuDF frame of ``dtypes`` (the
    selected columns, in order), or ``None`` if the block needs the host's checks."""
    import cudf

    if not data.strip(b"\r\n"):
        return to_gpu_frame(pd.DataFrame({c: pd.Series([], dtype=d) for c, d in dtypes.items()}))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if '"' in text:  # quoting: Python's csv module and pyarrow decide on the host
        return None
    lines = cudf.Series([text]).str.split("\n").explode().str.rstrip("\r")
    lines = lines[lines.str.len() > 0]  # blank lines are not rows
    if not bool((lines.str.count(",") == len(names) - 1).all()):
        return None
    raw = cudf.read_csv(io.BytesIO(data), header=None, names=list(names),
                        usecols=list(dtypes), dtype={c: "str" for c in dtypes},
                        na_values=list(na_values), keep_default_na=False,
                        skip_blank_lines=True)
    if len(raw) != len(lines):
        return None
    out = {}
    for column, dtype in dtypes.items():
        converted = _convert(raw[column], dtype, true_values, false_values)
        if converted is None:
            return None
        out[column] = converted
    return cudf.DataFrame(out).reset_index(drop=True)


def _convert(text: Any, dtype: Any, true_values: Sequence[str],
             false_values: Sequence[str]) -> Any:
    """One column of CSV fields (cuDF strings, missing-value markers already null) as
    ``dtype``, or ``None`` if any field is bad there."""
    missing = text.isna()
    present = text[~missing]
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        is_true, is_false = text.isin(list(true_values)), text.isin(list(false_values))
        if bool(missing.any()) or not bool((is_true | is_false).all()):
            return None
        return is_true
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        if bool(missing.any()) or not bool(present.str.isinteger().all()):
            return None
        try:
            return text.astype(dtype)
        except (ValueError, TypeError, OverflowError):
            return None
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        if not bool(present.str.isfloat().all()):
            return None
        values = text.astype(dtype)
        if bool(values.isna().sum() != missing.sum()) or bool((values.abs() == np.inf).any()):
            return None
        return values
    try:  # text, categories, dates: cuDF's cast, else the host's
        return text if pd.api.types.is_string_dtype(dtype) else text.astype(dtype)
    except (ValueError, TypeError, NotImplementedError):
        return None
