"""The shared test bodies on CUDA workers: a LocalCUDACluster, and a mixed cluster of one CPU
worker and one GPU worker. Run on a GPU machine with:

    pip install -e .[gpu,test] && pytest -m gpu tests/gpu

Elsewhere these tests are skipped (tests/conftest.py: unless ``cupy.is_available()``).
"""

import pytest
from shared_bodies import mixed_cpu_gpu_cluster, run_fit_matches_reference, run_mixed_cluster_fit

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

pytest.importorskip("cupy", reason="the gpu extra is not installed: pip install -e .[gpu,test]")


@pytest.fixture(scope="module")
def cuda_client():
    dask_cuda = pytest.importorskip(
        "dask_cuda", reason="the gpu extra is not installed: pip install -e .[gpu,test]")
    from distributed import Client

    # One worker per visible GPU, one thread each, as the deploy/ GPU workers.
    with dask_cuda.LocalCUDACluster(threads_per_worker=1, dashboard_address=":0",
                                    host="127.0.0.1") as cluster, Client(cluster) as client:
        yield client


def test_fit_matches_reference_cupy(cuda_client):
    run_fit_matches_reference(cuda_client, "cupy")


def test_fit_matches_reference_numpy_on_cuda_workers(cuda_client):
    # pandas partitions on CUDA workers: the same parameters whichever device the blocks use.
    run_fit_matches_reference(cuda_client, "numpy")


def test_mixed_cpu_and_gpu_workers_train_one_model():
    with mixed_cpu_gpu_cluster(gpu_env={"CUDA_VISIBLE_DEVICES": "0"},
                               cpu_env={"CUDA_VISIBLE_DEVICES": ""}) as client:
        run_mixed_cluster_fit(client, "cupy")
