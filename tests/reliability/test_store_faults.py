"""Worker loss with blocks on the workers' disks or streamed from the source: the lost worker's
blocks are rebuilt from lineage on the survivor, and the fit ends with the bits of an
uninterrupted in-memory fit. Real processes, real SIGKILL (see proc_cluster.py)."""

from __future__ import annotations

import numpy as np
import pytest
from proc_cluster import (
    FULL_BATCH,
    RoundTrigger,
    arm_workers,
    fit_model,
    kill_block0_worker_at_round,
    victim,
)

pytestmark = pytest.mark.slow

MINI_BATCH = {"solver": "adam", "batch_size": 500, "max_iter": 4, "learning_rate_init": 0.01}


def _retries(trigger):
    return [e for e in trigger.events if e.get("event") == "retry"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("store", ["disk", "stream"])
def test_worker_sigkilled_between_rounds_same_bits(proc_client, data, reference, store):
    """SIGKILL from outside, after the 5th round, of the worker holding block 0's handle."""
    trigger, killed = kill_block0_worker_at_round(proc_client, 5)
    try:
        model = fit_model(proc_client, *data, block_store=store, **FULL_BATCH["sgd"])
        trigger.wait_for_end()
    finally:
        trigger.close()
    assert killed, "the fault was never injected"
    assert np.array_equal(model.params_, reference["sgd"])  # the memory store's bits
    retries = _retries(trigger)
    assert model.train_summary_["retries"] == len(retries) == 1
    assert retries[0]["action"] == "recomputed" and killed["worker"] in retries[0]["reason"]
    # the survivor holds no file of the finished fit
    left = proc_client.run(lambda dask_worker: sorted(
        str(p) for p in __import__("pathlib").Path(dask_worker.local_directory).glob(
            "pipeline-blocks/*/*")))
    assert all(v == [] for v in left.values()), left


@pytest.mark.timeout(300)
def test_worker_dies_inside_a_gradient_task_with_disk_blocks_mini_batch(proc_client, data,
                                                                         tmp_path):
    """Mini-batches (shuffled epoch order, prefetching): the reference is the same fit with
    blocks in memory and no fault."""
    want = fit_model(proc_client, *data, block_store="memory", **MINI_BATCH)
    # mini-batch exact rounds are pipelined: the gradients run inside the one task per worker
    # per round (pipeline.train.ahead.step_and_partition_grads), which calls ahead's name
    marker = arm_workers(proc_client, "pipeline.train.ahead", "partition_grad", 9,
                         tmp_path / "victim")
    trigger = RoundTrigger(proc_client, 10**9, lambda: None)
    try:
        got = fit_model(proc_client, *data, block_store="disk", **MINI_BATCH)
        trigger.wait_for_end()
    finally:
        trigger.close()
    dead = victim(marker)
    assert dead is not None, "the fault was never injected"
    assert dead not in proc_client.scheduler_info()["workers"]
    assert np.array_equal(got.params_, want.params_)
