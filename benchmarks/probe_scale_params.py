"""Default ``TabularClassifier`` fits of ``bench_tabular_scale``'s synthetic rows (several blocks:
a shared ensemble trained by local SGD over one replica per worker) against the same with
``--param NAME=VALUE`` (Python literals), seeds alternating, 80/20 split::

    PYTHONPATH=. python benchmarks/probe_scale_params.py --rows 336000 --seeds 2 --param dropout=0.1

Prints one line per fit (fit s, epochs, test accuracy, log loss, ROC AUC) and the means.
2-worker ``LocalCluster`` (nanny-started workers, one thread each), after a warm-up fit.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    from bench_tabular_scale import _metrics, make_frame
    from distributed import Client, LocalCluster

    import pipeline as pl

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=336_000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--param", action="append", default=[])
    args = ap.parse_args()
    other = {k: ast.literal_eval(v) for k, v in (p.split("=", 1) for p in args.param)}
    X, y = make_frame(args.rows)
    cut = int(0.8 * args.rows)
    Xtr, Xte, ytr, yte = X.iloc[:cut], X.iloc[cut:], y[:cut], y[cut:]
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster):
        Xw = pd.DataFrame({"a": np.arange(200.0), "b": ["u", "v"] * 100})
        pl.TabularClassifier(max_iter=1, random_state=0).fit(Xw, np.arange(200) % 2)
        for seed in range(args.seeds):
            for name, params in (("defaults", {}), (str(other), other)):
                est = pl.TabularClassifier(random_state=seed, **params)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est.fit(Xtr, ytr)
                m = _metrics(yte, est.predict_proba(Xte))
                rows.append({"setting": name, "seed": seed,
                             "fit_s": round(time.perf_counter() - t0, 2),
                             "epochs": est.n_iter_, **{k: round(v, 4) for k, v in m.items()}})
                print(rows[-1], flush=True)
    print(pd.DataFrame(rows).groupby("setting", sort=False).mean(numeric_only=True)
          .drop(columns="seed").round(4).to_string())


if __name__ == "__main__":
    main()
