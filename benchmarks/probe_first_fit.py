"""A user's first tabular fit on a fresh cluster against the next ones: default
``TabularClassifier(max_iter=1)`` fits of credit_data's seed-0 training rows on a new 2-worker
``LocalCluster`` (nanny-started workers, one thread each), no warm-up, and the heavy modules
each worker holds after the first fit (what its tasks imported)::

    PYTHONPATH=. python benchmarks/probe_first_fit.py [--fits 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HEAVY = ("sklearn", "scipy", "pandas", "pyarrow", "dask.dataframe")


def _heavy_modules() -> list[str]:
    return [m for m in HEAVY if m in sys.modules]


def main() -> None:
    from bench_quality import _dataset
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    import pipeline as pl

    ap = argparse.ArgumentParser()
    ap.add_argument("--fits", type=int, default=3)
    args = ap.parse_args()
    X, y, _ = _dataset("credit_data")
    Xtr, _, ytr, _ = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for i in range(args.fits):
            est = pl.TabularClassifier(random_state=0, max_iter=1)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(Xtr, ytr)
            row = {"fit": i, "fit_s": round(time.perf_counter() - t0, 3),
                   "train_s": round(est.train_summary_["seconds"], 3)}
            if i == 0:
                row["worker_modules"] = sorted(client.run(_heavy_modules).values())
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
