"""Count and time the blocking client<->scheduler round trips of two small fits.

Every ``Client.sync`` call the fitting thread makes (an RPC such as ``who_has``, ``gather``,
``log_event``, ``run_on_scheduler``, or a ``wait`` for futures) is recorded with its duration
and the pipeline function that made it. Usage::

    PYTHONPATH=$PWD python benchmarks/round_trips.py [--reps 5] [--list]

Prints, per fit, the median count and seconds over ``--reps`` fits (after one warm-up fit),
in all and before training (the calls before the first wait for a training round, ``train/recovery.py``),
and with ``--list`` the calls of the last fit. The MLP fit runs 3 epochs (the round trips
before training do not depend on ``max_iter``).
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback

import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

import pipeline as pl

CALLS: list[tuple[str, str, float]] = []


def _caller() -> str:
    for fr in reversed(traceback.extract_stack()[:-3]):
        if "/pipeline/" in fr.filename:
            return f"{fr.filename.split('/pipeline/')[-1]}:{fr.lineno} {fr.name}"
    return "?"


def _patch() -> None:
    orig = Client.sync

    def sync(self, func, *args, **kwargs):
        if kwargs.get("asynchronous") or self.asynchronous:
            return orig(self, func, *args, **kwargs)
        t0 = time.perf_counter()
        try:
            return orig(self, func, *args, **kwargs)
        finally:
            name = getattr(func, "__name__", None) or getattr(func, "key", repr(func))
            CALLS.append((str(name), _caller(), time.perf_counter() - t0))
    Client.sync = sync


def tabular_data():
    rng = np.random.default_rng(0)
    n = 2400
    X = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(6)})
    X["c1"] = pd.Categorical(rng.choice(list("abcde"), size=n))
    X["c2"] = pd.Categorical(rng.choice(list("pqrs"), size=n))
    y = pd.Series((X["x0"] + (X["c1"] == "a") > 0.3).astype(int), name="y")
    return X, y


def mlp_data():
    import dask.array as da
    rng = np.random.default_rng(0)
    Xn = rng.normal(size=(400_000, 20)).astype("float32")
    yn = (Xn[:, 0] + Xn[:, 1] > 0).astype("int64")
    return da.from_array(Xn, chunks=(50_000, 20)), da.from_array(yn, chunks=50_000)


def run(name, make, fit_args, reps, show):
    counts, secs, walls, pre_n, pre_s = [], [], [], [], []
    for r in range(reps + 1):
        CALLS.clear()
        t0 = time.perf_counter()
        make().fit(*fit_args)
        wall = time.perf_counter() - t0
        if r == 0:
            continue  # warm-up
        counts.append(len(CALLS))
        first = next((k for k, c in enumerate(CALLS) if c[1].startswith("train/recovery")),
                     len(CALLS))
        pre_n.append(first)
        pre_s.append(sum(c[2] for c in CALLS[:first]))
        secs.append(sum(c[2] for c in CALLS))
        walls.append(wall)
    print(f"{name}: round trips {statistics.median(counts)} (min {min(counts)}, max "
          f"{max(counts)}), blocking s {statistics.median(secs):.3f}, fit s "
          f"{statistics.median(walls):.3f}; before training: round trips "
          f"{statistics.median(pre_n)}, blocking s {statistics.median(pre_s):.3f} (medians of "
          f"{len(walls)})")
    if show:
        for fn, where, s in CALLS:
            print(f"   {s * 1e3:7.1f} ms  {fn:28s} {where}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    _patch()
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster):
        if a.only in ("", "tabular"):
            X, y = tabular_data()
            run("TabularClassifier 2,400 rows", lambda: pl.TabularClassifier(random_state=0),
                (X, y), a.reps, a.list)
        if a.only in ("", "mlp"):
            X, y = mlp_data()
            run("MLPClassifier 400k x 20, 8 chunks, max_iter=3",
                lambda: pl.MLPClassifier(random_state=0, max_iter=3), (X, y), a.reps, a.list)


if __name__ == "__main__":
    main()
