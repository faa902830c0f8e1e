"""The shared test bodies (tests/shared_bodies.py) on CPU workers; tests/gpu runs the same
bodies on CUDA workers."""

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

pytestmark = pytest.mark.timeout(120)


def test_fit_matches_reference_numpy(client):
    run_fit_matches_reference(client, "numpy")


@pytest.mark.slow
def test_mixed_resources_cluster_numpy():
    # The worker advertising GPU=1 stands in for a GPU worker: PIPELINE_DEVICE=cpu keeps its
    # blocks in NumPy (a GPU=1 worker would move them to CuPy), which checks the body's
    # placement by resources on any machine. tests/gpu runs it on a real GPU with cuDF.
    with mixed_cpu_gpu_cluster(gpu_env={"PIPELINE_DEVICE": "cpu"}) as client:
        run_mixed_cluster_fit(client, "numpy")


@pytest.mark.parametrize("kind", ["string", "category"])
def test_string_labels_fit_numpy(client, kind, tmp_path):
    run_string_labels_fit(client, "numpy", kind, tmp_path / "report.html")


def test_split_follows_the_pandas_hash_numpy():
    run_split_follows_the_pandas_hash("numpy")


def test_csv_read_matches_pandas_numpy(client, tmp_path):
    run_csv_read_matches_pandas(client, "numpy", tmp_path)


def test_in_memory_arrays_fit_numpy(client):
    run_in_memory_arrays_fit(client, "numpy")


def test_mesh_fit_matches_dask_rounds_numpy(client):
    run_mesh_fit_matches_dask_rounds(client, "numpy")
