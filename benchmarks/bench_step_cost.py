"""Per-step cost of the training kernel, in-process (issue 10): ms per local-SGD step of the
default ``MLPClassifier`` network and ms per exact-gradient block call.

The local step is :func:`pipeline.train.local_steps.partition_local_steps` on one in-memory
block of ``--rows`` x 28 float32 rows (the demo data's width, a 0/1 target), the default network
(28 -> 100 relu -> 1, ``binary_log_loss``), scikit-learn's Adam, mini-batches of 200 rows
(``batch_size="auto"``) and ``local_steps="auto"`` (328 steps a round): what one replica runs
per round in a default fit on 2 workers. The exact gradient is
:func:`pipeline.train.tasks.partition_grad` for a 4-row share of a 6,250-row block (400k rows
in 64 blocks at a global batch of 256) and for a whole 6,000-row block.

Timings are medians of ``--repeats`` runs after one warm-up run. For before/after, run it
with ``PYTHONPATH`` pointing at each checkout, alternately (or under ``farm-bench --vs``)::

    PYTHONPATH=/path/to/old python benchmarks/bench_step_cost.py
    PYTHONPATH=$PWD python benchmarks/bench_step_cost.py --profile 15

``--profile N`` prints cProfile's top ``N`` functions (by own time) of one local-steps round.
``--fit EPOCHS`` instead fits a default ``MLPClassifier(max_iter=EPOCHS)`` on 400,000 rows of
the demo data (``tta_datasets.demo``) on a 2-worker ``pipeline.connect()`` cluster (one thread
each) and prints the seconds of each epoch (``history_``).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import numpy as np

import pipeline
from pipeline import nn, optim
from pipeline.blocks import Block
from pipeline.train.local_steps import partition_local_steps
from pipeline.train.tasks import Rate, partition_grad

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
                epoch: int = 0) -> tuple[object, float]:
    """One round of ``ROUND_STEPS`` local steps; returns (new state, seconds)."""
    schedule = tuple((epoch, s, BATCH) for s in range(ROUND_STEPS))
    t0 = time.perf_counter()
    _, state = partition_local_steps(block, params, state, _spec(), optim.adam(1e-3), 1e-4,
                                     Rate(1e-3), 0, schedule, steps, 0, True)
    return state, time.perf_counter() - t0


def time_local(rows: int, repeats: int) -> list[float]:
    """ms per local step, one figure per round."""
    block = _block(rows)
    steps = rows // BATCH
    params = _spec().init_params(0)
    state, _ = local_round(block, params, None, steps)  # warm-up (and the epoch order)
    out = []
    for _ in range(repeats):
        state, seconds = local_round(block, params, state, steps)
        out.append(1e3 * seconds / ROUND_STEPS)
    return out


def time_exact(block_rows: int, steps: int, calls: int, repeats: int) -> list[float]:
    """ms per ``partition_grad`` call on a ``block_rows``-row block cut into ``steps`` steps."""
    block = _block(block_rows, seed=1)
    spec = _spec()
    params = spec.init_params(0)
    out = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        for s in range(calls):
            partition_grad(block, params, spec, 3, 0, s % steps, steps, 0, True)
        if r:
            out.append(1e3 * (time.perf_counter() - t0) / calls)
    return out


def profile_round(rows: int, top: int) -> None:
    block = _block(rows)
    steps = rows // BATCH
    params = _spec().init_params(0)
    state, _ = local_round(block, params, None, steps)
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

    def show(what: str, xs: list[float]) -> None:
        print(f"{what:<44} median {statistics.median(xs):7.3f} ms  "
              f"(min {min(xs):.3f}, max {max(xs):.3f}, {len(xs)} runs)")

    if args.only in (None, "local"):
        show(f"local step, {BATCH} rows, 28->100->1 Adam", time_local(args.rows, args.repeats))
    if args.only in (None, "exact"):
        show("exact gradient, 4-row share of 6,250 rows", time_exact(6_250, 1_562, 200,
                                                                      args.repeats))
        show("exact gradient, whole 6,000-row block", time_exact(6_000, 1, 20, args.repeats))


if __name__ == "__main__":
    main()
