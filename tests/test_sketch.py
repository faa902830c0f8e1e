"""QuantileSketch: the certified rank error holds and respects its a-priori bound on any
partitioning and tree; exact sketches equal NumPy's percentiles bit for bit. Oracles: NumPy
(sort, searchsorted, nanpercentile) on the concatenated data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.reduce import tree_fold
from pipeline.sketch import (
    QuantileSketch,
    merge_sketches,
    rank_error_bound,
    sketch_values,
)

QS = np.linspace(0.0, 1.0, 41)


@st.composite
def partitioned_data(draw, max_rows=400):
    """Float data with NaNs and many ties (values on a coarse grid some of the time), cut into
    1-8 partitions (possibly empty), a sketch size and a tree fan-in."""
    n = draw(st.integers(1, max_rows))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "grid", "heavy", "constant"]))
    if kind == "normal":
        x = rng.normal(size=n)
    elif kind == "grid":
        x = rng.integers(0, draw(st.integers(1, 50)), n).astype(np.float64)
    elif kind == "heavy":
        x = rng.standard_cauchy(n) * 1e6
    else:
        x = np.full(n, 2.5)
    x[rng.random(n) < draw(st.sampled_from([0.0, 0.1, 0.9]))] = np.nan
    n_parts = draw(st.integers(1, 8))
    cuts = np.sort(rng.integers(0, n + 1, n_parts - 1))
    parts = np.split(x, cuts)
    size = draw(st.sampled_from([2, 3, 8, 32, 1000]))
    split_every = draw(st.integers(2, 8))
    return x, parts, size, split_every


def fold(parts, size, split_every):
    leaves = [sketch_values(p, size) for p in parts]
    return tree_fold(leaves, merge_sketches, split_every=split_every)


def order_stat(sorted_x: np.ndarray, i: float) -> float:
    return sorted_x[int(np.clip(i, 0, sorted_x.size - 1))]


@settings(max_examples=300, deadline=None)
@given(data=partitioned_data())
def test_rank_error_is_certified_and_within_the_stated_bound(data):
    x, parts, size, split_every = data
    sk = fold(parts, size, split_every)
    finite = np.sort(x[~np.isnan(x)])
    assert sk.n_null == int(np.isnan(x).sum())
    assert sk.total == finite.size
    assert sk.values.size <= size + 1
    assert np.all(np.diff(sk.values) > 0) and np.all(sk.weights > 0)
    e = sk.rank_error
    assert e <= rank_error_bound(finite.size, size, len(parts), split_every)
    if finite.size == 0:
        assert np.isnan(sk.quantiles(QS)).all()
        return
    # |F̂ - F| <= e and |Ĝ - G| <= e at every data value and between them.
    probes = np.unique(np.concatenate([finite, (finite[1:] + finite[:-1]) / 2]))
    cum = np.cumsum(sk.weights)
    f_hat = np.concatenate([[0.0], cum])[np.searchsorted(sk.values, probes, side="right")]
    g_hat = np.concatenate([[0.0], cum])[np.searchsorted(sk.values, probes, side="left")]
    f = np.searchsorted(finite, probes, side="right")
    g = np.searchsorted(finite, probes, side="left")
    assert np.abs(f_hat - f).max() <= e
    assert np.abs(g_hat - g).max() <= e
    # Each quantile sits between the order statistics floor(h) - e and floor(h) + 1 + e.
    got = sk.quantiles(QS)
    h = QS * (finite.size - 1)
    for q_val, hi in zip(got, h, strict=True):
        assert (
            order_stat(finite, np.floor(hi) - e)
            <= q_val
            <= order_stat(finite, np.floor(hi) + 1 + e)
        )
    # The extremes are always exact.
    assert got[0] == finite[0] and got[-1] == finite[-1]


@settings(max_examples=200, deadline=None)
@given(data=partitioned_data(max_rows=60))
def test_exact_when_few_distinct_values(data):
    x, parts, _, split_every = data
    finite = x[~np.isnan(x)]
    size = max(np.unique(finite).size - 1, 2)  # at most size + 1 distinct values: no compression
    sk = fold(parts, size, split_every)
    assert sk.rank_error == 0
    if finite.size:
        # Bit for bit what scikit-learn's QuantileTransformer computes.
        np.testing.assert_array_equal(sk.quantiles(QS * 100 / 100), np.nanpercentile(x, QS * 100))


@settings(max_examples=100, deadline=None)
@given(data=partitioned_data(), perm_seed=st.integers(0, 1000))
def test_merge_does_not_depend_on_the_order_of_its_inputs(data, perm_seed):
    _, parts, size, _ = data
    leaves = [sketch_values(p, size) for p in parts]
    order = np.random.default_rng(perm_seed).permutation(len(leaves))
    a = merge_sketches(leaves)
    b = merge_sketches([leaves[i] for i in order])
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert (a.n_null, a.rank_error) == (b.n_null, b.rank_error)


def test_same_partitioning_gives_identical_sketches_and_more_data_stays_bounded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50_000)
    parts = np.array_split(x, 16)
    a, b = fold(parts, 256, 4), fold(parts, 256, 4)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.values.size <= 257
    assert 0 < a.rank_error <= rank_error_bound(x.size, 256, 16, 4)


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="sketch size"):
        sketch_values(np.ones(3), size=1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        sketch_values(np.ones(3)).quantiles([1.5])
    with pytest.raises(ValueError, match="sizes"):
        merge_sketches([sketch_values(np.ones(3), 4), sketch_values(np.ones(3), 8)])
    empty = merge_sketches([sketch_values(np.array([np.nan]), 4)])
    assert isinstance(empty, QuantileSketch) and empty.n_null == 1 and empty.total == 0
