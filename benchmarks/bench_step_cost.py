"""Per-step cost of the training kernel, in-process (issue 10): ms per local-SGD step of the
default ``MLPClassifier`` network and ms per exact-gradient block call.

The local step is :func:`pipeline.train.local_steps.partition_local_steps` on one in-memory
block of ``--rows`` x 28 float32 rows (the demo data's width, a 0/1 target), the default network
(28 -> 100 relu -> 1, ``binary_log_loss``), scikit-learn's Adam, mini-batches of 200 rows
(``batch_size="auto"``) and ``local_steps="auto"`` (328 steps a round): what one replica runs
per round in a default fit on 2 workers. The exact gradient is
:func:`pipeline.train.tasks.partition_grad` for a 4-row share of a 6,250-row block (400k rows
in 64 blocks at a global batch of 256) and for a whole 6,000-row block.

Timings are medians of ``--repeats`` runs after one warm-up run, in wall seconds
(``time.perf_counter``) and in the process's CPU seconds (``time.process_time``: less moved by
other processes on a shared machine, as long as they leave this one a core). For before/after, run it
with ``PYTHONPATH`` pointing at each checkout, alternately (or under ``farm-bench --vs``)::

    PYTHONPATH=/path/to/old python benchmarks/bench_step_cost.py
    PYTHONPATH=$PWD python benchmarks/bench_step_cost.py --profile 15

``--profile N`` prints cProfile's top ``N`` functions (by own time) of one local-steps round.
``--fit EPOCHS`` instead fits a default ``MLPClassifier(max_iter=EPOCHS)`` on 400,000 rows of
the demo data (``tta_datasets.demo``) on a 2-worker ``pipeline.connect()`` cluster (one thread
each) and prints the seconds of each epoch (``history_``).
"""

from __future__ import annotations

import os

# One BLAS thread, as in a Dask worker (the nanny sets these): a multi-threaded BLAS on a busy
# 2-core machine makes a 6,000-row matmul ~20x slower, which is not what a worker sees.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import pipeline  # noqa: E402
from pipeline import nn, optim  # noqa: E402
from pipeline.blocks import Block  # noqa: E402
from pipeline.train.local_steps import partition_local_steps  # noqa: E402
from pipeline.train.tasks import Rate, partition_grad  # noqa: E402

N_FEATURES = 28
BATCH = 200
ROUND_STEPS = 328  # local_steps="auto" at batch 200: ceil(65,536 / 200)


def _block(rows: int, seed: int = 0) -> Block:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, N_FEATURES), dtype=np.float32)
    w = rng.standard_normal(N_FEATURES)
    Y = (X @ w + 0.5 * rng.standard_normal(rows) > 0).astype(np.float32)[:, None]
    return Block(X, Y)


def _spec() -> nn.MLPSpec:
    return nn.MLPSpec((N_FEATURES, 100, 1), activation="relu", loss="binary_log_loss")


def local_round(block: Block, params: np.ndarray, state: object, steps: int,
                epoch: int = 0) -> tuple[object, float, float]:
    """One round of ``ROUND_STEPS`` local steps; returns (new state, wall s, CPU s)."""
    schedule = tuple((epoch, s, BATCH) for s in range(ROUND_STEPS))
    t0, c0 = time.perf_counter(), time.process_time()
    _, state = partition_local_steps(block, params, state, _spec(), optim.adam(1e-3), 1e-4,
                                     Rate(1e-3), 0, schedule, steps, 0, True)
    return state, time.perf_counter() - t0, time.process_time() - c0


def time_local(rows: int, repeats: int) -> tuple[list[float], list[float]]:
    """ms per local step (wall, CPU), one figure per round."""
    block = _block(rows)
    steps = rows // BATCH
    params = _spec().init_params(0)
    state, _, _ = local_round(block, params, None, steps)  # warm-up (and the epoch order)
    wall, cpu = [], []
    for _ in range(repeats):
        state, seconds, cpu_seconds = local_round(block, params, state, steps)
        wall.append(1e3 * seconds / ROUND_STEPS)
        cpu.append(1e3 * cpu_seconds / ROUND_STEPS)
    return wall, cpu


def time_exact(block_rows: int, steps: int, calls: int,
               repeats: int) -> tuple[list[float], list[float]]:
    """ms per ``partition_grad`` call (wall, CPU) on a ``block_rows``-row block cut into
    ``steps`` steps."""
    block = _block(block_rows, seed=1)
    spec = _spec()
    params = spec.init_params(0)
    wall, cpu = [], []
    for r in range(repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        for s in range(calls):
            partition_grad(block, params, spec, 3, 0, s % steps, steps, 0, True)
        if r:
            wall.append(1e3 * (time.perf_counter() - t0) / calls)
            cpu.append(1e3 * (time.process_time() - c0) / calls)
    return wall, cpu


def profile_round(rows: int, top: int) -> None:
    block = _block(rows)
    steps = rows // BATCH
    params = _spec().init_params(0)
    state, _, _ = local_round(block, params, None, steps)
    prof = cProfile.Profile()
    prof.enable()
    local_round(block, params, state, steps)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def fit_epochs(epochs: int, rows: int = 400_000) -> list[float]:
    """Seconds of each epoch of a default ``MLPClassifier`` fit on the demo data."""
    import warnings

    import dask.array as da
    from common import local_cluster
    from distributed import wait
    from tta_datasets import demo

    from pipeline.estimators import MLPClassifier

    ds = demo(rows, 1_000)
    with local_cluster(2) as client:
        Xd = da.from_array(ds.X, chunks=(rows // 4, ds.X.shape[1]))
        yd = da.from_array(ds.y, chunks=(rows // 4,))
        Xd, yd = client.persist([Xd, yd])
        wait([Xd, yd])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = MLPClassifier(max_iter=epochs, random_state=0).fit(Xd, yd, client=client)
    return [float(h["seconds"]) for h in clf.history_]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--only", choices=("local", "exact"), default=None)
    parser.add_argument("--fit", type=int, default=0, metavar="EPOCHS")
    args = parser.parse_args()
    print(f"pipeline from {pipeline.__file__}")
    if args.fit:
        secs = fit_epochs(args.fit)
        print("fit seconds per epoch: " + ", ".join(f"{x:.3f}" for x in secs)
              + f"; median after the first {statistics.median(secs[1:] or secs):.3f}")
        return
    if args.profile:
        profile_round(args.rows, args.profile)
        return

    def show(what: str, times: tuple[list[float], list[float]]) -> None:
        wall, cpu = times
        print(f"{what:<44} wall {statistics.median(wall):7.3f} ms (min {min(wall):.3f}), "
              f"CPU {statistics.median(cpu):7.3f} ms (min {min(cpu):.3f}); {len(wall)} runs")

    if args.only in (None, "local"):
        show(f"local step, {BATCH} rows, 28->100->1 Adam", time_local(args.rows, args.repeats))
    if args.only in (None, "exact"):
        show("exact gradient, 4-row share of 6,250 rows", time_exact(6_250, 1_562, 200,
                                                                      args.repeats))
        show("exact gradient, whole 6,000-row block", time_exact(6_000, 1, 20, args.repeats))


if __name__ == "__main__":
    main()
