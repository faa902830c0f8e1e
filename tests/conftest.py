"""Shared fixtures. GPU tests are skipped unless CuPy can really reach a device."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

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


@dataclass
class Backend:
    """An array namespace and the device to create test arrays on."""

    xp: Any
    device: Any

    def asarray(self, a):
        return self.xp.asarray(a, device=self.device)


@pytest.fixture(params=["numpy", "array_api_strict", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend(request):
    """Numeric code runs on NumPy, on ``array_api_strict`` on a non-default device (which
    catches arrays created without ``device=``, the bug CuPy would show), and on CuPy."""
    if request.param == "numpy":
        import numpy as np

        return Backend(np, None)
    if request.param == "array_api_strict":
        import array_api_strict

        return Backend(array_api_strict, array_api_strict.Device("device1"))
    import array_api_compat.cupy as cp  # imported lazily: CuPy loads without a GPU

    return Backend(cp, None)


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


@pytest.fixture(scope="session")
def monitor_entry_points(tmp_path_factory):
    """A ``sys.path`` directory declaring this checkout's ``pipeline.monitors`` entry points.

    The editable install's metadata is written by ``pip install -e .`` and lags behind
    ``pyproject.toml`` until the next install; subprocesses that put this directory first on
    ``PYTHONPATH`` see the entry points exactly as ``pyproject.toml`` declares them.
    """
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    root = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
    site = tmp_path_factory.mktemp("entry-points")
    info = site / "dask_pipeline_checkout-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dask-pipeline-checkout\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in declared.items()))
    return site


@pytest.fixture
def subprocess_env():
    """``subprocess_env(*paths)``: ``os.environ`` with ``paths``, then this checkout, first on
    ``PYTHONPATH`` (so a child process imports this checkout's code)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def make(*paths: Any) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [*(str(p) for p in paths), str(root), *filter(None, [env.get("PYTHONPATH")])])
        return env

    return make
