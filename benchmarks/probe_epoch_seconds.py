"""Each independent member's epochs as its fused task timed them on its worker, in default
tabular fits: the fit's wall seconds, the first epoch's and the median epoch's milliseconds
(steps, update and validation scoring) and the median of the steps alone, from the records the
task returns (``pipeline.train.fused.EpochRecord``), recorded on the client as they are replayed.
2-worker ``LocalCluster`` (nanny-started workers, one thread each), quality dataset, 80% of its
rows, after a warm-up fit; optional estimator parameters (issue 13, session 16)::

    PYTHONPATH=. python benchmarks/probe_epoch_seconds.py diamonds [batch_size=512] [--seeds 3]
"""

import argparse
import ast
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

if __name__ == "__main__":
    from bench_quality import _dataset
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    import pipeline as pl
    import pipeline.train.fused as fused

    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("params", nargs="*", help="NAME=VALUE estimator parameters")
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    params = {k: ast.literal_eval(v) for k, v in (p.split("=", 1) for p in a.params)}
    recorded = []
    original = fused.replay

    def replay(client, run_id, records, steps, *args, **kwargs):
        recorded.append((steps, [(r.seconds, r.round_seconds) for r in records]))
        return original(client, run_id, records, steps, *args, **kwargs)

    fused.replay = replay
    warnings.simplefilter("ignore")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster):
        X, y, task = _dataset(a.dataset)
        Xtr, _, ytr, _ = train_test_split(X, y, test_size=0.2, random_state=0)
        Est = pl.TabularClassifier if task == "classification" else pl.TabularRegressor
        Est(random_state=1, max_iter=2).fit(Xtr, ytr)
        print("seed  fit_s  steps/epoch  epochs  first_ms  epoch_ms  steps_ms")
        for seed in range(a.seeds):
            recorded.clear()
            t = time.perf_counter()
            Est(random_state=seed, **params).fit(Xtr, ytr)
            wall = time.perf_counter() - t
            for steps, recs in recorded:
                print(f"{seed:4d}  {wall:5.2f}  {steps:11d}  {len(recs):6d}  "
                      f"{1e3 * recs[0][0]:8.1f}  "
                      f"{1e3 * statistics.median(r[0] for r in recs):8.1f}  "
                      f"{1e3 * statistics.median(r[1] for r in recs):8.1f}")
