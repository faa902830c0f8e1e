"""connect()'s workers sample the running task's stack every 100 ms instead of Dask's 10 ms
(about 1.2% of a core per worker, busy or idle: benchmarks/bench_worker_overhead.py): only on
a cluster connect() starts, never on a user's cluster or over a user's configuration, and the
dashboard's Profile page still gets samples."""

from __future__ import annotations

import time

import dask
import pytest

import pipeline as pl
from pipeline.cluster import PROFILE_KEY, worker_config

pytestmark = pytest.mark.slow  # starts worker processes


def _profiler(dask_worker):
    """What the worker runs: the profiler's period in ms (None: not running) and its config."""
    pc = dask_worker.periodic_callbacks.get("profile")
    running = pc is not None and pc.is_running()
    return (pc.callback_time if running else None,
            dask.config.get("distributed.worker.profile.interval"))


def _busy(seconds: float) -> float:
    end = time.perf_counter() + seconds
    x = 0.0
    while time.perf_counter() < end:
        x += 1.0
    return x


def _connect(**kwargs):
    return pl.connect(n_workers=1, dashboard_address=":0", device="cpu", **kwargs)


def _close(client) -> None:
    cluster = client.cluster
    client.close()
    cluster.close()


def test_connects_own_cluster_samples_every_100ms_and_the_profile_page_still_fills():
    before = dask.config.get(PROFILE_KEY)
    client = _connect()
    try:
        assert list(client.run(_profiler).values()) == [(100, "100ms")]
        assert dask.config.get(PROFILE_KEY) == before  # this process's configuration as it was
        client.submit(_busy, 1.5, pure=False).result()
        # the dashboard's Profile page reads this: samples of the task at the new period
        assert client.profile()["count"] >= 5
    finally:
        _close(client)


@pytest.mark.parametrize("setting, kwargs, expected", [
    ({PROFILE_KEY: "5ms"}, {}, (5, "5ms")),  # the user's own configuration wins
    ({}, {"profile_interval": None}, (10, "10ms")),  # None: Dask's configuration as it is
])
def test_a_configured_interval_or_none_leaves_dasks_setting(setting, kwargs, expected):
    with dask.config.set(setting):
        client = _connect(**kwargs)
        try:
            assert list(client.run(_profiler).values()) == [expected]
        finally:
            _close(client)


def test_connecting_to_a_users_cluster_changes_nothing(cluster):
    """The session cluster is a plain LocalCluster: the user's. connect(address) leaves it at
    Dask's default."""
    client = pl.connect(cluster.scheduler_address)
    try:
        assert sorted(client.run(_profiler).values()) == [(10, "10ms")] * 2
    finally:
        client.close()


def test_worker_config_applies_only_over_dasks_default():
    with dask.config.set({PROFILE_KEY: "10ms"}):
        assert worker_config("250ms") == {PROFILE_KEY: "250ms"}
        assert worker_config(None) == {}
    with dask.config.set({PROFILE_KEY: "20ms"}):
        assert worker_config("250ms") == {}
    with pytest.raises(ValueError, match="profile_interval must be a duration"):
        worker_config("every now and then")


def test_the_cli_and_demo_cluster_gets_it_a_cli_address_does_not(cluster):
    """`pipeline demo` / `pipeline run` open their client with cli.job.open_client: kind
    "local" starts the cluster through connect(), kind "address" joins the user's."""
    from pipeline.cli.job import open_client
    from pipeline.config import ClusterConfig

    local = ClusterConfig(kind="local", n_workers=1, device="cpu", dashboard_address=":0")
    with open_client(local) as client:
        assert list(client.run(_profiler).values()) == [(100, "100ms")]
    users = ClusterConfig(kind="address", address=cluster.scheduler_address)
    with open_client(users) as client:
        assert sorted(client.run(_profiler).values()) == [(10, "10ms")] * 2
