"""Profile the worker side of a one-block tabular fit in-process: the fused-epochs task
(``pipeline.train.fused.fused_epochs``: every epoch's local steps, update and validation scoring)
of a default ``TabularClassifier/TabularRegressor(random_state=0)`` fit on the quick quality
benchmark's seed-0 rows of a dataset (``--full``: 80% of all its rows, as the full benchmark trains).

``capture NAME FILE [--full] [--epochs N]`` fits once on an in-process cluster and pickles the task's
arguments (``--epochs N``: ``max_iter=N`` and a patience that never stops it, so that trees whose
bits differ run the same steps in ``ab``);
``replay FILE [--repeat N] [--profile]`` runs the task N times and prints seconds, minor page
faults and (``--profile``) the top of a cProfile listing. Run the replay with
``MALLOC_TRIM_THRESHOLD_=65536`` and one BLAS thread to see what a nanny-started worker sees::

    PYTHONPATH=$PWD python benchmarks/profile_tabular_fused.py capture loans /tmp/loans.pkl
    MALLOC_TRIM_THRESHOLD_=65536 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        PYTHONPATH=$PWD python benchmarks/profile_tabular_fused.py replay /tmp/loans.pkl --profile

``ab OTHER_CHECKOUT FILE [--repeat N]`` loads the package of another checkout next to this one
in the same process (``sys.modules`` swapped around each call) and runs the task N times on
each, alternating, so that the machine's drift hits both alike; it prints CPU seconds per run
and the median of the per-pair ratios this/other (a change of a few percent is visible on a
shared machine, where separate processes' times vary by ±10%).
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import time
import warnings

import cloudpickle

# imported before bench_quality, which puts its own checkout first on sys.path
import pipeline as pl
import pipeline.train.fused as fused

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def capture(name: str, path: str, full: bool = False, epochs: int | None = None) -> None:
    from bench_quality import _dataset
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    X, y, task = _dataset(name)
    strat = y if task == "classification" else None
    Xs, ys = (X, y) if full else train_test_split(X, y, train_size=3000, random_state=100,
                                                  stratify=strat)[::2]
    Xtr, _, ytr, _ = train_test_split(Xs, ys, test_size=0.2, random_state=0,
                                      stratify=ys if task == "classification" else None)
    original = fused.fused_epochs

    def recording(*args):
        with open(path, "wb") as f:
            cloudpickle.dump(args, f)
        return original(*args)

    fused.fused_epochs = recording
    est = pl.TabularClassifier if task == "classification" else pl.TabularRegressor
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fixed = {} if epochs is None else {"max_iter": epochs, "n_iter_no_change": epochs + 1}
            m = est(random_state=0, **fixed).fit(Xtr, ytr)
    print(f"{name}: {m.n_iter_} epochs, {m.train_summary_['n_params']} parameters -> {path}")


def replay(path: str, repeat: int, profile: bool) -> None:
    import resource

    from pipeline.train.fused import fused_epochs

    with open(path, "rb") as f:
        args = pickle.load(f)
    fused_epochs(*args)  # warm-up: workspaces, imports
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        if prof is not None:
            prof.enable()
        out = fused_epochs(*args)
        if prof is not None:
            prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    epochs = len(out.records)
    print(f"{epochs} epochs/run, {repeat} runs: {wall / repeat:.3f} s wall, "
          f"{cpu / repeat:.3f} s CPU per run; {faults / repeat:.0f} minor faults per run; "
          f"params head {out.params[:3]}")
    if prof is not None:
        import pstats

        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def _package(checkout: str | None, path: str) -> tuple[dict, object, tuple]:
    """The ``pipeline`` modules of ``checkout`` (``None``: the one imported at the top), its
    ``fused_epochs`` and the task's arguments unpickled against them."""
    mine = {k: v for k, v in sys.modules.items() if k == "pipeline" or k.startswith("pipeline.")}
    if checkout is not None:
        for k in mine:
            del sys.modules[k]
        sys.path.insert(0, os.path.abspath(checkout))
        importlib.import_module("pipeline.train.fused")
        sys.path.pop(0)
    mods = {k: v for k, v in sys.modules.items() if k == "pipeline" or k.startswith("pipeline.")}
    with open(path, "rb") as f:
        args = pickle.load(f)
    task = mods["pipeline.train.fused"].fused_epochs
    if checkout is not None:  # back to this checkout's package
        _use(mine)
    return mods, task, args


def _use(mods: dict) -> None:
    for k in [k for k in sys.modules if k == "pipeline" or k.startswith("pipeline.")]:
        del sys.modules[k]
    sys.modules.update(mods)


def ab(other: str, path: str, repeat: int) -> None:
    import statistics

    sides = {"this": _package(None, path), "other": _package(other, path)}
    times: dict[str, list[float]] = {"this": [], "other": []}
    for name, (mods, task, args) in sides.items():  # warm-up: workspaces, imports
        _use(mods)
        head = task(*args).params[:3]
        print(f"{name}: {mods['pipeline'].__file__}, params head {head}")
    for r in range(repeat):
        for name in ("this", "other") if r % 2 else ("other", "this"):
            mods, task, args = sides[name]
            _use(mods)
            c0 = time.process_time()
            task(*args)
            times[name].append(time.process_time() - c0)
    _use(sides["this"][0])
    for name, t in times.items():
        print(f"{name}: CPU s per run median {statistics.median(t):.3f}, min {min(t):.3f} "
              f"({len(t)} runs)")
    ratios = [a / b for a, b in zip(times["this"], times["other"], strict=True)]
    print(f"this/other, median of the per-pair ratios: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture(sys.argv[2], sys.argv[3], "--full" in sys.argv,
                int(sys.argv[sys.argv.index("--epochs") + 1]) if "--epochs" in sys.argv else None)
    elif sys.argv[1] == "ab":
        ab(sys.argv[2], sys.argv[3], int(sys.argv[sys.argv.index("--repeat") + 1])
           if "--repeat" in sys.argv else 9)
    else:
        replay(sys.argv[2], int(sys.argv[sys.argv.index("--repeat") + 1])
               if "--repeat" in sys.argv else 3, "--profile" in sys.argv)
