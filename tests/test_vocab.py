"""Categorical vocabularies. Oracles: pandas value_counts on the concatenated data, and the
Misra-Gries guarantee (true - error <= kept <= true; forgotten values occur <= error times)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.reduce import tree_fold
from pipeline.vocab import (
    build_vocabulary,
    embedding_dim,
    encode_categories,
    frequent_values,
    merge_frequent,
    use_one_hot,
)


@st.composite
def column_parts(draw):
    n = draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_values = draw(st.integers(1, 60))
    # Zipf-like frequencies: a few frequent values and a long tail.
    values = rng.zipf(1.5, n) % n_values
    col = pd.Series([f"v{v}" for v in values], dtype=object)
    col[rng.random(n) < 0.1] = None
    cuts = np.sort(rng.integers(0, n + 1, draw(st.integers(0, 7))))
    bounds = [0, *cuts.tolist(), n]
    parts = [col.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    return col, parts, draw(st.integers(1, 40)), draw(st.integers(2, 8))


@settings(max_examples=200, deadline=None)
@given(data=column_parts())
def test_misra_gries_guarantee_on_any_partitioning(data):
    col, parts, capacity, split_every = data
    summary = tree_fold(
        [frequent_values(p, capacity) for p in parts], merge_frequent, split_every=split_every
    )
    truth = col.value_counts(dropna=True)
    assert summary.n_null == int(col.isna().sum())
    assert summary.n == int(truth.sum())
    assert len(summary.counts) <= capacity
    # Each prune removes its cut from >= capacity + 1 counters (Agarwal et al., Lemma 1).
    assert summary.error * (capacity + 1) <= summary.n - summary.counts.sum()
    for value, true_count in truth.items():
        kept = int(summary.counts.get(value, 0))
        assert true_count - summary.error <= kept <= true_count
    if truth.size <= capacity:
        assert summary.error == 0
        pd.testing.assert_series_equal(
            summary.counts.sort_index(),
            truth.sort_index(),
            check_names=False,
            check_index_type=False,
        )


@settings(max_examples=100, deadline=None)
@given(data=column_parts(), k=st.integers(1, 10), min_frequency=st.integers(1, 5))
def test_vocabulary_is_the_top_k_frequent_values(data, k, min_frequency):
    col, parts, _, _ = data
    summary = merge_frequent([frequent_values(p, 1000) for p in parts])  # exact
    vocab = build_vocabulary(summary, k, min_frequency)
    truth = col.value_counts(dropna=True)
    truth = truth[truth >= min_frequency]
    order = sorted(truth.items(), key=lambda vc: (-vc[1], vc[0]))
    assert vocab.tolist() == [v for v, _ in order[:k]]


def test_codes_unknown_missing_and_rare():
    train = pd.Series(["a"] * 5 + ["b"] * 3 + ["c"] + [None] * 2, dtype=object)
    summary = frequent_values(train, 100)
    vocab = build_vocabulary(summary, max_categories=10, min_frequency=2)
    assert vocab.tolist() == ["a", "b"]  # "c" is rare
    test = pd.Series(["b", "a", None, "c", "zzz"], dtype=object)
    np.testing.assert_array_equal(encode_categories(test, vocab, True), [3, 2, 1, 0, 0])
    np.testing.assert_array_equal(encode_categories(test, vocab, False), [2, 1, 0, 0, 0])
    cat = test.astype("category")
    np.testing.assert_array_equal(encode_categories(cat, vocab, True), [3, 2, 1, 0, 0])


def test_embedding_size_rule_and_one_hot_rule():
    for n in [1, 2, 3, 4, 10, 100, 5000, 10**6]:
        assert embedding_dim(n) == min(600, round(1.6 * n**0.56))
        assert use_one_hot(n) == (embedding_dim(n) >= n)
    assert [n for n in range(1, 50) if use_one_hot(n)] == [1, 2, 3]
    assert use_one_hot(5, max_codes=5) and not use_one_hot(6, max_codes=5)


@pytest.mark.parametrize("capacity", [1, 7])
def test_merge_does_not_depend_on_order(capacity):
    rng = np.random.default_rng(0)
    parts = [pd.Series(rng.integers(0, 20, 50).astype(str), dtype=object) for _ in range(5)]
    sums = [frequent_values(p, capacity) for p in parts]
    a = merge_frequent(sums)
    b = merge_frequent(sums[::-1])
    pd.testing.assert_series_equal(a.counts.sort_index(), b.counts.sort_index())
    assert a.error == b.error
