"""Reading CSV and Parquet into Dask DataFrames, with schema checks and a bad-row policy.

:func:`read` opens a path, glob, directory, list of paths or fsspec URL (``file://``,
``memory://``, ``s3://`` ...) and returns a lazy ``dask.dataframe.DataFrame``. It checks what it can
cheaply at call time (files exist, are CSV or Parquet, agree on their columns, hold at least one
row) and checks every row when a partition is computed.

Bad rows are malformed CSV lines (wrong number of fields, unparseable quoting, not UTF-8), values
that do not parse as their column's type (``"abc"`` in a float column), and non-finite values
(``inf``, ``-inf``) in floating-point columns. A *missing* value (an empty CSV field, ``NA``,
``NaN``, a Parquet null or NaN) is not bad: it is left for the imputer. What happens to bad rows is
the policy ``on_bad_rows``:

``"raise"``
    computing a partition that holds a bad row raises :class:`BadRowsError`, naming the file, the
    partition, the row (the 1-based *line number* in a CSV file, the 0-based *row index* in a
    Parquet file) and the column.
``"quarantine"``
    bad rows are dropped from the frame and written, one Parquet file per partition, under
    ``quarantine_path``; :func:`quarantine_report` sums them up after the compute. For every
    computed partition, rows in the source = rows returned + rows quarantined.

Example
-------
>>> from pipeline.io import read, quarantine_report
>>> df = read("data/*.csv", on_bad_rows="quarantine", quarantine_path="bad/")  # doctest: +SKIP
>>> n = len(df)                                                                # doctest: +SKIP
>>> quarantine_report("bad/")["rows_quarantined"]                              # doctest: +SKIP
3
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from dask.utils import natural_sort_key, parse_bytes
from fsspec.core import url_to_fs
from fsspec.utils import infer_compression

if TYPE_CHECKING:
    import dask.dataframe as dd

# dask.dataframe is imported where a frame is built, on the client: the loaders themselves need
# only pandas and pyarrow (dask.dataframe with dask.array, and sparse and numba where installed,
# costs 35-90 MiB of RSS; see the README's larger-than-memory section).

__all__ = [
    "BAD_ROW_POLICIES",
    "FORMATS",
    "BadRowsError",
    "infer_format",
    "quarantine_report",
    "read",
    "write_parquet",
]

BAD_ROW_POLICIES = ("raise", "quarantine")
FORMATS = ("csv", "parquet")
BAD_ROW_REASONS = ("malformed", "type", "non_finite")

_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_ACCEPTED = "CSV (.csv, optionally compressed: .csv.gz, .csv.bz2, ...) or Parquet (.parquet, .pq)"

# pandas' default missing-value markers, so a clean file reads as pandas.read_csv would read it.
NA_VALUES = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
_NA_SET = frozenset(NA_VALUES)
_TRUE_VALUES = ("True", "TRUE", "true")
_FALSE_VALUES = ("False", "FALSE", "false")

_HEAD_BYTES = 64 * 1024  # read from every CSV file at read() time: header, text check, first row
_SAMPLE_BYTES = 256_000  # read from the first CSV file with data to infer dtypes (dask's default)
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
# Finding files


class _Source(NamedTuple):
    path: str  # as the filesystem names it (protocol stripped)
    name: str  # as error messages and the quarantine name it
    size: int | None
    stamp: str  # changes when the file changes, so graph keys do too


def _format_of(name: str) -> str | None:
    base = posixpath.basename(name).lower()
    compressed = infer_compression(base) is not None
    if compressed:
        base = base.rsplit(".", 1)[0]
    if base.endswith(_CSV_SUFFIXES):
        return "csv"
    if base.endswith(_PARQUET_SUFFIXES) and not compressed:
        return "parquet"
    return None


def _display(fs, path: str) -> str:
    return path if "file" in _protocols(fs) else fs.unstrip_protocol(path)


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _hidden(relative: str) -> bool:
    # _SUCCESS, _metadata, .crc files and the like, which writers leave next to the data
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _expand(path, storage_options) -> tuple[Any, list[_Source]]:
    """The filesystem and the files behind ``path``; FileNotFoundError if there are none."""
    items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not items:
        raise FileNotFoundError("read() got an empty list of paths")
    items = [os.fspath(p) for p in items]
    fs, _ = url_to_fs(items[0], **(storage_options or {}))
    found: dict[str, dict] = {}
    for item in items:
        p = fs._strip_protocol(item)
        if any(ch in p for ch in "*?["):
            matches = {k: v for k, v in fs.glob(p, detail=True).items() if v["type"] == "file"}
            if not matches:
                raise FileNotFoundError(f"no files match {item!r}")
        else:
            try:
                info = fs.info(p)
            except (FileNotFoundError, PermissionError, OSError) as e:
                raise FileNotFoundError(f"no such file or directory: {item!r} ({e})") from None
            if info["type"] == "directory":
                root = p.rstrip("/")
                matches = {
                    k: v
                    for k, v in fs.find(p, detail=True).items()
                    if v["type"] == "file" and not _hidden(k[len(root) :])
                }
                if not matches:
                    raise FileNotFoundError(f"directory {item!r} holds no data files")
            else:
                matches = {p: info}
        for k in sorted(matches, key=natural_sort_key):  # part-2 before part-10, as dask does
            found.setdefault(k, matches[k])
    sources = []
    for k, info in found.items():
        stamp = info.get("mtime") or info.get("ETag") or info.get("LastModified") or ""
        sources.append(_Source(k, _display(fs, k), info.get("size"), str(stamp)))
    return fs, sources


def _common_format(sources: list[_Source]) -> str:
    formats = {}
    for s in sources:
        fmt = _format_of(s.path)
        if fmt is None:
            raise ValueError(
                f"{s.name}: unknown file type; read() accepts {_ACCEPTED}. "
                "Pass format='csv' or format='parquet' if the extension is misleading."
            )
        formats.setdefault(fmt, s.name)
    if len(formats) > 1:
        raise ValueError(
            f"mixed formats in one read: {formats['csv']} is CSV, {formats['parquet']} is "
            "Parquet; read them separately"
        )
    return next(iter(formats))


def infer_format(path, *, storage_options=None) -> str:
    """``"csv"`` or ``"parquet"`` for a file, glob, directory, list of paths or URL.

    The extension decides (``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``); a directory or glob is
    listed and its files must agree. Raises ValueError for an unknown extension or mixed formats,
    FileNotFoundError when a directory or glob matches nothing.

    >>> infer_format("s3://bucket/part-0.parquet")
    'parquet'
    """
    if isinstance(path, (str, os.PathLike)):
        name = os.fspath(path)
        fmt = _format_of(name)
        if fmt is not None and not any(ch in name for ch in "*?["):
            return fmt
    _, sources = _expand(path, storage_options)
    return _common_format(sources)


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
# Arrow memory on the workers


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as a pandas frame, converted on this thread: Arrow's conversion threads
    keep per-thread allocator caches (about 10 MiB of RSS on a worker) for a copy that is
    memory-bound anyway."""
    return table.to_pandas(use_threads=False)


def _release_arrow_memory() -> None:
    """Give the pages Arrow's pool freed back to the OS (< 1 µs when there are none).

    Arrow's default pool (mimalloc or jemalloc) keeps freed memory for reuse. After a
    partition is read and its table dropped, that was about 50-60 MiB of RSS per worker
    process (6 MB row groups, measured 2026-11), never used again by anything but the next
    read, and counted by Dask's memory monitor like any other memory: at a 400 MiB worker
    limit it is what paused the workers. Released, the steady state of a read is ~3 MiB.
    """
    pa.default_memory_pool().release_unused()


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


# --------------------------------------------------------------------------------------------
# CSV


class _CSVPart(NamedTuple):
    partition: int
    source: _Source
    compression: str | None
    offset: int
    length: int | None  # None: the whole file
    first: bool  # holds the header line


def _line_start(f, pos: int, size: int) -> int:
    """The first line start at or after byte ``pos``: where a block beginning at ``pos`` starts."""
    if pos <= 0:
        return 0
    if pos >= size:
        return size
    f.seek(pos - 1)
    at = pos - 1
    while True:
        chunk = f.read(1 << 16)
        if not chunk:
            return size
        i = chunk.find(b"\n")
        if i >= 0:
            return at + i + 1
        at += len(chunk)


@dataclass(frozen=True)
class _CSVLoader:
    """Loads one CSV block (a byte range of one file, cut at line ends) as a pandas DataFrame.

    Clean blocks go through pyarrow's CSV reader with the declared column types. A block that
    pyarrow rejects, or that holds ``inf``, is parsed again line by line in Python, which finds
    each bad line and value; only then are line numbers counted.
    """

    fs: Any
    names: tuple[str, ...]
    dtypes: dict[str, Any] = field(hash=False)  # the returned columns, in order
    policy: _Policy
    gpu: bool = False  # parse with cudf.read_csv and return cuDF frames (backend="cudf")

    def __dask_tokenize__(self):
        return (
            "pipeline.io._CSVLoader",
            self.fs,
            self.names,
            [(c, str(d)) for c, d in self.dtypes.items()],
            self.policy.on_bad_rows,
            self.policy.quarantine.root if self.policy.quarantine else None,
            self.gpu,
        )

    def __call__(self, part: _CSVPart) -> pd.DataFrame:
        data, data_start = self._read(part)
        fast = self._fast_gpu(data) if self.gpu else self._fast(data)
        if fast is not None:
            return self.policy.apply(
                source=part.source.name, partition=part.partition, kept=fast, bad=[]
            )
        lines_before = 1 if part.first else self._count_lines(part, data_start)
        kept, bad = self._slow(data, lines_before)
        if self.gpu:  # the host found the bad rows; the kept ones cross to the GPU here
            from .csv_gpu import to_gpu_frame

            kept = to_gpu_frame(kept)
        return self.policy.apply(
            source=part.source.name, partition=part.partition, kept=kept, bad=bad
        )

    def _fast_gpu(self, data: bytes) -> Any:
        """The block parsed on this worker's GPU, or None if it needs the host's checks."""
        from .csv_gpu import parse_block

        return parse_block(data, self.names, self.dtypes, NA_VALUES, _TRUE_VALUES,
                           _FALSE_VALUES)

    def _read(self, part: _CSVPart) -> tuple[bytes, int]:
        """The block's bytes without the header line, and their offset in the file."""
        with self.fs.open(part.source.path, "rb", compression=part.compression) as f:
            if part.length is None:
                start, data = 0, f.read()
            else:
                size = part.source.size
                start = _line_start(f, part.offset, size)
                end = _line_start(f, part.offset + part.length, size)
                f.seek(start)
                data = f.read(end - start)
        if part.first:
            nl = data.find(b"\n")
            skip = len(data) if nl < 0 else nl + 1
            return data[skip:], start + skip
        return data, start

    def _count_lines(self, part: _CSVPart, upto: int) -> int:
        n = 0
        with self.fs.open(part.source.path, "rb", compression=part.compression) as f:
            left = upto
            while left > 0:
                chunk = f.read(min(left, 1 << 24))
                if not chunk:
                    break
                n += chunk.count(b"\n")
                left -= len(chunk)
        return n

    def _finish(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.astype(self.dtypes).reset_index(drop=True)

    def _fast(self, data: bytes) -> pd.DataFrame | None:
        """The block parsed by pyarrow, or None if it holds anything bad."""
        if not data.strip(b"\r\n"):
            return _empty_frame(self.dtypes)
        try:
            table = pacsv.read_csv(
                pa.BufferReader(data),
                read_options=pacsv.ReadOptions(column_names=list(self.names), use_threads=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: _arrow_type(d) for c, d in self.dtypes.items()},
                    include_columns=list(self.dtypes),
                    null_values=list(NA_VALUES),
                    true_values=list(_TRUE_VALUES),
                    false_values=list(_FALSE_VALUES),
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
            return None
        for c, d in self.dtypes.items():
            if (_is_int(d) or _is_bool(d)) and table.column(c).null_count:
                return None  # int and bool columns cannot hold missing values
        frame = _to_pandas(table)
        del table
        _release_arrow_memory()
        for c, d in self.dtypes.items():
            if _is_float(d) and np.isinf(frame[c].to_numpy(dtype="float64")).any():
                return None
        try:
            return self._finish(frame)
        except (ValueError, TypeError):  # e.g. a value outside a user-given category
            return None

    def _text_columns(self, lines: list[bytes]) -> pa.Table:
        """Well-formed lines as a table of Arrow strings (missing-value markers as nulls)."""
        selected = list(self.dtypes)
        try:
            return pacsv.read_csv(
                pa.BufferReader(b"\n".join(lines) + b"\n"),
                read_options=pacsv.ReadOptions(column_names=list(self.names), use_threads=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in selected},
                    include_columns=selected,
                    null_values=list(NA_VALUES),
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
        except pa.ArrowInvalid:  # quoting pyarrow reads differently from Python's csv module
            rows = [next(csv.reader((ln.decode(),))) for ln in lines]
            index = [self.names.index(c) for c in selected]
            return pa.table(
                {
                    c: pa.array([None if r[i] in _NA_SET else r[i] for r in rows], pa.string())
                    for c, i in zip(selected, index, strict=True)
                }
            )

    def _slow(self, data: bytes, lines_before: int) -> tuple[pd.DataFrame, list[tuple]]:
        """Check line by line: the kept rows, and ``(line, column, reason, detail, raw)``."""
        n = len(self.names)
        lines: list[bytes] = []
        linenos: list[int] = []
        bad: list[tuple] = []
        for i, raw in enumerate(data.split(b"\n")):
            raw = raw.removesuffix(b"\r")
            if not raw:
                continue  # blank lines are not rows, as in pandas and pyarrow
            lineno = lines_before + i + 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", errors="replace")
                bad.append((lineno, None, "malformed", "line is not UTF-8 text", text))
                continue
            if '"' not in text:
                n_fields = text.count(",") + 1
            else:
                try:
                    n_fields = len(next(csv.reader((text,), strict=True)))
                except csv.Error as e:
                    bad.append((lineno, None, "malformed", f"cannot parse the line ({e})", text))
                    continue
            if n_fields != n:
                column = self.names[n_fields] if n_fields < n else None
                bad.append((lineno, column, "malformed", f"{n_fields} fields, expected {n}", text))
                continue
            lines.append(raw)
            linenos.append(lineno)
        if not lines:
            return _empty_frame(self.dtypes), bad

        table = self._text_columns(lines)
        row_bad = np.zeros(len(lines), dtype=bool)
        converted = {}
        for c, d in self.dtypes.items():
            converted[c], problems = _convert(table.column(c), d)
            for mask, reason in problems:
                for j in np.flatnonzero(mask & ~row_bad):
                    value = table.column(c)[int(j)].as_py()
                    detail = _bad_message(reason, d, "" if value is None else value)
                    bad.append((linenos[j], c, reason, detail, lines[j].decode()))
                row_bad |= mask
        kept = pd.DataFrame(converted).loc[~row_bad]
        return self._finish(kept), bad


def _read_head(fs, src: _Source, compression, nbytes: int) -> tuple[bytes, bool]:
    """The first ``nbytes`` of a file, extended to the end of its first line; and whether the
    whole file was read."""
    try:
        with fs.open(src.path, "rb", compression=compression) as f:
            head = f.read(nbytes)
            at_eof = len(head) < nbytes
            while not at_eof and b"\n" not in head:
                more = f.read(nbytes)
                head += more
                at_eof = len(more) < nbytes
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise FileNotFoundError(f"cannot read {src.name}: {e}") from e
    except (OSError, EOFError) as e:  # gzip.BadGzipFile and friends
        raise ValueError(
            f"{src.name} is neither CSV nor Parquet ({e}); read() accepts {_ACCEPTED}"
        ) from e
    return head, at_eof


def _check_text(src: _Source, head: bytes, at_eof: bool) -> str:
    if head.startswith(b"PAR1"):
        raise ValueError(
            f"{src.name} is a Parquet file, not CSV; pass format='parquet' or rename it"
        )
    body = head if at_eof else head[: head.rfind(b"\n") + 1]
    try:
        if b"\x00" in head:
            raise UnicodeDecodeError("utf-8", head, 0, 1, "NUL byte")
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(
            f"{src.name} is neither CSV nor Parquet (binary content, not UTF-8 text); "
            f"read() accepts {_ACCEPTED}"
        ) from None


def _split_lines(text: str) -> list[str]:
    return [ln.removesuffix("\r") for ln in text.split("\n")]


def _plan_csv(path, fs, sources, *, columns, dtype, blocksize, loader_policy):
    expected: tuple[str, ...] | None = None
    expected_from = ""
    sample_src: tuple[_Source, str | None] | None = None
    parts_of: list[tuple[_Source, str | None]] = []
    for src in sources:
        compression = infer_compression(src.path)
        head, at_eof = _read_head(fs, src, compression, _HEAD_BYTES)
        text = _check_text(src, head, at_eof)
        if not text.strip():
            continue  # an empty file: no header, no rows
        lines = _split_lines(text)
        names = tuple(next(csv.reader((lines[0],))))
        dups = sorted(c for c, k in Counter(names).items() if k > 1)
        if dups:
            raise ValueError(f"{src.name}: duplicate column name(s) {dups} in the CSV header")
        if expected is None:
            expected, expected_from = names, src.name
        elif names != expected:
            raise ValueError(
                f"{src.name}: header {list(names)} differs from {expected_from}: {list(expected)}"
            )
        has_rows = any(lines[1:]) or not at_eof  # more bytes than the head: more lines
        if has_rows and sample_src is None:
            sample_src = (src, compression)
        parts_of.append((src, compression))
    if sample_src is None:
        raise _no_rows(path, sources)
    assert expected is not None

    src, compression = sample_src
    sample, at_eof = _read_head(fs, src, compression, _SAMPLE_BYTES)
    lines = _split_lines(_check_text(src, sample, at_eof))  # whole lines only
    rows = [next(csv.reader((ln,))) for ln in lines[1:] if ln]
    rows = [r for r in rows if len(r) == len(expected)]
    raw = pd.DataFrame(rows, columns=list(expected), dtype=object)
    inferred = {c: _infer_column(raw[c]) for c in expected}
    dtypes = _resolve_dtypes(inferred, dtype, src.name)
    dtypes = {c: dtypes[c] for c in _select(columns, expected, src.name)}

    parts = []
    for src, compression in parts_of:
        if compression is not None or blocksize is None or not src.size:
            offsets = [(0, None)]
        else:
            offsets = [(o, blocksize) for o in range(0, src.size, blocksize)]
        for i, (offset, length) in enumerate(offsets):
            parts.append(_CSVPart(len(parts), src, compression, offset, length, i == 0))
    loader = _CSVLoader(fs, expected, dtypes, loader_policy("line"))
    return loader, parts, _empty_frame(dtypes)


def _select(columns, available, where) -> list[str]:
    if columns is None:
        return list(available)
    columns = [columns] if isinstance(columns, str) else list(columns)
    missing = [c for c in columns if c not in available]
    if missing:
        raise ValueError(f"column(s) {missing} not found in {where}; it has {list(available)}")
    return columns


def _no_rows(path, sources: list[_Source]) -> ValueError:
    given = os.fspath(path) if isinstance(path, os.PathLike) else path
    if len(sources) == 1:
        return ValueError(f"no data rows in {given!r}: {sources[0].name} is empty")
    return ValueError(
        f"no data rows in {given!r}: its {len(sources)} files ({sources[0].name}, ...) are empty"
    )


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


# --------------------------------------------------------------------------------------------
# The public entry points


def read(
    path,
    *,
    format=None,
    columns=None,
    blocksize="64MiB",
    storage_options=None,
    dtype=None,
    on_bad_rows="raise",
    quarantine_path=None,
    backend=None,
) -> dd.DataFrame:
    """A lazy Dask DataFrame over CSV or Parquet files.

    Parameters
    ----------
    path : str, os.PathLike or list of them
        A file, glob, directory (its files, recursively, except names starting with ``.`` or
        ``_``) or fsspec URL (``file://``, ``memory://``, ``s3://`` ...); a list of any of these
        on one filesystem.
    format : {"csv", "parquet"}, optional
        Inferred from the extensions (:func:`infer_format`) when not given.
    columns : list of str, optional
        Columns to return. Bad values are looked for in these columns only (a malformed CSV line
        is always bad).
    blocksize : int or str or None
        Target bytes per partition. CSV files are cut at line ends into blocks of about this size
        (compressed CSV files are one partition each); Parquet row groups are grouped up to this
        size (uncompressed bytes), never across files. None: one partition per file. A CSV field
        may then not contain a line break (as with ``dask.dataframe.read_csv``).
    storage_options : dict, optional
        For fsspec (``{"anon": True}`` for public S3 buckets ...).
    dtype : dtype or dict of column -> dtype, optional
        CSV column types. By default inferred from the first 256 kB of the first file with rows,
        as pandas does, except that a column whose sample values are mostly numbers is float64
        and its stray words become bad rows. An int or bool column has no missing values (they
        are bad rows there): pass ``dtype={"col": "float64"}`` if later blocks may have them.
        For Parquet, a cast after reading.
    on_bad_rows : {"raise", "quarantine"}
        See the module docstring. Only computing the frame finds bad rows.
    quarantine_path : str, optional
        Required with ``on_bad_rows="quarantine"``: a directory (local or fsspec URL, opened with
        ``storage_options`` when its protocol is ``path``'s) that this read owns; its earlier
        ``part-*.parquet`` files are deleted.
    backend : {None, "pandas", "cudf"}
        ``"cudf"`` (for GPU workers; needs dask-cudf): CSV blocks are parsed on the workers'
        GPUs with ``cudf.read_csv`` and checked there, with the same dtypes, missing-value
        markers and bad-row reports as on the CPU (a block that fails a check is parsed on the
        host, then moved: see :mod:`pipeline.csv_gpu`); Parquet partitions are read on the host
        and converted with ``DataFrame.to_backend``.

    Raises
    ------
    FileNotFoundError
        nothing matches ``path``, or a file cannot be opened.
    ValueError
        a file is neither CSV nor Parquet, files disagree on their columns, a CSV header repeats
        a column name, the files hold no rows, or an argument is invalid.

    Notes
    -----
    Partitions: one per CSV block (byte range of one file, cut at line ends), one per group of
    Parquet row groups of one file; each knows its file and where it starts, so errors can name
    them. Line numbers are counted only when a block holds a bad row: clean blocks are parsed once
    by pyarrow. Each partition has its own RangeIndex, as with ``dask.dataframe.read_csv``; a
    pandas index stored in a Parquet file is read as an ordinary column.
    """
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_rows must be one of {BAD_ROW_POLICIES}, got {on_bad_rows!r}")
    if on_bad_rows == "quarantine" and quarantine_path is None:
        raise ValueError("on_bad_rows='quarantine' needs quarantine_path= (a directory)")
    if format not in (None, *FORMATS):
        raise ValueError(f"format must be one of {FORMATS} or None, got {format!r}")
    if backend not in (None, "pandas", "cudf"):
        raise ValueError(f"backend must be None, 'pandas' or 'cudf', got {backend!r}")
    if isinstance(blocksize, str):
        blocksize = parse_bytes(blocksize)

    fs, sources = _expand(path, storage_options)
    fmt = format or _common_format(sources)

    quarantine = None
    if on_bad_rows == "quarantine":
        quarantine = _open_quarantine(quarantine_path, fs, storage_options)

    def loader_policy(row_label: str) -> _Policy:
        return _Policy(on_bad_rows, quarantine, row_label)

    plan = _plan_csv if fmt == "csv" else _plan_parquet
    loader, parts, meta = plan(
        path,
        fs,
        sources,
        columns=columns,
        dtype=dtype,
        blocksize=blocksize,
        loader_policy=loader_policy,
    )
    if quarantine is not None:
        manifest = {"partitions": len(parts), "format": fmt, "sources": [s.name for s in sources]}
        with quarantine.fs.open(f"{quarantine.root}/{_MANIFEST}", "w") as f:
            json.dump(manifest, f)
    if backend == "cudf" and fmt == "csv":  # parsed on the GPU, not converted afterwards
        from .csv_gpu import to_gpu_frame

        loader, meta = replace(loader, gpu=True), to_gpu_frame(meta)
    import dask.dataframe as dd

    df = dd.from_map(loader, parts, meta=meta, label=f"read-{fmt}", enforce_metadata=False)
    if backend == "cudf" and fmt != "csv":
        df = df.to_backend("cudf")
    return df


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
