"""One-pass profile of a Dask DataFrame: per-column statistics, sketches and correlations.

:func:`profile` maps ``partition_profile`` over the partitions (pandas or cuDF), merges the
partials with :func:`pipeline.reduce.tree_reduce` (``combine_profiles``) and calls
``dask.compute`` once. Every statistic is mergeable, so nothing needs a second pass:

=====================  ===================================================================
statistic              how it merges (and what it guarantees)
=====================  ===================================================================
count, nulls, min/max  sums and min/max: exact
mean, std              (count, mean, M2) with Chan et al.'s pairwise formulas: exact up to
                       rounding; ``std`` uses ddof=1 like pandas
quantiles              :class:`QuantileSketch`, a deterministic weighted-sample sketch with a
                       tracked rank-error bound (see there)
histogram              ``bins`` equal bins over the exact [min, max], counted from the
                       quantile sketch at the end (a fixed histogram would need min/max
                       before the pass); each count within ``2 * rank error`` of
                       ``numpy.histogram``
distinct               exact value counts while a column has at most ``max_exact_distinct``
                       distinct values, then :class:`HyperLogLog` (~0.81% standard error)
top values             the same exact value counts; past the limit a Misra-Gries summary of
                       ``max_exact_distinct`` counters (counts are lower bounds, at most
                       ``top_count_error`` below the truth)
correlation            co-moment matrices merged with Chan's formulas: Pearson like
                       ``DataFrame.corr()`` on NaN-free data
=====================  ===================================================================

Correlations use complete-case rows (rows where every numeric column is present); pandas uses
pairwise-complete rows, so with missing values the two differ.

The parts live in modules of their own: :mod:`analytics.profile_sketches` (the sketches),
:mod:`analytics.profile_partials` (per-partition partials and their merge) and
:mod:`analytics.profile_html` (the HTML page). This module runs the pass and summarises.

Example
-------
>>> import dask.dataframe as dd, pandas as pd
>>> df = dd.from_pandas(pd.DataFrame({"x": [1.0, 2.0, 3.0, None], "c": list("abba")}),
...                     npartitions=2)
>>> p = profile(df)
>>> p.columns["x"]["mean"], p.columns["c"]["distinct"]
(2.0, 2)
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from pipeline.reduce import tree_levels, tree_reduce

from .profile_html import _fmt, render_html
from .profile_partials import (
    ColumnPartial,
    Moments,
    Plan,
    column_kind,
    combine_profiles,
    partition_profile,
    to_scalar,
)
from .profile_sketches import HyperLogLog, QuantileSketch

__all__ = ["HyperLogLog", "Profile", "QuantileSketch", "profile"]


def profile(
    df,
    *,
    bins: int = 20,
    top_k: int = 10,
    max_exact_distinct: int = 10_000,
    quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
    split_every: int = 8,
    sketch_size: int = 2048,
) -> Profile:
    """Profile every column of ``df`` (a Dask DataFrame; pandas is accepted as one partition).

    Parameters
    ----------
    bins
        Number of equal-width histogram bins over each numeric column's [min, max].
    top_k
        Number of most frequent values reported per column.
    max_exact_distinct
        Columns with at most this many distinct values get exact distinct counts and top
        values; above it, HyperLogLog and Misra-Gries sketches of about this size.
    quantiles
        Probabilities in [0, 1] of the reported quantiles.
    split_every
        Fan-in of the reduction tree.
    sketch_size
        Points kept by each quantile sketch (``m``). The rank error of every quantile is at
        most ``(D + 1) / m`` of the column's non-null count, ``D`` the depth of the reduction
        tree (``ceil(log_split_every(npartitions))``, at least 1): 0.2% for ``m=2048``,
        ``D=3`` (up to 512 partitions with ``split_every=8``). The bound actually reached is
        tracked and reported as ``quantile_rank_error``.

    Returns
    -------
    Profile
    """
    if isinstance(df, pd.DataFrame):
        import dask.dataframe as dd  # here: workers unpickling the partials import this package
        df = dd.from_pandas(df, npartitions=1)
    if bins < 1 or top_k < 0 or max_exact_distinct < 1 or sketch_size < 2:
        raise ValueError("bins, max_exact_distinct >= 1, top_k >= 0, sketch_size >= 2 expected")
    quantiles = tuple(float(q) for q in quantiles)
    if any(not 0.0 <= q <= 1.0 for q in quantiles):
        raise ValueError(f"quantiles must lie in [0, 1], got {quantiles}")

    kinds = {name: column_kind(dtype) for name, dtype in df.dtypes.items()}
    plan = Plan(
        numeric=tuple(n for n, k in kinds.items() if k == "numeric"),
        other=tuple(n for n, k in kinds.items() if k != "numeric"),
        ordered=tuple(n for n, k in kinds.items() if k == "datetime"),
        sketch_size=int(sketch_size),
        max_exact_distinct=int(max_exact_distinct),
    )
    leaves = [dask.delayed(partition_profile, pure=True)(part, plan) for part in df.to_delayed()]
    root = tree_reduce(
        leaves,
        functools.partial(combine_profiles, plan=plan),
        split_every=split_every,
        name="combine_profiles",
    )
    (merged,) = dask.compute(root)

    settings = {
        "bins": bins,
        "top_k": top_k,
        "max_exact_distinct": max_exact_distinct,
        "quantiles": list(quantiles),
        "split_every": split_every,
        "sketch_size": sketch_size,
        "rank_error_bound": (len(tree_levels(len(leaves), split_every)) + 1) / sketch_size,
    }
    columns = {
        name: _summarize_column(
            merged.columns[name], str(df.dtypes[name]), kinds[name], merged.n_rows, settings
        )
        for name in kinds
    }
    return Profile(
        n_rows=merged.n_rows,
        n_partitions=len(leaves),
        columns=columns,
        correlation=_correlation(merged.comoments, plan.numeric),
        settings=settings,
    )


# --------------------------------------------------------------------------------------------


# Final summaries
# --------------------------------------------------------------------------------------------


def _summarize_column(part: ColumnPartial, dtype: str, kind: str, n_rows: int, settings) -> dict:
    d = part.distinct
    exact = d.counts is not None
    top = _top(d.counts if exact else d.heavy, settings["top_k"])
    out = {
        "dtype": dtype,
        "kind": kind,
        "count": part.count,
        "nulls": part.nulls,
        "null_fraction": part.nulls / n_rows if n_rows else 0.0,
        # an estimate never exceeds the values present
        "distinct": len(d.counts) if exact else min(round(d.hll.estimate()), part.count),
        "distinct_exact": exact,
        "distinct_relative_error": 0.0 if exact else HyperLogLog.relative_error,
        "top": top,
        "top_exact": exact,
        "top_count_error": d.top_count_error,
    }
    if kind in ("numeric", "datetime"):
        out["min"], out["max"] = part.minimum, part.maximum
    if kind != "numeric":
        return out
    n, mean, m2 = part.moments
    sketch = part.sketch
    out["mean"] = float(mean) if n else math.nan
    out["std"] = math.sqrt(m2 / (n - 1)) if n > 1 else math.nan
    out["quantiles"] = {
        q: (float(part.maximum) if q == 1.0 and n else sketch.quantile(q))
        for q in settings["quantiles"]
    }
    out["quantile_rank_error"] = sketch.error / n if n else 0.0
    if n:
        lo, hi = float(part.minimum), float(part.maximum)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5  # as numpy.histogram
        edges = np.linspace(lo, hi, settings["bins"] + 1)
        counts = sketch.histogram(edges)
    else:
        edges, counts = np.array([]), np.array([], dtype=np.int64)
    out["histogram"] = {
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "count_error": math.floor(2 * sketch.error),
    }
    return out


def _top(counts: pd.Series, k: int) -> list:
    if counts is None or not len(counts) or k == 0:
        return []
    try:
        counts = counts.sort_index()  # ties in a stable, value-ordered way when comparable
    except TypeError:
        pass
    top = counts.sort_values(ascending=False, kind="stable").head(k)
    return [[to_scalar(v), int(c)] for v, c in top.items()]


def _correlation(comoments: Moments | None, names: tuple) -> pd.DataFrame:
    if comoments is None:
        return pd.DataFrame(index=list(names), columns=list(names), dtype=np.float64)
    scatter = np.asarray(comoments.m2, dtype=np.float64)
    if comoments.n < 2:
        scatter = np.full_like(scatter, np.nan)
    scale = np.sqrt(np.outer(np.diag(scatter), np.diag(scatter)))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = scatter / scale
    r[scale == 0] = np.nan
    return pd.DataFrame(r, index=list(names), columns=list(names))


# --------------------------------------------------------------------------------------------
# The Profile
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Profile:
    """Result of :func:`profile`.

    Attributes
    ----------
    n_rows, n_partitions
        Size of the profiled frame.
    columns
        ``{name: {...}}`` per column: ``dtype``, ``kind`` (numeric, categorical, boolean,
        datetime), ``count``, ``nulls``, ``null_fraction``, ``distinct`` (+ ``distinct_exact``,
        ``distinct_relative_error``), ``top`` (``[[value, count], ...]``, + ``top_exact``,
        ``top_count_error``); numeric columns add ``mean``, ``std`` (ddof=1), ``min``, ``max``,
        ``quantiles`` (``{q: value}``), ``quantile_rank_error`` (fraction of ``count``) and
        ``histogram`` (``edges``, ``counts``, ``count_error``); datetimes add ``min``/``max``.
    correlation
        Pearson correlation of the numeric columns (complete-case rows), a pandas DataFrame.
    settings
        The options used, with ``rank_error_bound``, the a-priori quantile rank error bound.
    """

    n_rows: int
    n_partitions: int
    columns: dict
    correlation: pd.DataFrame
    settings: dict

    def to_dict(self) -> dict:
        """The profile as JSON-able Python data (NaN becomes ``None``)."""
        return _jsonable(
            {
                "n_rows": self.n_rows,
                "n_partitions": self.n_partitions,
                "settings": self.settings,
                "columns": self.columns,
                "correlation": {
                    str(c): {str(r): v for r, v in self.correlation[c].items()}
                    for c in self.correlation.columns
                },
            }
        )

    def to_html(self, path: str | os.PathLike) -> Path:
        """Write a self-contained HTML report (inline SVG and CSS, no scripts, nothing fetched)
        and return its path."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(render_html(self), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def __repr__(self) -> str:
        header = ["column", "dtype", "count", "nulls", "distinct", "mean", "std", "min", "p50",
                  "max", "top"]  # fmt: skip
        rows = []
        for name, c in self.columns.items():
            top = f"{_fmt(c['top'][0][0])} ({c['top'][0][1]:,})" if c["top"] else ""
            rows.append(
                [
                    str(name),
                    c["dtype"],
                    _fmt(c["count"]),
                    _fmt(c["nulls"]),
                    ("" if c["distinct_exact"] else "≈") + _fmt(c["distinct"]),
                    _fmt(c.get("mean")),
                    _fmt(c.get("std")),
                    _fmt(c.get("min")),
                    _fmt(c.get("quantiles", {}).get(0.5)),
                    _fmt(c.get("max")),
                    top if c["kind"] in ("categorical", "boolean") else "",
                ]
            )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            (
                f"Profile: {self.n_rows:,} rows x {len(self.columns)} columns "
                f"({self.n_partitions} partitions)"
            ),
            "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
        ]
        lines += [
            "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        return "\n".join(lines)


def _jsonable(v):
    if isinstance(v, dict):
        return {(k if isinstance(k, str) else str(k)): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if v is None or isinstance(v, str | int | bool):
        return v
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return str(v)
