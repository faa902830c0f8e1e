"""Finding the files :func:`pipeline.io.read` reads: expanding paths, globs, directories and
URLs into sources, telling CSV from Parquet, and selecting columns."""

from __future__ import annotations

import os
import posixpath
from typing import Any, NamedTuple

from dask.utils import natural_sort_key
from fsspec.core import url_to_fs
from fsspec.utils import infer_compression

FORMATS = ("csv", "parquet")


_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_ACCEPTED = "CSV (.csv, optionally compressed: .csv.gz, .csv.bz2, ...) or Parquet (.parquet, .pq)"


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
