"""``pipeline.stores.memory_limit`` reads the limit of the worker running the task: the disk
store's chunk-buffer cap (``READER_FRACTION`` of it) and the stream cache depend on it. It read
an attribute distributed does not have and returned 0 everywhere, so the cap fell back to
256 MiB of buffers per worker: that paused and restarted 400 and 768 MiB workers."""

from __future__ import annotations

from distributed import Client, LocalCluster

from pipeline import stores


def test_memory_limit_is_the_limit_of_the_worker_running_the_task():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, memory_limit="300MiB",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        expected = next(iter(client.scheduler_info()["workers"].values()))["memory_limit"]
        assert expected == 300 * 2**20
        assert client.submit(stores.memory_limit, pure=False).result() == expected


def test_memory_limit_outside_a_worker_is_zero():
    assert stores.memory_limit() == 0
