"""Per-step cost of the training kernel, in-process (issue 10): ms per local-SGD step of the
default ``MLPClassifier`` network and ms per exact-gradient block call.

The local step is :func:`pipeline.train.local_steps.partition_local_steps` on one in-memory
block of ``--rows`` x 28 float32 rows (the demo data's width, a 0/1 target), the default network
(28 -> 100 relu -> 1, ``binary_log_loss``), scikit-learn's Adam, mini-batches of 200 rows
(``batch_size="auto"``) and ``local_steps="auto"`` (328 steps a round): what one replica runs
per round in a default fit on 2 workers. The exact gradient is
:func:`pipeline.train.tasks.partition_grad` for a 4-row share of a 6,250-row block (400k rows
in 64 blocks at a global batch of 256) and for a whole 6,000-row block.

Figures are medians (and minima) over ``--repeats`` runs after one warm-up run, in wall
milliseconds (``time.perf_counter``) and in the process's CPU milliseconds
(``time.process_time``: less moved by other processes on a shared machine). BLAS runs one
thread, as in a Dask worker.

``--ab PATH`` loads a second copy of the package from checkout ``PATH`` (as
``pipeline_base``) into the same process and alternates the two run by run (A B A B ...), so
both see the same machine; it prints both and the median of the per-pair ratios new/base::

    PYTHONPATH=$PWD python benchmarks/bench_step_cost.py --ab /path/to/old/checkout

``--profile N`` prints cProfile's top ``N`` functions (by own time) of one local-steps round.
``--fit EPOCHS`` fits a default ``MLPClassifier(max_iter=EPOCHS)`` on 400,000 rows of the demo
data (``tta_datasets.demo``) on a 2-worker ``pipeline.connect()`` cluster (one thread each)
and prints the seconds of each epoch (``history_``) and the CPU seconds per epoch both worker
processes spent during the fit; run it once per checkout (``PYTHONPATH``).
"""

from __future__ import annotations

import os

# One BLAS thread, as in a Dask worker (the nanny sets these): a multi-threaded BLAS on a busy
# 2-core machine makes a 6,000-row matmul ~20x slower, which is not what a worker sees.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

N_FEATURES = 28
BATCH = 200
ROUND_STEPS = 328  # local_steps="auto" at batch 200 until session 7: ceil(65,536 / 200)


def library(name: str = "pipeline", checkout: str | None = None) -> SimpleNamespace:
    """What the benchmark calls, from the importable ``pipeline`` or, with ``checkout``, from
    that checkout's package loaded under ``name`` (the package imports itself relatively)."""
    if checkout is not None:
        root = os.path.join(os.path.abspath(checkout), "pipeline")
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(root, "__init__.py"), submodule_search_locations=[root])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)

    def sub(path: str) -> Any:
        return importlib.import_module(f"{name}.{path}")

    return SimpleNamespace(
        where=importlib.import_module(name).__file__, nn=sub("nn"), optim=sub("optim"),
        Block=sub("blocks").Block, partition_local_steps=sub("train.local_steps")
        .partition_local_steps, replica_local_steps=sub("train.local_steps")
        .replica_local_steps, Rate=sub("train.tasks").Rate,
        partition_grad=sub("train.tasks").partition_grad)


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, N_FEATURES), dtype=np.float32)
    w = rng.standard_normal(N_FEATURES)
    Y = (X @ w + 0.5 * rng.standard_normal(rows) > 0).astype(np.float32)[:, None]
    return X, Y


class Local:
    """Rounds of local steps of one library on its own copy of the block."""

    def __init__(self, lib: SimpleNamespace, rows: int) -> None:
        self.lib, self.steps = lib, rows // BATCH
        self.block = lib.Block(*_data(rows, 0))
        self.spec = lib.nn.MLPSpec((N_FEATURES, 100, 1), activation="relu",
                                   loss="binary_log_loss")
        self.params = self.spec.init_params(0)
        self.state = None
        self.run()  # warm-up: buffers, the epoch order

    def run(self) -> tuple[float, float]:
        """One round; ms per step (wall, CPU)."""
        lib = self.lib
        schedule = tuple((0, s, BATCH) for s in range(ROUND_STEPS))
        t0, c0 = time.perf_counter(), time.process_time()
        _, self.state = lib.partition_local_steps(
            self.block, self.params, self.state, self.spec, lib.optim.adam(1e-3), 1e-4,
            lib.Rate(1e-3), 0, schedule, self.steps, 0, True)
        return (1e3 * (time.perf_counter() - t0) / ROUND_STEPS,
                1e3 * (time.process_time() - c0) / ROUND_STEPS)


class Replica(Local):
    """A replica of two blocks of ``rows / 2`` rows (a default fit's 4 partitions on 2
    workers): every step gathers from both blocks and joins the two halves."""

    def __init__(self, lib: SimpleNamespace, rows: int) -> None:
        half = rows // 2
        self.blocks = [lib.Block(*_data(half, 10 + i)) for i in range(2)]
        self.half_steps = half // BATCH * 2  # global steps: each block gives ~100 rows a step
        super().__init__(lib, rows)

    def run(self) -> tuple[float, float]:
        lib = self.lib
        schedule = tuple((0, s, BATCH) for s in range(ROUND_STEPS))
        t0, c0 = time.perf_counter(), time.process_time()
        [(_, (_, self.state))] = lib.replica_local_steps(
            self.blocks, [0, 1], 0, self.params, self.state, self.spec, lib.optim.adam(1e-3),
            1e-4, lib.Rate(1e-3), schedule, self.half_steps, 0, True)
        return (1e3 * (time.perf_counter() - t0) / ROUND_STEPS,
                1e3 * (time.process_time() - c0) / ROUND_STEPS)


class Exact:
    """``calls`` exact-gradient calls on a ``block_rows``-row block cut into ``steps``."""

    def __init__(self, lib: SimpleNamespace, block_rows: int, steps: int, calls: int) -> None:
        self.lib, self.steps, self.calls = lib, steps, calls
        self.block = lib.Block(*_data(block_rows, 1))
        self.spec = lib.nn.MLPSpec((N_FEATURES, 100, 1), activation="relu",
                                   loss="binary_log_loss")
        self.params = self.spec.init_params(0)
        self.run()

    def run(self) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for s in range(self.calls):
            self.lib.partition_grad(self.block, self.params, self.spec, 3, 0, s % self.steps,
                                    self.steps, 0, True)
        return (1e3 * (time.perf_counter() - t0) / self.calls,
                1e3 * (time.process_time() - c0) / self.calls)


def cases(lib: SimpleNamespace, rows: int, only: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if only in (None, "local"):
        out[f"local step, {BATCH} rows, 28->100->1 Adam"] = Local(lib, rows)
        out[f"replica step, 2 blocks x {BATCH // 2} rows"] = Replica(lib, rows)
    if only in (None, "exact"):
        out["exact gradient, 4-row share of 6,250 rows"] = Exact(lib, 6_250, 1_562, 300)
        out["exact gradient, whole 6,000-row block"] = Exact(lib, 6_000, 1, 20)
    return out


def profile_round(lib: SimpleNamespace, rows: int, top: int) -> None:
    case = Local(lib, rows)
    prof = cProfile.Profile()
    prof.enable()
    case.run()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def _cpu_seconds(dask_worker: Any = None) -> float:
    return time.process_time()  # the whole worker process: every thread


def fit_epochs(epochs: int, rows: int = 400_000) -> tuple[list[float], float]:
    """Seconds of each epoch of a default ``MLPClassifier`` fit on the demo data, and the CPU
    seconds both workers spent during the fit."""
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
        before = client.run(_cpu_seconds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = MLPClassifier(max_iter=epochs, random_state=0).fit(Xd, yd, client=client)
        after = client.run(_cpu_seconds)
    cpu = sum(after[w] - before[w] for w in after)
    return [float(h["seconds"]) for h in clf.history_], cpu


def _stats(xs: list[float]) -> str:
    return f"{statistics.median(xs):7.3f} (min {min(xs):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--only", choices=("local", "exact"), default=None)
    parser.add_argument("--ab", metavar="CHECKOUT", default=None)
    parser.add_argument("--fit", type=int, default=0, metavar="EPOCHS")
    args = parser.parse_args()
    new = library()
    print(f"pipeline from {new.where}")
    if args.fit:
        secs, cpu = fit_epochs(args.fit)
        print("fit seconds per epoch: " + ", ".join(f"{x:.3f}" for x in secs)
              + f"; median after the first {statistics.median(secs[1:] or secs):.3f}; "
              f"workers' CPU seconds per epoch {cpu / len(secs):.3f}")
        return
    if args.profile:
        profile_round(new, args.rows, args.profile)
        return
    libs = {"new": new}
    if args.ab:
        libs = {"base": library("pipeline_base", args.ab), "new": new}
        print(f"base from {libs['base'].where}")
    runs = {label: cases(lib, args.rows, args.only) for label, lib in libs.items()}
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for what in runs["new"]:
            for label in libs:  # base then new, every repeat
                times.setdefault((label, what), []).append(runs[label][what].run())
    for what in runs["new"]:
        print(what)
        for label in libs:
            wall = [w for w, _ in times[label, what]]
            cpu = [c for _, c in times[label, what]]
            print(f"  {label:<5} ms wall {_stats(wall)}, CPU {_stats(cpu)}")
        if args.ab:
            pairs = zip(times["base", what], times["new", what], strict=True)
            ratios = [(n[0] / b[0], n[1] / b[1]) for b, n in pairs]
            print(f"  new/base, median of {len(ratios)} pairs: wall "
                  f"{statistics.median(r for r, _ in ratios):.3f}, CPU "
                  f"{statistics.median(c for _, c in ratios):.3f}")


if __name__ == "__main__":
    main()
