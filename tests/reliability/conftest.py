"""Fixtures: a real multi-process cluster (``dask scheduler`` + ``dask worker`` processes).

One scheduler and two single-threaded workers without nanny serve the whole session; before every
test the ``proc_client`` fixture replaces the workers the previous test killed and resets what it
changed on the scheduler, so each test starts from two healthy workers. Clusters with nannies or
TLS are started by the tests that need them. Every process runs in its own process group and is
killed by pid at teardown; every wait is bounded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from proc_cluster import FULL_BATCH, ProcCluster, disarm_workers, fit_model, make_data

N_WORKERS = 2


@pytest.fixture(scope="session")
def proc_cluster(tmp_path_factory):
    cluster = ProcCluster(Path(tmp_path_factory.mktemp("proc-cluster")))
    try:
        cluster.start_scheduler()
        for _ in range(N_WORKERS):
            cluster.add_worker()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def _session_client(proc_cluster):
    client = proc_cluster.client(n_workers=N_WORKERS)
    try:
        yield client
    finally:
        client.close(timeout=10)


@pytest.fixture
def proc_client(proc_cluster, _session_client):
    """A client of the session's process cluster, with two live workers and default settings."""
    client = _session_client
    for name, proc in list(proc_cluster.workers.items()):
        if proc.poll() is not None:  # killed by the previous test
            del proc_cluster.workers[name]
    while len(proc_cluster.workers) < N_WORKERS:
        proc_cluster.add_worker()
    client.wait_for_workers(N_WORKERS, timeout=60)
    client.run_on_scheduler(_reset_scheduler)
    disarm_workers(client)  # a fault a previous test armed but never triggered
    client.run(_warm_up)  # a fresh worker imports the library outside the measured fit
    yield client
    # A test that killed workers leaves their replacement to the next test's setup.


def _warm_up():
    import pipeline.estimators  # noqa: F401


def _reset_scheduler(dask_scheduler=None):
    import dask

    dask_scheduler.allowed_failures = dask.config.get("distributed.scheduler.allowed-failures")


@pytest.fixture(scope="session")
def data():
    return make_data()


@pytest.fixture(scope="session")
def reference(proc_cluster, _session_client, data):
    """Parameters of uninterrupted runs, per FULL_BATCH configuration."""
    _session_client.wait_for_workers(N_WORKERS, timeout=60)
    out = {}
    for name, params in FULL_BATCH.items():
        model = fit_model(_session_client, *data, **params)
        assert model.train_summary_["retries"] == 0
        out[name] = np.array(model.params_, copy=True)
    return out
