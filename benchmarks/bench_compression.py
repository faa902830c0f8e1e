"""Pruning and distillation of the demo model: accuracy against the teacher on held-out rows.

Teacher: the demo classifier (28 → 64 → 64 → 1, relu, float32) trained on the demo data.
Pruning: global magnitude pruning to 80% weight sparsity, at once (:func:`pipeline.compress.prune`)
then fine-tuning epochs with the mask inside every optimizer step
(:func:`pipeline.compress.fine_tune`), or gradually over the same epochs on Zhu & Gupta's cubic
schedule (:func:`pipeline.compress.prune_gradually`, the target's row). Distillation: a student with half the hidden units
(32, 32) trained on the teacher's soft targets (T = 2, alpha = 0.5) for as many epochs as the
teacher (:func:`pipeline.distill.distill`), starting from the teacher's strongest units (the
default) or at random, next to the same student trained on the labels only.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import numpy as np
from common import log, main, section, table, target

COMMAND = "python benchmarks/bench_compression.py [--quick]"


def run(quick: bool) -> dict[str, Any]:
    import dask.dataframe as dd
    import pandas as pd
    from distributed import Client, LocalCluster
    from sklearn.exceptions import ConvergenceWarning

    import pipeline as pl
    from pipeline.compress import fine_tune, prune, prune_gradually, sparsity
    from pipeline.datasets import make_chunk, make_tabular
    from pipeline.distill import distill

    n_train, epochs, tune = (50_000, 4, 2) if quick else (200_000, 8, 3)
    train = pd.concat(make_tabular(n_train, chunk_rows=12_500), ignore_index=True)
    test = pd.concat([make_chunk(900 + i, 10_000) for i in range(2)], ignore_index=True)
    rows, t0 = [], time.perf_counter()
    kw = {"max_iter": epochs, "batch_size": 1024, "random_state": 0, "sync": "average"}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fixed epoch budgets on purpose
        tdd = dd.from_pandas(train, npartitions=4, sort=False)
        prep = pl.Preprocessor(label="y", categorical=["city", "segment"]).fit(tdd)
        X, y = prep.transform_xy(tdd)
        Xt = prep.transform(test).to_numpy(dtype=np.float32)
        yt = test["y"].to_numpy()

        def acc(m: Any) -> float:
            return float(np.mean(m.predict(Xt) == yt))

        log("teacher")
        teacher = pl.MLPClassifier((64, 64), **kw).fit(X, y)
        base = acc(teacher)
        rows.append(["teacher 64-64", base, 0.0, teacher.params_.size, "-"])

        log("pruning")
        pruned = copy.deepcopy(teacher)
        mask = prune(pruned, 0.8)
        rows.append(["pruned 80%, no fine-tuning", acc(pruned), 100 * (acc(pruned) - base),
                     int(mask.sum()), f"{sparsity(pruned.spec_, pruned.params_):.3f}"])
        fine_tune(pruned, X, y, mask, epochs=tune, client=client)
        oneshot_acc = acc(pruned)
        rows.append([f"pruned 80% at once + {tune} fine-tuning epochs", oneshot_acc,
                     100 * (oneshot_acc - base), int(mask.sum()),
                     f"{sparsity(pruned.spec_, pruned.params_):.3f}"])
        gradual = copy.deepcopy(teacher)
        gmask, _ = prune_gradually(gradual, X, y, 0.8, epochs=tune, client=client)
        pruned_acc = acc(gradual)
        rows.append([f"pruned gradually to 80% over {tune} epochs (cubic schedule)", pruned_acc,
                     100 * (pruned_acc - base), int(gmask.sum()),
                     f"{sparsity(gradual.spec_, gradual.params_):.3f}"])

        log("distillation")
        student = distill(teacher, pl.MLPClassifier((32, 32), **kw), X, y, temperature=2.0,
                          alpha=0.5, client=client)
        student_acc = acc(student)
        rows.append(["student 32-32, distilled (T=2, alpha=0.5), started from the teacher's "
                     "strongest units", student_acc, 100 * (student_acc - base),
                     student.params_.size, "-"])
        scratch = distill(teacher, pl.MLPClassifier((32, 32), **kw), X, y, temperature=2.0,
                          alpha=0.5, init="random", client=client)
        rows.append(["student 32-32, distilled (T=2, alpha=0.5), random start", acc(scratch),
                     100 * (acc(scratch) - base), scratch.params_.size, "-"])
        plain = pl.MLPClassifier((32, 32), **kw).fit(X, y)
        rows.append(["student 32-32, labels only", acc(plain), 100 * (acc(plain) - base),
                     plain.params_.size, "-"])
    seconds = time.perf_counter() - t0
    tab = table(["model", "test accuracy", "Δ vs teacher (points)", "non-zero params",
                 "weight sparsity"], rows,
                f"{len(yt):,} held-out demo rows; trained on {n_train:,} rows, {epochs} epochs.")
    targets = [
        target("80% sparsity with ≤ 0.5 points loss after fine-tuning (gradual pruning)",
               f"{100 * (pruned_acc - base):+.2f} points (at once: "
               f"{100 * (oneshot_acc - base):+.2f})", base - pruned_acc <= 0.005),
        target("student with half the hidden units within 0.5 points of its teacher",
               f"{100 * (student_acc - base):+.2f} points", base - student_acc <= 0.005),
    ]
    notes = [
        f"{seconds:.0f} s in total on a 1-worker in-process cluster; accuracies do not depend "
        "on timing, but the budgets are small (quick settings): a longer run may differ.",
        "Fine-tuning trains with the mask inside every optimizer step (pipeline.optim.masked): "
        "pruned weights stay exactly zero.",
        "The distilled student starts as the teacher's sub-network of its strongest hidden units "
        "(pipeline.distill.narrow_params, distill's default for a narrower student); the "
        "random-start row is the same distillation from fit's random initialisation.",
    ]
    return section("Compression: pruning and distillation", COMMAND, tables=[tab],
                   targets=targets, notes=notes)


if __name__ == "__main__":
    main(run)
