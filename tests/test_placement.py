"""Blocks are spread across workers by rows when built, and again on demand (pipeline.placement)."""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
from distributed import wait
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.blocks import Block, BlockSet, to_blocks
from pipeline.placement import block_workers, contiguous_runs, plan_placement, rebalance


def _rows_per_worker(client, blocks: BlockSet) -> dict[str, int]:
    out = dict.fromkeys(client.scheduler_info()["workers"], 0)
    for w, n in zip(block_workers(client, blocks.futures), blocks.rows, strict=True):
        out[w] += n
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("chunks", [(250,) * 8, (100, 300, 200, 400, 100, 300, 200, 400)])
def test_partitions_computed_on_one_worker_are_spread_by_rows(client, rng, chunks):
    workers = sorted(client.scheduler_info()["workers"])
    n = sum(chunks)
    X_np = rng.normal(size=(n, 3)).astype("float32")
    y_np = rng.normal(size=n).astype("float32")
    # every partition computed and held on the first worker, as a skewed read leaves them
    X = client.persist(da.from_array(X_np, chunks=(chunks, 3)), workers=[workers[0]])
    y = client.persist(da.from_array(y_np, chunks=(chunks,)), workers=[workers[0]])
    wait([X, y])
    blocks = to_blocks(client, X, y, min_block_rows=None)
    assert blocks.rows == list(chunks)
    per_worker = _rows_per_worker(client, blocks)
    assert per_worker == {workers[0]: n // 2, workers[1]: n // 2}
    assert _is_runs(block_workers(client, blocks.futures), workers)  # one run of blocks each
    # placement moves data, never changes it
    got = client.gather(blocks.futures)
    np.testing.assert_array_equal(np.concatenate([b.X for b in got]), X_np)
    np.testing.assert_array_equal(np.concatenate([b.Y[:, 0] for b in got]), y_np)
    assert all(b.X.flags.aligned for b in got)


@pytest.mark.timeout(120)
def test_rebalance_spreads_blocks_held_by_one_worker(client, rng):
    workers = sorted(client.scheduler_info()["workers"])
    parts = [Block(rng.normal(size=(m, 2)).astype("float32"),
                   rng.normal(size=(m, 1)).astype("float32")) for m in (50,) * 8]
    futures = client.scatter(parts, workers=[workers[0]])  # a worker just joined: holds nothing
    blocks = BlockSet(futures, [50] * 8, 2, 1, None)
    moved = rebalance(client, blocks)
    assert _rows_per_worker(client, moved) == {workers[0]: 200, workers[1]: 200}
    assert block_workers(client, moved.futures) == [workers[0]] * 4 + [workers[1]] * 4
    assert moved.rows == blocks.rows
    for a, b in zip(parts, client.gather(moved.futures), strict=True):
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.Y, b.Y)
    assert rebalance(client, moved) is moved  # balanced: nothing moves


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.integers(0, 1000), min_size=1, max_size=20),
    n_workers=st.integers(1, 5),
    data=st.data(),
)
def test_plan_leaves_a_spread_below_the_largest_block(rows, n_workers, data):
    workers = [f"w{k}" for k in range(n_workers)]
    current = data.draw(st.lists(st.sampled_from([*workers, "gone", None]),
                                 min_size=len(rows), max_size=len(rows)))
    target = plan_placement(rows, current, workers)
    assert set(target) <= set(workers)
    load = {w: sum(r for r, t in zip(rows, target, strict=True) if t == w) for w in workers}
    assert max(load.values()) - min(load.values()) <= max(rows)
    # a balanced placement is kept as it is
    assert plan_placement(rows, target, workers) == target


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_placed_blocks_are_rebuilt_when_their_worker_is_lost(rng):
    from distributed import Client, LocalCluster

    X_np = rng.normal(size=(800, 3)).astype("float32")
    y_np = rng.normal(size=800).astype("float32")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        w0, w1 = sorted(client.scheduler_info()["workers"])
        X = client.persist(da.from_array(X_np, chunks=(100, 3)), workers=[w0])
        y = client.persist(da.from_array(y_np, chunks=(100,)), workers=[w0])
        blocks = to_blocks(client, X, y, min_block_rows=None)
        assert set(block_workers(client, blocks.futures)) == {w0, w1}
        client.restart_workers([w1])  # its blocks are lost; the nanny brings a new worker
        wait(blocks.futures, timeout=60)  # rebuilt from lineage, not stuck on the lost address
        got = client.gather(blocks.futures)
        np.testing.assert_array_equal(np.concatenate([b.X for b in got]), X_np)
        assert w1 not in set(block_workers(client, blocks.futures))


# ------------------------------------------------------------ runs of consecutive blocks ----


def _splits(n_blocks: int, n_runs: int):
    """Every split of positions 0..n_blocks into n_runs runs in order (some maybe empty)."""
    for cuts in itertools.combinations_with_replacement(range(n_blocks + 1), n_runs - 1):
        bounds = [0, *cuts, n_blocks]
        yield [range(bounds[k], bounds[k + 1]) for k in range(n_runs)]


def _loads(rows, runs):
    return [sum(rows[i] for i in run) for run in runs]


def _is_runs(target, workers) -> bool:
    """Each worker's blocks are one run of consecutive positions."""
    for w in workers:
        at = [i for i, t in enumerate(target) if t == w]
        if at and at != list(range(at[0], at[-1] + 1)):
            return False
    return True


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.integers(0, 60), min_size=1, max_size=9), n=st.integers(1, 4))
def test_contiguous_runs_are_the_best_split_by_brute_force(rows, n):
    runs = contiguous_runs(rows, n)
    assert len(runs) == n
    assert [i for run in runs for i in run] == list(range(len(rows)))  # in order, each once
    loads = _loads(rows, runs)
    every = [_loads(rows, s) for s in _splits(len(rows), n)]
    best_max = min(max(ld) for ld in every)
    assert max(loads) == best_max  # the busiest worker as light as any split makes it
    assert min(loads) == max(min(ld) for ld in every if max(ld) == best_max)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.integers(0, 1000), min_size=1, max_size=9),
    n_workers=st.integers(1, 4),
    data=st.data(),
)
def test_plan_gives_each_worker_one_run_when_a_balanced_split_exists(rows, n_workers, data):
    workers = [f"w{k}" for k in range(n_workers)]
    current = data.draw(st.lists(st.sampled_from([*workers, "gone", None]),
                                 min_size=len(rows), max_size=len(rows)))
    target = plan_placement(rows, current, workers)
    balanced = any(max(ld) - min(ld) <= max(rows)
                   for ld in (_loads(rows, s) for s in _splits(len(rows), n_workers)))
    if balanced:
        assert _is_runs(target, workers)
    if _is_runs(target, workers) and target != current:
        # no other assignment of the same runs to the workers keeps more rows in place
        runs = [[i for i, t in enumerate(target) if t == w] for w in workers]

        def kept(assign):
            return sum(rows[i] for run, w in zip(runs, assign, strict=True) for i in run
                       if current[i] == w)

        assert kept(workers) == max(kept(p) for p in itertools.permutations(workers))


def test_a_balanced_placement_in_runs_is_kept_and_an_interleaved_one_becomes_runs():
    workers = ["a", "b", "c"]
    rows = [100, 90, 110, 100, 100, 95, 105, 100, 100]
    user = ["c", "c", "c", "a", "a", "a", "b", "b", "b"]  # the user's runs, not in worker order
    assert plan_placement(rows, user, workers) == user
    interleaved = ["a", "b", "c"] * 3  # balanced (300 rows each), but every worker ships 3 leaves
    target = plan_placement(rows, interleaved, workers)
    assert _is_runs(target, workers)
    load = {w: sum(r for r, t in zip(rows, target, strict=True) if t == w) for w in workers}
    assert max(load.values()) - min(load.values()) <= max(rows)
