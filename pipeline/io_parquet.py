"""The Parquet side of :func:`pipeline.io.read`: planning partitions from row groups, loading
one partition, and :func:`write_parquet`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from .io_arrow import _release_arrow_memory, _to_pandas
from .io_bad_rows import _Policy
from .io_convert import _bad_message, _is_float, _resolve_dtypes
from .io_sources import _ACCEPTED, _display, _no_rows, _select, _Source

# --------------------------------------------------------------------------------------------
# Parquet


class _ParquetPart(NamedTuple):
    partition: int
    source: _Source
    row_groups: tuple[int, ...]
    row_offset: int  # 0-based index in the file of the first row


@dataclass(frozen=True)
class _ParquetLoader:
    """Loads some row groups of one Parquet file; rows with ±inf in a float column are bad."""

    fs: Any
    dtypes: dict[str, Any] = field(hash=False)
    policy: _Policy
    casts: dict[str, Any] = field(hash=False)  # dtype= given by the caller

    def __dask_tokenize__(self):
        return (
            "pipeline.io._ParquetLoader",
            self.fs,
            [(c, str(d)) for c, d in self.dtypes.items()],
            [(c, str(d)) for c, d in self.casts.items()],
            self.policy.on_bad_rows,
            self.policy.quarantine.root if self.policy.quarantine else None,
        )

    def __call__(self, part: _ParquetPart) -> pd.DataFrame:
        with self.fs.open(part.source.path, "rb") as f:
            table = pq.ParquetFile(f).read_row_groups(
                list(part.row_groups), columns=list(self.dtypes), use_threads=False
            )
        frame = _to_pandas(table.replace_schema_metadata(None))
        del table
        _release_arrow_memory()
        if self.casts:
            frame = frame.astype(self.casts)
        bad_rows = np.zeros(len(frame), dtype=bool)
        bad = []
        for c, d in self.dtypes.items():
            if not _is_float(d):
                continue
            mask = np.isinf(frame[c].to_numpy(dtype="float64", na_value=np.nan)) & ~bad_rows
            for j in np.flatnonzero(mask):
                value = frame[c].iat[j]
                raw = json.dumps(frame.iloc[j].to_dict(), default=str)
                detail = _bad_message("non_finite", d, float(value))
                bad.append((part.row_offset + int(j), c, "non_finite", detail, raw))
            bad_rows |= mask
        kept = frame.loc[~bad_rows].reset_index(drop=True) if bad else frame
        return self.policy.apply(
            source=part.source.name, partition=part.partition, kept=kept, bad=bad
        )


def _plan_parquet(path, fs, sources, *, columns, dtype, blocksize, loader_policy):
    schema = None
    schema_from = ""
    parts = []
    total_rows = 0
    for src in sources:
        try:
            with fs.open(src.path, "rb") as f:
                meta = pq.ParquetFile(f).metadata
        except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
            raise FileNotFoundError(f"cannot read {src.name}: {e}") from e
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(
                f"{src.name} is neither CSV nor Parquet ({e}); read() accepts {_ACCEPTED}"
            ) from e
        file_schema = meta.schema.to_arrow_schema().remove_metadata()
        if schema is None:
            schema, schema_from = file_schema, src.name
        elif not file_schema.equals(schema):
            raise ValueError(
                f"{src.name}: schema {_schema_str(file_schema)} differs from {schema_from}: "
                f"{_schema_str(schema)}"
            )
        groups: list[int] = []
        group_bytes = 0
        offset = 0
        start = 0
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            if groups and blocksize is not None and group_bytes + rg.total_byte_size > blocksize:
                parts.append(_ParquetPart(len(parts), src, tuple(groups), start))
                groups, group_bytes, start = [], 0, offset
            groups.append(g)
            group_bytes += rg.total_byte_size
            offset += rg.num_rows
        if groups:
            parts.append(_ParquetPart(len(parts), src, tuple(groups), start))
        total_rows += meta.num_rows
    if total_rows == 0:
        raise _no_rows(path, sources)
    assert schema is not None

    available = [n for n in schema.names if not n.startswith("__index_level_")]
    selected = _select(columns, available, schema_from)
    meta_frame = pa.schema([schema.field(c) for c in selected]).empty_table().to_pandas()
    from dask.dataframe.utils import clear_known_categories

    meta_frame = clear_known_categories(meta_frame)
    # For Parquet a given dtype is a cast after reading.
    dtypes = _resolve_dtypes(dict(meta_frame.dtypes.items()), dtype, schema_from)
    casts = {c: d for c, d in dtypes.items() if d != meta_frame.dtypes[c]}
    if casts:
        meta_frame = meta_frame.astype(casts)
    loader = _ParquetLoader(fs, dtypes, loader_policy("row"), casts)
    return loader, parts, meta_frame


def _schema_str(schema: pa.Schema) -> str:
    return "{" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "}"


def write_parquet(df, path, *, storage_options=None, compression="snappy") -> list[str]:
    """Write a pandas or Dask DataFrame as ``part-00000.parquet``, ... under directory ``path``
    (local or fsspec URL), without the index. Returns the written paths, in partition order."""
    fs, root = url_to_fs(os.fspath(path), **(storage_options or {}))
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    if isinstance(df, pd.DataFrame):
        target = f"{root}/part-00000.parquet"
        with fs.open(target, "wb") as f:
            pq.write_table(
                pa.Table.from_pandas(df, preserve_index=False), f, compression=compression
            )
        return [_display(fs, target)]
    df.to_parquet(
        os.fspath(path),
        write_index=False,
        compression=compression,
        storage_options=storage_options,
        name_function=lambda i: f"part-{i:05d}.parquet",
    )
    return [_display(fs, f"{root}/part-{i:05d}.parquet") for i in range(df.npartitions)]
