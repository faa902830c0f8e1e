"""A stand-in for cuDF Series/DataFrames, for the GPU boundary's tests on machines without a GPU.

Only what the pipeline calls, with cuDF's documented semantics (docs.rapids.ai, cudf 26.x):

- ``to_cupy(na_value=None)`` gives a device array: here an ``array_api_strict`` array on a
  non-default device, which, like CuPy memory, ``np.asarray`` refuses to read. It raises
  ``TypeError`` for strings (cuDF: "String Arrays is not yet implemented in cudf") and
  ``NotImplementedError`` for categoricals (rapidsai/cudf#17381); with nulls and no
  ``na_value`` the fake raises too (cuDF falls back to a slow path whose result depends on the
  version, rapidsai/cudf#23723: the pipeline must not rely on it).
- ``.values`` is the same device array, with the same errors.
- ``to_pandas()`` gives pandas objects, nulls as ``NaN`` in numeric columns (integer columns
  with nulls become float64) and ``None`` in string columns (``nullable=False``, the default).
- ``np.asarray(frame)`` raises ``TypeError``: cuDF forbids implicit copies to the host.
- ``null_count``: nulls in a column. As with ``cudf.from_pandas`` (``nan_as_null=True``),
  ``NaN`` in a float column given to the fake is a null.
- ``dtype``: a NumPy dtype for numbers and booleans (``int64`` for a nullable integer column),
  ``object`` for strings, a categorical dtype for categories.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


class Index:
    __module__ = "cudf.core.index"

    def __init__(self, n: int) -> None:
        self._i = pd.RangeIndex(n)

    def __len__(self) -> int:
        return len(self._i)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a host NumPy array via __array__ is not allowed")

    def to_pandas(self) -> pd.Index:
        return self._i


class Series:
    __module__ = "cudf.core.series"  # what pipeline.backend.is_cudf looks at

    def __init__(self, data: Any, device: Any) -> None:
        self._s = pd.Series(data).reset_index(drop=True)
        self._device = device

    def __len__(self) -> int:
        return len(self._s)

    @property
    def index(self) -> Index:
        return Index(len(self))

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a host NumPy array via __array__ is not allowed")

    @property
    def dtype(self) -> Any:
        d = self._s.dtype
        if isinstance(d, pd.CategoricalDtype):
            return d
        if pd.api.types.is_extension_array_dtype(d) and d.kind in "biuf":
            return d.numpy_dtype  # cuDF keeps the NumPy dtype and a null mask
        if d.kind in "biuf":
            return d
        return np.dtype(object)

    @property
    def null_count(self) -> int:
        return int(self._s.isna().sum())

    def to_cupy(self, dtype: Any = None, copy: bool = True, na_value: Any = None) -> Any:
        import array_api_strict as xs

        if isinstance(self.dtype, pd.CategoricalDtype):
            raise NotImplementedError("cupy does not support categorical columns")
        if self.dtype.kind not in "biuf":
            raise TypeError("String Arrays is not yet implemented in cudf")
        if self.null_count and na_value is None:
            raise ValueError("the fake refuses to_cupy() of a column with nulls without "
                             "na_value (cuDF's fallback differs between versions)")
        host = self._s.to_numpy(dtype=dtype or self.dtype, na_value=na_value)
        return xs.asarray(host, device=self._device)

    @property
    def values(self) -> Any:
        return self.to_cupy()

    def to_pandas(self) -> pd.Series:
        s = self._s
        if pd.api.types.is_extension_array_dtype(s.dtype) and s.dtype.kind in "iub":
            return s.astype("float64") if s.isna().any() else s.astype(s.dtype.numpy_dtype)
        if pd.api.types.is_string_dtype(s.dtype):  # object strings, None where null
            return s.astype(object).where(s.notna(), None)
        return s.copy()

    def astype(self, dtype: Any) -> Series:
        return Series(self._s.astype(dtype), self._device)


class DataFrame:
    __module__ = "cudf.core.dataframe"

    def __init__(self, data: dict[str, Any], device: Any) -> None:
        self._columns = {k: v if isinstance(v, Series) else Series(v, device)
                         for k, v in data.items()}
        self._device = device

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def __getitem__(self, name: str) -> Series:
        return self._columns[name]

    def __len__(self) -> int:
        return len(next(iter(self._columns.values())))

    @property
    def index(self) -> Index:
        return Index(len(self))

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a host NumPy array via __array__ is not allowed")

    def astype(self, dtype: Any) -> DataFrame:
        return DataFrame({k: c.astype(dtype) for k, c in self._columns.items()}, self._device)

    def to_cupy(self, dtype: Any = None, copy: bool = False, na_value: Any = None) -> Any:
        import array_api_strict as xs

        cols = [c.to_cupy(dtype=dtype, na_value=na_value) for c in self._columns.values()]
        return xs.stack(cols, axis=1)

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame({k: c.to_pandas() for k, c in self._columns.items()})
