"""Training blocks: device placement, coalescing, alignment errors."""

import dask.array as da
import numpy as np
import pytest

from pipeline.backend import worker_device
from pipeline.blocks import _final_block, coalesce_groups, to_blocks


def test_targets_follow_the_features_device():
    xps = pytest.importorskip("array_api_strict")
    dev = xps.Device("device1")
    X = xps.asarray(np.ones((3, 2), dtype=np.float32), device=dev)
    block = _final_block((X, np.array(["a", "b", "a"], dtype=object)), np.array(["a", "b"]),
                         "float32")
    assert block.Y.device == dev
    assert block.Y.shape == (3, 1)


def test_worker_device_comes_from_worker_resources():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, resources={"GPU": 1},
                      dashboard_address=":0", host="127.0.0.1") as cluster, \
            Client(cluster, set_as_default=False) as c:
        assert c.submit(worker_device).result() == "gpu"
    assert worker_device() == "cpu"  # not on a worker


def test_coalesce_groups_depends_only_on_row_counts():
    assert coalesce_groups([5, 5, 5, 20, 1], 10) == [[0, 1], [2, 3, 4]]
    assert coalesce_groups([0, 0, 0], 10) == [[0, 1, 2]]
    assert coalesce_groups([10, 10], 10) == [[0], [1]]
    rows = list(np.random.default_rng(0).integers(0, 50, 200))
    groups = coalesce_groups(rows, 64)
    assert [i for g in groups for i in g] == list(range(200))
    assert all(sum(rows[i] for i in g) >= 64 for g in groups)


def test_misaligned_partitions_are_refused(client):
    X = da.ones((100, 3), chunks=(25, 3))
    y = da.ones(100, chunks=50)
    with pytest.raises(ValueError, match="4 partitions but y has 2"):
        to_blocks(client, X, y, classification=True)


def test_empty_training_data_is_refused(client):
    X = da.ones((0, 3), chunks=(1, 3))
    y = da.ones(0, chunks=1)
    with pytest.raises(ValueError, match="empty"):
        to_blocks(client, X, y)
