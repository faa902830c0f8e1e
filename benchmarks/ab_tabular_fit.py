"""CPU seconds, wall time and worker page faults of default tabular fits, for paired A/B runs of
two checkouts (the code under test is whatever ``pipeline`` imports: set ``PYTHONPATH``).

Each run starts a 2-worker ``LocalCluster`` (1 thread each, nanny-started workers as in the
quality benchmark), warms it up as ``bench_quality.py`` does, then fits
``TabularClassifier/TabularRegressor(random_state=0)`` ``--fits`` times per dataset on the quick
quality benchmark's seed-0 training rows (3,000 capped, 80%), and prints one JSON line per
dataset: medians of wall s, CPU s (this process, which runs the client and the scheduler, plus
both workers' user+system time, from ``psutil``), the workers' minor page faults, the epochs
run, and the first fitted parameters and a hash of all (to see that A and B fit the same
numbers).

Usage (alternate A and B, a few runs each, on a loaded machine compare medians)::

    PYTHONPATH=/work/main python benchmarks/ab_tabular_fit.py --fits 3 credit_data loans
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# imported before bench_quality, which puts its own checkout first on sys.path
import pipeline as pl  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _worker_usage() -> tuple[float, int]:
    import resource

    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system, resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _usage(client) -> tuple[float, float, int]:
    """(this process's CPU s, the workers' CPU s, the workers' minor faults) so far."""
    import psutil

    t = psutil.Process().cpu_times()
    workers = client.run(_worker_usage)
    return (t.user + t.system, sum(c for c, _ in workers.values()),
            sum(f for _, f in workers.values()))


def main() -> None:
    from bench_quality import _dataset
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--fits", type=int, default=3)
    ap.add_argument("--param", action="append", default=[],
                    help="NAME=VALUE (a Python literal) passed to the estimator, repeatable")
    args = ap.parse_args()
    import ast

    params = {k: ast.literal_eval(v) for k, v in (p.split("=", 1) for p in args.param)}
    client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None))
    Xw = pd.DataFrame({"a": np.arange(200.0), "b": ["u", "v"] * 100})
    pl.TabularClassifier(max_iter=1, random_state=0).fit(Xw, np.arange(200) % 2)
    try:
        for name in args.datasets:
            X, y, task = _dataset(name)
            strat = y if task == "classification" else None
            Xs, _, ys, _ = train_test_split(X, y, train_size=3000, random_state=100,
                                            stratify=strat)
            Xtr, _, ytr, _ = train_test_split(
                Xs, ys, test_size=0.2, random_state=0,
                stratify=ys if task == "classification" else None)
            est = pl.TabularClassifier if task == "classification" else pl.TabularRegressor
            walls, cpus, faults, own = [], [], [], []
            for _ in range(args.fits):
                c0, w0, f0 = _usage(client)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = est(random_state=0, **params).fit(Xtr, ytr)
                walls.append(time.perf_counter() - t0)
                c1, w1, f1 = _usage(client)
                cpus.append(c1 - c0 + w1 - w0)
                own.append(c1 - c0)
                faults.append(f1 - f0)
            print(json.dumps({
                "dataset": name, "pipeline": os.path.dirname(pl.__file__),
                "wall_s": float(np.median(walls)), "cpu_s": float(np.median(cpus)),
                "client_scheduler_cpu_s": float(np.median(own)),
                "worker_minor_faults": int(np.median(faults)), "epochs": int(m.n_iter_),
                "walls": [round(w, 3) for w in walls], "cpus": [round(c, 3) for c in cpus],
                "params_head": [float(v) for v in m.params_[:3]],
                "params_sha1": hashlib.sha1(np.ascontiguousarray(m.params_).tobytes()).hexdigest(),
            }), flush=True)
    finally:
        client.close()


if __name__ == "__main__":
    main()
