"""Shared fixtures. GPU tests are skipped unless CuPy can really reach a device."""

from __future__ import annotations

import os

import pytest

# One BLAS thread per process: 2-thread OpenBLAS collapses when another worker is busy.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _cuda_available() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    # `pytest.importorskip("cupy")` does not skip here: CuPy imports without a driver.
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (cupy.is_available() is False here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        dashboard_address=":0",
        host="127.0.0.1",
        processes=True,
    ) as c:
        yield c


@pytest.fixture(scope="session")
def client(cluster):
    from distributed import Client

    with Client(cluster) as c:
        yield c


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
