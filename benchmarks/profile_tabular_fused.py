"""Profile the worker side of a one-block tabular fit in-process: the fused-epochs task
(``pipeline.train.fused.fused_epochs``: every epoch's local steps, update and validation scoring)
of a default ``TabularClassifier/TabularRegressor(random_state=0)`` fit on the quick quality
benchmark's seed-0 rows of a dataset.

``capture NAME FILE`` fits once on an in-process cluster and pickles the task's arguments;
``replay FILE [--repeat N] [--profile]`` runs the task N times and prints seconds, minor page
faults and (``--profile``) the top of a cProfile listing. Run the replay with
``MALLOC_TRIM_THRESHOLD_=65536`` and one BLAS thread to see what a nanny-started worker sees::

    PYTHONPATH=$PWD python benchmarks/profile_tabular_fused.py capture loans /tmp/loans.pkl
    MALLOC_TRIM_THRESHOLD_=65536 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        PYTHONPATH=$PWD python benchmarks/profile_tabular_fused.py replay /tmp/loans.pkl --profile
"""

from __future__ import annotations

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


def capture(name: str, path: str) -> None:
    from bench_quality import _dataset
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    X, y, task = _dataset(name)
    strat = y if task == "classification" else None
    Xs, _, ys, _ = train_test_split(X, y, train_size=3000, random_state=100, stratify=strat)
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
            m = est(random_state=0).fit(Xtr, ytr)
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


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture(sys.argv[2], sys.argv[3])
    else:
        replay(sys.argv[2], int(sys.argv[sys.argv.index("--repeat") + 1])
               if "--repeat" in sys.argv else 3, "--profile" in sys.argv)
