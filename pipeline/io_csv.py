"""The CSV side of :func:`pipeline.io.read`: planning partitions from byte ranges and loading
one partition (parsing, typing and checking every row)."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from fsspec.utils import infer_compression

from .io_arrow import _release_arrow_memory, _to_pandas
from .io_bad_rows import _Policy
from .io_convert import (
    _FALSE_VALUES,
    _NA_SET,
    _TRUE_VALUES,
    NA_VALUES,
    _arrow_type,
    _bad_message,
    _convert,
    _empty_frame,
    _infer_column,
    _is_bool,
    _is_float,
    _is_int,
    _resolve_dtypes,
)
from .io_sources import _ACCEPTED, _no_rows, _select, _Source

_HEAD_BYTES = 64 * 1024  # read from every CSV file at read() time: header, text check, first row
_SAMPLE_BYTES = 256_000  # read from the first CSV file with data to infer dtypes (dask's default)


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

        return parse_block(data, self.names, self.dtypes, NA_VALUES, _TRUE_VALUES, _FALSE_VALUES)

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
