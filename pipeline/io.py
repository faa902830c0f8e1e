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

import json
from dataclasses import replace
from typing import TYPE_CHECKING

from dask.utils import parse_bytes

# The parts of read(), one module each; the names other modules and tests import from
# pipeline.io are re-exported here.
from .io_bad_rows import (
    _MANIFEST,
    BAD_ROW_POLICIES,
    BAD_ROW_REASONS,  # noqa: F401 (re-exported)
    BadRowsError,
    _open_quarantine,
    _Policy,
    _Quarantine,  # noqa: F401 (re-exported)
    _records,  # noqa: F401 (re-exported)
    quarantine_report,
)
from .io_csv import _plan_csv
from .io_parquet import _plan_parquet, write_parquet
from .io_sources import FORMATS, _common_format, _expand, infer_format

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
    import dask
    import dask.dataframe as dd
    from dask.dataframe._pyarrow import is_object_string_dtype, is_object_string_index
    from dask.dataframe.utils import pyarrow_strings_enabled

    # dask adds a string conversion (dask.dataframe._pyarrow) to every read task; unpickling it
    # imports dask.dataframe + dask.array (+ sparse, numba) on each worker, ~96 MiB of RSS.
    # The loaders give every partition the meta's dtypes, so when no column (nor the index) is
    # an object/str string the conversion changes nothing: leave it out then.
    convert = pyarrow_strings_enabled() and (
        is_object_string_index(meta.index)
        or any(is_object_string_dtype(t) for t in meta.dtypes))
    with dask.config.set({"dataframe.convert-string": convert}):
        df = dd.from_map(loader, parts, meta=meta, label=f"read-{fmt}", enforce_metadata=False)
    if backend == "cudf" and fmt != "csv":
        df = df.to_backend("cudf")
    return df
