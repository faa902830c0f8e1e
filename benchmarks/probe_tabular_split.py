"""Default tabular fits of the quality benchmark's datasets (full rows, 80/20 split per seed), with
the training frame optionally cut into ``--parts`` partitions: fit seconds, epochs, blocks, test
metric, and LightGBM's on the same rows. For trying a split of small data over the workers by
hand (e.g. ``--parts 2 --param min_block_rows=1000 --param replicas=2`` against no split)::

    PYTHONPATH=. python benchmarks/probe_tabular_split.py credit_data,hotel_rates --seeds 3 \\
        [--parts 2] [--param NAME=VALUE ...]

A name ``synthetic:N`` is N rows of ``bench_tabular_scale.make_frame`` (binary, mixed columns).

One JSON line per fit, then the means per dataset. 2-worker (``--workers N``) ``LocalCluster`` (nanny-started
workers, one thread each), after an untimed warm-up fit.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import sys
import time
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _split(X: pd.DataFrame, y: pd.Series, parts: int):
    if parts <= 1:
        return X, y
    import dask.dataframe as dd

    d = dd.from_pandas(X.assign(__y=np.asarray(y)), npartitions=parts, sort=False)
    return d.drop(columns="__y"), d["__y"]


def _load(name: str):
    """A quality dataset by name, or ``synthetic:N``: N rows of bench_tabular_scale's data."""
    if name.startswith("synthetic:"):
        from bench_tabular_scale import make_frame

        X, y = make_frame(int(name.split(":", 1)[1]))
        return X, pd.Series(y), "classification"
    from bench_quality import _dataset

    return _dataset(name)


def main() -> None:
    from bench_quality import _as_lgb_frame, _lightgbm, _metrics
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    import pipeline as pl

    ap = argparse.ArgumentParser()
    ap.add_argument("datasets")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--param", action="append", default=[],
                    help="NAME=VALUE (a Python literal) passed to the estimator, repeatable")
    ap.add_argument("--set", action="append", default=[],
                    help="MODULE.NAME=VALUE (a Python literal) set on the client before the "
                         "fits, e.g. pipeline.tabular_net.PERIODIC_FREQUENCIES=4; repeatable")
    args = ap.parse_args()
    for item in args.set:
        target, value = item.split("=", 1)
        module, attr = target.rsplit(".", 1)
        setattr(importlib.import_module(module), attr, ast.literal_eval(value))
    params = {k: ast.literal_eval(v) for k, v in (p.split("=", 1) for p in args.param)}
    rows = []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1,
                      dashboard_address=None) as cluster, \
            Client(cluster):
        Xw = pd.DataFrame({"a": np.arange(200.0), "b": ["u", "v"] * 100})
        pl.TabularClassifier(max_iter=1, random_state=0).fit(Xw, np.arange(200) % 2)
        for name in args.datasets.split(","):
            X, y, task = _load(name)
            for seed in range(args.seeds):
                Xtr, Xte, ytr, yte = train_test_split(
                    X, y, test_size=0.2, random_state=seed,
                    stratify=y if task == "classification" else None)
                est = (pl.TabularClassifier if task == "classification"
                       else pl.TabularRegressor)(random_state=seed, **params)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est.fit(*_split(Xtr, ytr, args.parts))
                wall = time.perf_counter() - t0
                proba = est.predict_proba(Xte) if task == "classification" else None
                m = _metrics(task, yte, est.predict(Xte), proba)
                cats = {c: sorted(Xtr[c].dropna().unique().tolist()) for c in Xtr.columns
                        if not pd.api.types.is_numeric_dtype(Xtr[c])}
                lgb = _lightgbm(Xtr, task, seed)
                t0 = time.perf_counter()
                lgb.fit(_as_lgb_frame(Xtr, cats), ytr)
                lgb_s = time.perf_counter() - t0
                rows.append({"dataset": name, "seed": seed, "wall_s": round(wall, 3),
                             "train_s": round(est.train_summary_["seconds"], 3),
                             "epochs": int(est.n_iter_),
                             "member_epochs": getattr(est, "member_n_iter_", None),
                             "blocks": est.train_summary_["n_blocks"],
                             "main": round(float(m["main"]), 4), "lgb_s": round(lgb_s, 3),
                             "ratio": round(wall / lgb_s, 1)})
                print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    print(df.groupby("dataset", sort=False)[["wall_s", "train_s", "epochs", "main", "ratio"]].mean()
          .round(4).to_string())


if __name__ == "__main__":
    main()
