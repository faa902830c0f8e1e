"""Our per-block kernel against the plain NumPy reference, in one process, side by side
(issue 9: the kernel ≥ 0.9× the reference at batch 256 and 1024).

Both run on the same rows (``common.classification_data``, float32, 20 features), one epoch
per run: ours is ``bench_throughput.ours_block`` (``local_steps.partition_local_steps`` over one
in-memory block, shuffled, Adam, lr 1e-3, alpha 1e-4: what a block runs in
``sync="average"``), the reference ``bench_throughput.numpy_epoch`` (written-out
forward/backward and Adam over contiguous batches). Runs alternate ours / reference, so a busy
neighbour hits both alike; the ratio of the medians and the median of the run-by-run ratios
(ours over the reference run right after it) are printed. On a busy machine, many short epochs
(``--rows 20000 --reps 25``) give steadier ratios than a few long ones.

    OMP_NUM_THREADS=1 python benchmarks/kernel_ratio.py [--rows 100000] [--reps 5]
        [--batches 256 1024] [--cpu-time] [--profile 256]

``--profile B`` adds a cProfile of one epoch of ours at batch ``B`` (own time per function;
cProfile inflates small calls, read it for proportions).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from common import classification_data, median


def compare(X: np.ndarray, Y: np.ndarray, batch: int, reps: int,
            clock: Callable[[], float] = time.perf_counter) -> tuple[list[float], ...]:
    """samples/s of ``reps`` epochs of ours and of the reference, alternating (after a
    warm-up epoch of each), timed with ``clock``."""
    import bench_throughput as bt

    n = X.shape[0]
    kernels = (lambda s: bt.ours_block(X, Y, batch, True, s),
               lambda s: bt.numpy_epoch(X, Y, batch, s))
    for k in kernels:
        k(0)
    rates: tuple[list[float], list[float]] = ([], [])
    for r in range(reps):
        for k, out in zip(kernels, rates, strict=True):
            t0 = clock()
            k(r)
            out.append(n / (clock() - t0))
    return rates


def profile(X: np.ndarray, Y: np.ndarray, batch: int, top: int = 15) -> None:
    import cProfile
    import pstats

    import bench_throughput as bt

    bt.ours_block(X, Y, batch, True, 0)
    prof = cProfile.Profile()
    prof.enable()
    bt.ours_block(X, Y, batch, True, 0)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--profile", type=int, default=None, metavar="BATCH")
    p.add_argument("--cpu-time", action="store_true",
                   help="time with the process's CPU time (time.process_time) instead of the "
                        "wall clock: steadier on a shared machine, blind to waiting")
    args = p.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    X, y = classification_data(args.rows, seed=0)
    Y = y.astype(np.float32).reshape(-1, 1)
    print(f"{args.rows:,} rows x {X.shape[1]} float32, {args.reps} epochs each, alternating, "
          f"{'CPU time' if args.cpu_time else 'wall clock'}")
    print(f"{'batch':>6} {'ours samples/s':>15} {'NumPy samples/s':>16} {'ratio':>6} "
          f"{'median of run ratios':>21}")
    for batch in args.batches:
        ours, ref = compare(X, Y, batch, args.reps, clock)
        pairs = [a / b for a, b in zip(ours, ref, strict=True)]
        print(f"{batch:>6} {median(ours):>15,.0f} {median(ref):>16,.0f} "
              f"{median(ours) / median(ref):>6.2f} {median(pairs):>21.2f}  "
              f"(runs {min(pairs):.2f}–{max(pairs):.2f})", flush=True)
    if args.profile:
        profile(X, Y, args.profile)


if __name__ == "__main__":
    main()
