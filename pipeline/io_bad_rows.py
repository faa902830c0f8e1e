"""The bad-row policy of :func:`pipeline.io.read`: :class:`BadRowsError`, the quarantine
(one Parquet file per partition) and :func:`quarantine_report`."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from .io_sources import _protocols

BAD_ROW_POLICIES = ("raise", "quarantine")


BAD_ROW_REASONS = ("malformed", "type", "non_finite")


_QUARANTINE_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("partition", pa.int64()),
        ("row", pa.int64()),
        ("column", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)
_ROWS_KEPT_KEY = b"pipeline.rows_kept"
_MANIFEST = "_manifest.json"


class BadRowsError(ValueError):
    """A partition holds rows that are malformed, mistyped or non-finite.

    Attributes name the first bad row: ``file``, ``partition`` (index in the Dask DataFrame),
    ``row`` (1-based line number for CSV, 0-based row index for Parquet), ``column`` (None when
    the whole line is malformed and no single column is to blame) and ``reason`` (one of
    ``"malformed"``, ``"type"``, ``"non_finite"``).
    """

    def __init__(self, message, file=None, partition=None, row=None, column=None, reason=None):
        super().__init__(message)
        self.file = file
        self.partition = partition
        self.row = row
        self.column = column
        self.reason = reason

    def __reduce__(self):  # travels from a worker to the client with its attributes
        return (
            type(self),
            (self.args[0], self.file, self.partition, self.row, self.column, self.reason),
        )


# --------------------------------------------------------------------------------------------
# Bad-row handling shared by the CSV and Parquet loaders


@dataclass(frozen=True)
class _Quarantine:
    """Where one read's bad rows go: ``part-<partition>.parquet`` files under ``root``."""

    fs: Any
    root: str

    def file(self, partition: int) -> str:
        return f"{self.root}/part-{partition:05d}.parquet"

    def write(self, partition: int, records: pd.DataFrame, rows_kept: int) -> None:
        table = pa.Table.from_pandas(records, schema=_QUARANTINE_SCHEMA, preserve_index=False)
        table = table.replace_schema_metadata({_ROWS_KEPT_KEY: str(rows_kept).encode()})
        final = self.file(partition)
        # Write aside, then rename: a recomputed partition never leaves half a file behind.
        tmp = f"{final}.{uuid.uuid4().hex}.tmp"
        with self.fs.open(tmp, "wb") as f:
            pq.write_table(table, f)
        self.fs.mv(tmp, final)


def _records(source: str, partition: int, rows, columns, reasons, raws) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_file": pd.Series([source] * len(rows), dtype=object),
            "partition": pd.Series([partition] * len(rows), dtype="int64"),
            "row": pd.Series(rows, dtype="int64"),
            "column": pd.Series(columns, dtype=object),
            "reason": pd.Series(reasons, dtype=object),
            "raw": pd.Series(raws, dtype=object),
        }
    )


@dataclass(frozen=True)
class _Policy:
    on_bad_rows: str
    quarantine: _Quarantine | None
    row_label: str  # "line" (CSV) or "row" (Parquet)

    def apply(self, *, source: str, partition: int, kept: pd.DataFrame, bad: list[tuple]):
        """``bad`` holds ``(row, column, reason, detail, raw)`` tuples, in any order."""
        bad = sorted(bad, key=lambda b: b[0])
        if bad and self.on_bad_rows == "raise":
            row, column, reason, detail, _ = bad[0]
            where = f", column {column!r}" if column is not None else ""
            more = (
                f"; {len(bad)} bad rows in this partition, the first shown" if len(bad) > 1 else ""
            )
            raise BadRowsError(
                f"{source}, partition {partition}, {self.row_label} {row}{where}: {detail} "
                f"[{reason}]{more}. Fix the data, pass dtype=, or read with "
                "on_bad_rows='quarantine', quarantine_path=...",
                source,
                partition,
                row,
                column,
                reason,
            )
        if self.quarantine is not None:
            records = _records(
                source,
                partition,
                [b[0] for b in bad],
                [b[1] for b in bad],
                [b[2] for b in bad],
                [b[4] for b in bad],
            )
            self.quarantine.write(partition, records, len(kept))
        return kept


def _open_quarantine(quarantine_path, data_fs, storage_options) -> _Quarantine:
    qpath = os.fspath(quarantine_path)
    fs, _ = url_to_fs(qpath)
    if storage_options and set(_protocols(fs)) & set(_protocols(data_fs)):
        fs, _ = url_to_fs(qpath, **storage_options)
    root = fs._strip_protocol(qpath).rstrip("/")
    fs.makedirs(root, exist_ok=True)
    stale = fs.glob(f"{root}/part-*.parquet")
    if stale:
        fs.rm(stale)
    return _Quarantine(fs, root)


def quarantine_report(quarantine_path, *, storage_options=None) -> dict:
    """What a quarantining :func:`read` set aside, for the partitions computed so far.

    Returns a dict: ``rows_quarantined``, ``rows_kept`` (rows returned by those partitions),
    ``rows_in_source`` (their sum), ``by_reason`` (``{"malformed"|"type"|"non_finite": n}``),
    ``by_column``, ``files`` (source files with quarantined rows, sorted), ``partitions`` (how many
    partitions have reported), ``partitions_expected`` and ``complete`` (all have reported).
    """
    qpath = os.fspath(quarantine_path)
    fs, root = url_to_fs(qpath, **(storage_options or {}))
    root = root.rstrip("/")
    parts = sorted(fs.glob(f"{root}/part-*.parquet"))
    tables, kept = [], 0
    for p in parts:
        with fs.open(p, "rb") as f:
            table = pq.read_table(f)
        kept += int((table.schema.metadata or {}).get(_ROWS_KEPT_KEY, b"0"))
        tables.append(table)
    records = pa.concat_tables(tables).to_pandas() if tables else _QUARANTINE_SCHEMA.empty_table()
    if isinstance(records, pa.Table):
        records = records.to_pandas()
    expected = None
    manifest = f"{root}/{_MANIFEST}"
    if fs.exists(manifest):
        with fs.open(manifest, "r") as f:
            expected = json.load(f)["partitions"]
    return {
        "rows_quarantined": len(records),
        "rows_kept": kept,
        "rows_in_source": kept + len(records),
        "by_reason": {str(k): int(v) for k, v in records["reason"].value_counts().items()},
        "by_column": {str(k): int(v) for k, v in records["column"].dropna().value_counts().items()},
        "files": sorted(set(records["source_file"])),
        "partitions": len(parts),
        "partitions_expected": expected,
        "complete": expected is not None and len(parts) == expected,
    }
