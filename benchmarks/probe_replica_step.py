"""One replica's local SGD over several blocks against the fused one-block task, on the same rows:
``TabularClassifier(max_iter=E, early_stopping=False)`` on ``bench_tabular_scale``'s synthetic
frame, fitted as

- ``fused``: one block (``min_block_rows`` above the row count): every epoch in one task;
- ``replica``: the default blocks (16,384 rows), ``replicas=1``: one replica over all of
  them, a mesh segment on one worker, rounds of ``local_steps="auto"``;
- ``two``: the default blocks, ``replicas=2`` (the default on a 2-worker cluster).

Without early stopping nothing but the local steps and the rounds differ between the first two:
the training seconds per epoch (``train_summary_["seconds"] / epochs``) compare a replica's
step with the fused task's. The fits alternate, ``--repeats`` times each, on one 2-worker
``LocalCluster`` (nanny-started workers, one thread each), after an untimed warm-up fit::

    PYTHONPATH=. python benchmarks/probe_replica_step.py [--rows 168000] [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

VARIANTS = {"fused": {"min_block_rows": 10**9}, "replica": {"replicas": 1},
            "two": {"replicas": 2}}


def main() -> None:
    from bench_tabular_scale import make_frame
    from distributed import Client, LocalCluster

    import pipeline as pl

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=168_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    X, y = make_frame(args.rows)
    cut = int(0.8 * args.rows)
    X, y = X.iloc[:cut], y[:cut]
    per_epoch: dict[str, list[float]] = {k: [] for k in VARIANTS}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        Xw = pd.DataFrame({"a": np.arange(200.0), "b": ["u", "v"] * 100})
        pl.TabularClassifier(max_iter=1, random_state=0).fit(Xw, np.arange(200) % 2)
        for _ in range(args.repeats):
            for name, kw in VARIANTS.items():
                est = pl.TabularClassifier(random_state=0, max_iter=args.epochs,
                                           early_stopping=False, **kw)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est.fit(X, y)
                s = est.train_summary_
                per_epoch[name].append(s["seconds"] / est.n_iter_)
                mem = client.run(lambda: __import__("psutil").Process().memory_info().rss >> 20)
                print(json.dumps({"variant": name, "fit_s": round(time.perf_counter() - t0, 2),
                                  "train_s": round(s["seconds"], 2), "epochs": est.n_iter_,
                                  "blocks": s["n_blocks"], "replicas": s["replicas"],
                                  "local_steps": s["local_steps"],
                                  "worker_rss_mib": sorted(mem.values())}), flush=True)
    print(json.dumps({k: round(statistics.median(v), 3) for k, v in per_epoch.items()}))


if __name__ == "__main__":
    main()
