"""Categorical vocabularies: mergeable frequency summaries, integer codes and embedding sizes.

A categorical column is summarised per partition by :func:`frequent_values`, a Misra–Gries
summary of at most ``capacity`` values (Agarwal et al. 2012, "Mergeable Summaries"): counts are
added when summaries merge, and when more than ``capacity`` values remain the
``(capacity + 1)``-th largest count is subtracted from every count and the values that drop to
zero are forgotten. Each kept count underestimates the true count by at most ``error`` (carried
and summed along, and at most ``(N - Σ kept) / (capacity + 1)``); a value missing from the
summary occurred at most ``error`` times. With at most ``capacity`` distinct values nothing is
ever subtracted and the counts are exact. The result depends only on the multiset of
values: merging is order-free.

:func:`build_vocabulary` keeps the ``max_categories`` most frequent values seen at least
``min_frequency`` times; :func:`encode_categories` maps a column to integer codes laid out as

    0 = unknown (never seen, rare, or beyond the cap), [1 = missing], then the vocabulary,

where the missing code exists only when the fit data had missing values in that column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .backend import to_host

__all__ = [
    "FrequentValues",
    "build_vocabulary",
    "embedding_dim",
    "encode_categories",
    "frequent_values",
    "merge_frequent",
    "use_one_hot",
]


@dataclass(frozen=True, eq=False)  # eq would compare Series elementwise
class FrequentValues:
    """Approximate value counts of one column (host): ``counts`` value -> count (non-null),
    each an underestimate by at most ``error``; ``n_null`` missing values; ``n`` non-missing
    values seen."""

    counts: pd.Series
    n_null: int
    n: int
    error: int
    capacity: int


def _prune(counts: pd.Series, error: int, capacity: int) -> tuple[pd.Series, int]:
    if len(counts) <= capacity:
        return counts, error
    cut = int(np.sort(counts.to_numpy())[::-1][capacity])
    kept = counts - cut
    return kept[kept > 0], error + cut


def frequent_values(col: Any, capacity: int) -> FrequentValues:
    """The summary of one pandas/cuDF Series (exact when it has <= ``capacity`` values)."""
    vc = col.value_counts(dropna=True)
    counts = pd.Series(
        to_host(vc).astype(np.int64), index=pd.Index(to_host(vc.index), dtype=object)
    )
    counts = counts[counts > 0]  # unobserved categories of a category dtype
    n_null = int(col.isna().sum())
    pruned, error = _prune(counts, 0, capacity)
    return FrequentValues(pruned, n_null, int(counts.sum()), error, capacity)


def merge_frequent(parts: Sequence[FrequentValues]) -> FrequentValues:
    """One summary of the union of ``parts`` (same ``capacity``)."""
    parts = list(parts)
    nonempty = [p.counts for p in parts if len(p.counts)]
    if len(nonempty) > 1:
        merged = pd.concat(nonempty).groupby(level=0, sort=False).sum()
    else:
        merged = nonempty[0] if nonempty else parts[0].counts
    capacity = parts[0].capacity
    pruned, error = _prune(merged, sum(p.error for p in parts), capacity)
    return FrequentValues(
        pruned, sum(p.n_null for p in parts), sum(p.n for p in parts), error, capacity
    )


def _sort_key(value: Any) -> tuple[int, Any, str]:
    """Numbers, then strings, then anything else by repr (a total order across types)."""
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return (0, value, "")
    if isinstance(value, str):
        return (1, 0, value)
    return (2, 0, repr(value))


def build_vocabulary(
    summary: FrequentValues, max_categories: int, min_frequency: int
) -> np.ndarray:
    """The values that get their own code, most frequent first (ties by value), as an object
    array: at most ``max_categories`` of them, each counted at least ``min_frequency`` times
    (by the summary's lower-bound counts)."""
    items = [(v, int(c)) for v, c in summary.counts.items() if c >= min_frequency]
    items.sort(key=lambda vc: (-vc[1], _sort_key(vc[0])))
    out = np.empty(min(len(items), max_categories), dtype=object)
    out[:] = [v for v, _ in items[:max_categories]]
    return out


def code_offset(has_missing: bool) -> int:
    """Code of the first vocabulary entry (after unknown and, if present, missing)."""
    return 2 if has_missing else 1


def encode_categories(col: Any, vocabulary: Sequence[Any], has_missing: bool) -> Any:
    """Integer codes (as float64 values of the frame's array type) of a pandas/cuDF Series:
    0 unknown, 1 missing (when ``has_missing``; else missing is unknown), then the vocabulary."""
    offset = code_offset(has_missing)
    mapping = {v: float(i + offset) for i, v in enumerate(vocabulary)}
    codes = col.map(mapping).astype("float64")
    if has_missing:
        codes = codes.mask(col.isna(), 1.0)
    return codes.fillna(0.0).values


def embedding_dim(n_codes: int) -> int:
    """fastai's rule of thumb for an embedding's width: ``min(600, round(1.6 n^0.56))``."""
    return int(min(600, round(1.6 * n_codes**0.56)))


def use_one_hot(n_codes: int, max_codes: int | None = None) -> bool:
    """Whether to one-hot encode a column with ``n_codes`` codes instead of embedding it.

    Default rule: one-hot when the embedding would not be narrower than the one-hot vector
    (``embedding_dim(n) >= n``, i.e. ``n <= 3``): it then costs no extra input width and has
    no table to learn. ``max_codes`` replaces the rule with ``n <= max_codes``.
    """
    if max_codes is not None:
        return n_codes <= max_codes
    return embedding_dim(n_codes) >= n_codes
