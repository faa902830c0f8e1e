"""The per-block kernel inside a nanny-started Dask worker, against the same kernel in a plain
process and against the plain NumPy reference (issue 9, first target).

The user's path: the rows are created on the client, ``da.from_array`` → ``client.persist`` →
``pipeline.blocks.to_blocks`` (what ``fit`` does), on ``pipeline.connect()``'s LocalCluster
(``processes=True``: every worker is started by a nanny, which sets distributed's
``pre-spawn-environ``, ``MALLOC_TRIM_THRESHOLD_=65536`` and one BLAS/OpenMP thread; nothing is
set by hand in the workers). The kernel is one epoch of ``local_steps.partition_local_steps`` over the
block (shuffled, Adam, what a block runs in ``sync="average"``), submitted as a task pinned to
the worker holding the block.

The plain process is a fresh interpreter started *before* the cluster (the nanny writes its
variables into the parent's ``os.environ``, so a process spawned later would inherit them), with
the benchmark's one-thread BLAS setting and no ``MALLOC_TRIM_THRESHOLD_``; it regenerates the same
rows and runs the same kernel, and the plain NumPy reference of ``bench_throughput.py``
(contiguous batches, written-out forward/backward and Adam).

Minor page faults (``resource.getrusage(RUSAGE_SELF).ru_minflt``): inside the task around the
epoch (the kernel alone), and with ``client.run`` on the worker before and after the task (the
whole worker process, task overhead included). Runs alternate worker / plain process; medians.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
from common import (
    classification_data,
    fmt,
    local_cluster,
    log,
    main,
    median,
    section,
    spread,
    table,
    target,
)

COMMAND = "python benchmarks/run_all.py --only worker_kernel"
ENV_SHOWN = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "MKL_NUM_THREADS")


def _minflt(dask_worker: Any = None) -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _env(dask_worker: Any = None) -> dict[str, str]:
    return {k: os.environ.get(k, "(unset)") for k in ENV_SHOWN}


def one_epoch(X: np.ndarray, Y: np.ndarray, batch: int, kernel: str, seed: int) -> dict[str, Any]:
    """One timed epoch of ``kernel`` ("ours" or "numpy") on ``X``, ``Y`` in this process:
    seconds, minor faults and steps. Runs the same code in a worker task and a plain process."""
    import resource

    import bench_throughput as bt

    fn = bt.ours_block if kernel == "ours" else bt.numpy_epoch
    args = (X, Y, batch, True, seed) if kernel == "ours" else (X, Y, batch, seed)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return {"seconds": seconds, "faults": faults, "steps": math.ceil(X.shape[0] / batch)}


def _block_epoch(block: Any, batch: int, kernel: str, seed: int) -> dict[str, Any]:
    return one_epoch(block.X, block.Y, batch, kernel, seed)


_PLAIN: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def plain_epoch(rows: int, batch: int, kernel: str, seed: int) -> dict[str, Any]:
    """:func:`one_epoch` in the plain process on the same rows as the worker's block."""
    if rows not in _PLAIN:
        X, y = classification_data(rows, seed=0)
        _PLAIN[rows] = (X, y.astype(np.float32).reshape(-1, 1))
    X, Y = _PLAIN[rows]
    out = one_epoch(X, Y, batch, kernel, seed)
    out["env"] = _env()
    return out


def run(quick: bool) -> dict[str, Any]:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import dask.array as da
    from distributed import wait

    from pipeline.blocks import to_blocks

    rows = 100_000
    reps = 3 if quick else 7
    batches = [256, 1024]
    kernels = ["ours", "numpy"]
    X, y = classification_data(rows, seed=0)  # on the client, as a user's array
    res: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    # The plain process starts before the cluster: the nanny adds its variables to os.environ.
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as plain:
        plain_env = plain.submit(_env).result()
        with local_cluster(2) as client:
            worker_env = client.run(_env)
            Xd = client.persist(da.from_array(X, chunks=(rows, X.shape[1])))
            yd = client.persist(da.from_array(y, chunks=(rows,)))
            wait([Xd, yd])
            blocks = to_blocks(client, Xd, yd, classification=True)
            fut = blocks.futures[0]
            (holder,) = client.who_has([fut])[fut.key]
            log(f"worker_kernel: block of {rows:,} rows on {holder}; worker env "
                f"{worker_env[holder]}; plain process env {plain_env}")

            def on_worker(batch: int, kernel: str, seed: int) -> dict[str, Any]:
                before = client.run(_minflt, workers=[holder])[holder]
                out = client.submit(_block_epoch, fut, batch, kernel, seed, workers=[holder],
                                    allow_other_workers=False, pure=False).result()
                out["process_faults"] = client.run(_minflt, workers=[holder])[holder] - before
                return out

            for batch in batches:
                for kernel in kernels:  # warm-up: imports, workspaces, BLAS
                    on_worker(batch, kernel, 0)
                    plain.submit(plain_epoch, rows, batch, kernel, 0).result()
                for r in range(reps):
                    for kernel in kernels:
                        res.setdefault(("worker", kernel, batch), []).append(
                            on_worker(batch, kernel, r))
                        res.setdefault(("plain", kernel, batch), []).append(
                            plain.submit(plain_epoch, rows, batch, kernel, r).result())
                for (where, kernel, b), runs in res.items():
                    if b == batch:
                        log(f"  {where} {kernel} b{batch}: "
                            f"{fmt(median([rows / x['seconds'] for x in runs]))} samples/s, "
                            f"{fmt(median([x['faults'] / x['steps'] for x in runs]))} faults/step")

    def sps(where: str, kernel: str, batch: int) -> list[float]:
        return [rows / x["seconds"] for x in res[(where, kernel, batch)]]

    labels = {("worker", "ours"): "ours (partition_local_steps) in a nanny-started worker",
              ("plain", "ours"): "ours (partition_local_steps) in a plain process",
              ("worker", "numpy"): "plain NumPy reference in a nanny-started worker",
              ("plain", "numpy"): "plain NumPy reference in a plain process"}
    trows = []
    for batch in batches:
        for where, kernel in labels:
            runs = res[(where, kernel, batch)]
            trows.append([labels[(where, kernel)], batch, median(sps(where, kernel, batch)),
                          spread(sps(where, kernel, batch)),
                          median([x["faults"] / x["steps"] for x in runs]),
                          median([x["process_faults"] / x["steps"] for x in runs])
                          if where == "worker" else "-"])
    t = table(["kernel, where", "batch", "samples/s (median)", "min–max",
               "minor faults/step (the epoch)", "minor faults/step (worker process, client.run)"],
              trows,
              f"One epoch over a {rows:,} × {X.shape[1]} float32 block (20→64→64→1 ReLU, Adam, "
              f"lr 1e-3), {reps} epochs each after a warm-up epoch, worker and plain process "
              "alternating. Ours shuffles (a take of the batch rows per step, as fit does); the "
              "NumPy reference slices contiguous batches.")
    targets = []
    for batch in batches:
        w, p = median(sps("worker", "ours", batch)), median(sps("plain", "ours", batch))
        ref = median(sps("plain", "numpy", batch))
        targets.append(target(f"kernel in a nanny-started worker ≥ 0.95× the same kernel in a "
                              f"plain process (batch {batch})", f"{w / p:.2f}×", w / p >= 0.95))
        targets.append(target(f"kernel in a nanny-started worker ≥ 0.9× the plain NumPy "
                              f"reference in a plain process (batch {batch})", f"{w / ref:.2f}×",
                              w / ref >= 0.9))
    notes = [f"Worker environment (set by the nanny, read with client.run): "
             f"{worker_env[holder]}; plain process: {plain_env}.",
             "The block was built by pipeline.blocks.to_blocks from a dask array made with "
             "da.from_array on the client and persisted (one partition, one block)."]
    return section("Per-block kernel in a nanny-started worker",
                   COMMAND + (" --quick" if quick else ""), tables=[t], targets=targets,
                   notes=notes,
                   raw={"rows": rows, "runs": {f"{a}/{b}/{c}": v for (a, b, c), v in res.items()},
                        "worker_env": worker_env, "plain_env": plain_env})


if __name__ == "__main__":
    main(run)
