"""Minor page faults and throughput of one worker's training kernel, with and without a
:class:`pipeline.nn.Workspace`.

The kernel is what a worker runs per mini-batch: a shuffled ``take`` of the batch rows from a
100,000 x 20 float32 block, ``loss_and_grad`` of a 20 -> 64 -> 64 -> 1 ReLU MLP
(``binary_log_loss``) and an Adam step. Each configuration runs in a fresh process; by default
with ``MALLOC_TRIM_THRESHOLD_=65536``, as Dask's nanny starts workers: that pins glibc's mmap
threshold at 128 KiB, so every temporary above it is a fresh ``mmap`` whose pages fault in
again (see /work/shared/TECH_NOTES.md, "Memory and the worker process"). Faults are counted
with ``getrusage(RUSAGE_SELF).ru_minflt`` over the measured steps, after a warm-up.

Usage: ``python benchmarks/bench_kernel_faults.py`` (prints a table, < 1 minute);
``--child BATCH {ws,plain} STEPS`` runs one configuration and prints one JSON line (what
``tests/nn/test_workspace.py`` uses).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROWS, FEATURES, HIDDEN = 100_000, 20, (64, 64)
DASK_NANNY_ENV = {"MALLOC_TRIM_THRESHOLD_": "65536"}


def child(batch: int, use_workspace: bool, steps: int, warmup: int = 30) -> dict:
    """Run the kernel in this process; faults and samples/s over ``steps`` measured steps."""
    import resource
    import time

    import numpy as np

    from pipeline import nn, optim

    rng = np.random.default_rng(0)
    X = rng.standard_normal((ROWS, FEATURES)).astype(np.float32)
    Y = (X[:, :1] + 0.5 * X[:, 1:2] > 0).astype(np.float32)
    spec = nn.MLPSpec((FEATURES, *HIDDEN, 1), "relu", "binary_log_loss")
    w = spec.init_params(0, np.float32)
    opt = optim.adam(1e-3)
    state = opt.init(w)
    ws = nn.Workspace() if use_workspace else None
    ctx = nn.Context(training=True, workspace=ws, need_input_grad=False)
    order = np.arange(ROWS)
    per_epoch = ROWS // batch

    def step(i: int) -> float:
        nonlocal w, state
        if i % per_epoch == 0:
            rng.shuffle(order)  # in place: the epoch's order costs no fresh memory
        idx = order[(i % per_epoch) * batch:(i % per_epoch + 1) * batch]
        if ws is not None:
            Xb, Yb = ws.take_rows("X", X, idx), ws.take_rows("Y", Y, idx)
        else:
            Xb, Yb = np.take(X, idx, axis=0), np.take(Y, idx, axis=0)
        loss, grad = spec.loss_and_grad(w, Xb, Yb, ctx=ctx)
        updates, state = opt.update(grad / float(batch), state, w)
        w = optim.apply_updates(w, updates)
        return loss

    for i in range(warmup):
        step(i)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"batch": batch, "workspace": use_workspace, "steps": steps,
            "faults_per_step": faults / steps, "samples_per_s": steps * batch / seconds}


def run_child(batch: int, use_workspace: bool, steps: int, env: dict[str, str]) -> dict:
    """:func:`child` in a fresh interpreter with ``env`` added to this one's environment."""
    root = Path(__file__).resolve().parents[1]
    full_env = {**os.environ, **env,
                "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(batch),
         "ws" if use_workspace else "plain", str(steps)],
        env=full_env, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = []
    for env_name, env in (("MALLOC_TRIM_THRESHOLD_=65536", DASK_NANNY_ENV), ("(unset)", {})):
        for batch in (256, 1024):
            steps = 600 if batch == 256 else 250
            for use_ws in (False, True):
                r = run_child(batch, use_ws, steps, env)
                rows.append((env_name, batch, "yes" if use_ws else "no", r["faults_per_step"],
                             r["samples_per_s"]))
    print(f"20->64->64->1 float32 ReLU MLP, Adam, {ROWS:,} x {FEATURES} block, one process "
          "per row")
    print(f"{'malloc env':<30} {'batch':>5} {'workspace':>9} {'faults/step':>11} "
          f"{'samples/s':>10}")
    for env_name, batch, ws, faults, rate in rows:
        print(f"{env_name:<30} {batch:>5} {ws:>9} {faults:>11.1f} {rate:>10,.0f}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]), sys.argv[3] == "ws", int(sys.argv[4]))))
    else:
        main()
