import dask
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.reduce import (
    tree_fold,
    tree_fold_nodes,
    tree_fold_owned,
    tree_graph,
    tree_levels,
    tree_reduce,
)


def _sum(parts):
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 70), split_every=st.integers(2, 9))
def test_tree_levels_cover_every_leaf_once(n, split_every):
    levels = tree_levels(n, split_every)
    width = n
    for groups in levels:
        covered = [i for g in groups for i in g]
        assert covered == list(range(width))
        assert all(1 <= len(g) <= split_every for g in groups)
        width = len(groups)
    assert width == 1


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.integers(-1000, 1000), min_size=1, max_size=40),
    split_every=st.integers(2, 8),
)
def test_tree_sum_is_independent_of_split_every(values, split_every):
    parts = [dask.delayed(int)(v) for v in values]
    with dask.config.set(scheduler="sync"):
        assert tree_reduce(parts, _sum, split_every=split_every).compute() == sum(values)


def test_pairing_follows_positions_not_completion_order():
    # combine receives partials in position order: string concatenation shows the order
    parts = [dask.delayed(str)(i) for i in range(10)]
    with dask.config.set(scheduler="threads"):
        out = tree_reduce(parts, "".join, split_every=3).compute()
    assert out == "0123456789"


def test_float_reduction_is_bitwise_reproducible_on_a_cluster(client):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(1000).astype(np.float32) for _ in range(13)]
    parts = [dask.delayed(np.asarray)(a) for a in arrays]
    results = [client.compute(tree_reduce(parts, _sum, split_every=4)).result()
               for _ in range(3)]
    local = tree_reduce(parts, _sum, split_every=4).compute(scheduler="sync")
    for r in results:
        assert np.array_equal(r, local)


def test_tree_graph_keys_read_like_the_algorithm():
    dsk, root = tree_graph(["a", "b", "c"], _sum, split_every=2, name="combine_grads-x")
    assert root == ("combine_grads-x", 2, 0)
    assert set(dsk) == {("combine_grads-x", 1, 0), ("combine_grads-x", 1, 1), root}


def test_bad_arguments():
    with pytest.raises(ValueError, match="split_every"):
        tree_levels(3, 1)
    with pytest.raises(ValueError, match="at least one leaf"):
        tree_levels(0, 2)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=80),
    split_every=st.integers(min_value=2, max_value=9),
    owners=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_folding_owned_subtrees_then_the_rest_equals_the_whole_fold(n, split_every, owners,
                                                                     seed):
    """Leaves split among owners at random (as blocks among workers): each folds its complete
    subtrees, the nodes of all finish the fold; same pairing as tree_fold, so the same record
    of which leaves met in which order, and the same float32 sum bit for bit."""
    rng = np.random.default_rng(seed)
    owner = rng.integers(0, owners, size=n)
    values = rng.standard_normal((n, 5)).astype(np.float32) * 10.0 ** rng.integers(-3, 4, n)[:, None]

    def combine(parts):  # ordered sum + the nesting it came from
        total = parts[0][0]
        for p in parts[1:]:
            total = total + p[0]
        return total, tuple(p[1] for p in parts)

    leaves = [(values[i], i) for i in range(n)]
    whole = tree_fold(leaves, combine, split_every=split_every)
    nodes = [node for w in range(owners) for node in tree_fold_owned(
        [(i, leaves[i]) for i in range(n) if owner[i] == w], n, combine,
        split_every=split_every)]
    rng.shuffle(nodes)  # arrival order does not matter
    folded = tree_fold_nodes(nodes, n, combine, split_every=split_every)
    assert folded[1] == whole[1]
    assert np.array_equal(folded[0], whole[0])
    if owners == 1 or len(set(owner.tolist())) == 1:
        assert len(nodes) == 1  # one owner of everything folds the whole tree itself


def test_folding_nodes_that_miss_a_leaf_names_the_gap():
    def combine(parts):
        return sum(parts)

    nodes = tree_fold_owned([(i, float(i)) for i in range(10) if i != 3], 10, combine,
                            split_every=4)
    with pytest.raises(ValueError, match="only in part"):
        tree_fold_nodes(nodes, 10, combine, split_every=4)
    whole = tree_fold_owned([(i, float(i)) for i in range(10)], 10, combine, split_every=4)
    with pytest.raises(ValueError, match="covered twice"):
        tree_fold_nodes([*whole, (0, 5, 5.0)], 10, combine, split_every=4)
    with pytest.raises(ValueError, match="do not cover"):
        tree_fold_nodes([], 10, combine, split_every=4)
