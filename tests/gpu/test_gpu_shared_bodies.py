"""The shared test bodies on CUDA workers: a LocalCUDACluster, and a mixed cluster of one CPU
worker and one GPU worker. Run on a GPU machine with:

    pip install -e .[gpu,test] && pytest -m gpu tests/gpu

Elsewhere these tests are skipped (tests/conftest.py: unless ``cupy.is_available()``).

Besides the fit itself, the bodies go through every place where device data meets the host
(issue 9, item 10): cuDF string and categorical labels (blocks, predictions, metrics, the
report), in-memory CuPy arrays, the row-hash split (equal to pandas'), and CSV parsed on the GPU.
"""

import numpy as np
import pytest
from shared_bodies import (
    mixed_cpu_gpu_cluster,
    run_csv_read_matches_pandas,
    run_fit_matches_reference,
    run_in_memory_arrays_fit,
    run_mesh_fit_matches_dask_rounds,
    run_mixed_cluster_fit,
    run_split_follows_the_pandas_hash,
    run_string_labels_fit,
)

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


@pytest.mark.parametrize("kind", ["string", "category"])
def test_string_labels_fit_cudf(cuda_client, kind, tmp_path):
    run_string_labels_fit(cuda_client, "cupy", kind, tmp_path / "report.html")


def test_in_memory_cupy_arrays_fit(cuda_client):
    run_in_memory_arrays_fit(cuda_client, "cupy")


def test_split_of_cudf_partitions_follows_the_pandas_hash():
    run_split_follows_the_pandas_hash("cupy")


def test_csv_read_on_the_gpu_matches_pandas(cuda_client, tmp_path):
    run_csv_read_matches_pandas(cuda_client, "cupy", tmp_path)


def test_cupy_parameters_with_numpy_data():
    import cupy

    from pipeline import nn

    rng = np.random.default_rng(0)
    spec = nn.MLPSpec((4, 5, 2), "tanh", "log_loss")
    flat = nn.init_params(spec, 0, dtype=np.float64)
    X = rng.standard_normal((6, 4))
    np.testing.assert_array_equal(nn.forward(spec, cupy.asarray(flat), X),
                                  nn.forward(spec, flat, X))


def test_mixed_cpu_and_gpu_workers_train_one_model():
    with mixed_cpu_gpu_cluster(gpu_env={"CUDA_VISIBLE_DEVICES": "0"},
                               cpu_env={"CUDA_VISIBLE_DEVICES": ""}) as client:
        run_mixed_cluster_fit(client, "cupy")


def test_mesh_fit_matches_dask_rounds_cupy(cuda_client):
    run_mesh_fit_matches_dask_rounds(cuda_client, "cupy")
