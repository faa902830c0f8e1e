"""The shared test bodies (tests/shared_bodies.py) on CPU workers; tests/gpu runs the same
bodies on CUDA workers."""

import pytest
from shared_bodies import mixed_cpu_gpu_cluster, run_fit_matches_reference, run_mixed_cluster_fit

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
