"""Default tabular fits on scikit-learn's bundled small data sets (breast_cancer, wine, iris,
diabetes, digits: 150-1,797 rows, so a 10% validation split is under 200 rows and no early
stopping ends training), 70/30 splits, ``--seeds`` seeds: test accuracy (RMSE for diabetes),
mean ± sd, and fit seconds, for each ``--param`` setting in turn (the estimator's defaults
with ``NAME=VALUE``, a Python literal; ``--param ""`` is the defaults)::

    PYTHONPATH=. python benchmarks/probe_small_sets.py --seeds 5 --param dropout=0.0 \\
        --param dropout=0.1

2-worker ``LocalCluster`` (nanny-started workers, one thread each).
"""

from __future__ import annotations

import argparse
import ast
import time
import warnings

import numpy as np


def main() -> None:
    from distributed import Client, LocalCluster
    from sklearn import datasets
    from sklearn.metrics import accuracy_score, mean_squared_error
    from sklearn.model_selection import train_test_split

    import pipeline as pl

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--param", action="append", default=[])
    args = ap.parse_args()
    settings = [{p.split("=", 1)[0]: ast.literal_eval(p.split("=", 1)[1])} if p else {}
                for p in args.param or [""]]
    sets = [("breast_cancer", datasets.load_breast_cancer, True),
            ("wine", datasets.load_wine, True), ("iris", datasets.load_iris, True),
            ("diabetes", datasets.load_diabetes, False), ("digits", datasets.load_digits, True)]
    warnings.simplefilter("ignore")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster):
        for name, loader, classify in sets:
            X, y = loader(return_X_y=True, as_frame=True)
            for params in settings:
                scores, seconds = [], []
                for seed in range(args.seeds):
                    Xtr, Xte, ytr, yte = train_test_split(
                        X, y, test_size=0.3, random_state=seed, stratify=y if classify else None)
                    est = (pl.TabularClassifier if classify else pl.TabularRegressor)(
                        random_state=seed, **params)
                    t0 = time.perf_counter()
                    est.fit(Xtr, ytr)
                    seconds.append(time.perf_counter() - t0)
                    pred = est.predict(Xte)
                    scores.append(accuracy_score(yte, pred) if classify
                                  else mean_squared_error(yte, pred) ** 0.5)
                metric = "accuracy" if classify else "RMSE"
                print(f"{name:14s} {params or 'defaults'}: {metric} {np.mean(scores):.4f} ± "
                      f"{np.std(scores):.4f}, fit {np.mean(seconds):.2f} s", flush=True)


if __name__ == "__main__":
    main()
