"""Would the members of a deep ensemble stop sooner together? (issue 13, session 15)

Each independent member of a default tabular fit stops on its own validation score, and the fit
waits for the slower one. This probe trains both members of a default fit past any stop (the
stopping rule's decisions are recorded, not obeyed, up to ``--epochs`` epochs; the
learning-rate schedule is the default's), recording every epoch's validation score and
judged (averaged) parameters, then replays two stopping rules on the same trajectories with the
default patience and tolerance:

* ``own``: each member stops on its own score (today's rule): the fit runs the slower member's
  epochs; each member keeps its own best epoch;
* ``ensemble``: both stop on the score of their mean outputs on the validation rows (what the
  fitted ensemble predicts): the fit runs that rule's epochs; both keep its best epoch.

and prints, per seed and on average, the epochs each rule runs and the test RMSE (regression)
or accuracy (classification) of the ensemble it keeps. ``own`` reproduces a default fit's
``member_n_iter_`` exactly (checked against one). In-process cluster, the benchmark's splits::

    PYTHONPATH=. python benchmarks/probe_member_stopping.py hotel_rates --seeds 12
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def replay(scores: list[float], tol: float, patience: int) -> tuple[int, int]:
    """``(epochs run, best epoch)`` of the estimators' rule
    (:class:`pipeline.train.stopping.StoppingRule` with early stopping) on these per-epoch
    scores; each epoch's "parameters" are its index, so the best ones name the best epoch."""
    from pipeline.train.stopping import Progress, StoppingRule

    rule, p = StoppingRule(tol=tol, n_iter_no_change=patience, early_stopping=True), Progress()
    for e, s in enumerate(scores):
        p = rule.update(p, loss=0.0, score=s, params=np.array([e]), samples_seen=0)
        if p.stopped:
            return e + 1, int(p.best_params[0])
    return len(scores), int(p.best_params[0])


_LOCAL = threading.local()
RECORDS: dict[int, dict] = {}
EPOCHS = [35]
_ORIGINAL: dict[str, object] = {}


def recording_fused(block, valid_blocks, params, local_state, model, *rest):
    """``fused_epochs`` noting which member runs in this thread (its seed) and its validation
    block. Module-level, imported by name: the in-process workers run it from this module."""
    seed = rest[12]  # (optimizer, alpha, n_rows, steps, rule, progress, ..., t, seed, ...)
    _LOCAL.seed = seed
    RECORDS[seed] = {"valid": valid_blocks[0], "model": model, "scores": [], "params": []}
    return _ORIGINAL["fused"](block, valid_blocks, params, local_state, model, *rest)


def recording_update(self, p, *, loss, score, params, samples_seen):
    """``StoppingRule.update`` recording the score and the judged parameters, never stopping
    before ``EPOCHS[0]`` epochs (its decisions are replayed later)."""
    rec = RECORDS[_LOCAL.seed]
    rec["scores"].append(float(score))
    rec["params"].append(np.array(params, copy=True))
    out = _ORIGINAL["update"](self, p, loss=loss, score=score, params=params,
                              samples_seen=samples_seen)
    return out._replace(stopped=len(rec["scores"]) >= EPOCHS[0], no_improvement_count=0)


def _outputs(model, p, data):
    return np.asarray(model.forward(p.astype(np.float32), data), dtype=np.float64)


def _test_metric(model, est, params, Xt, yte, classification):
    """The test metric of the ensemble of ``params`` (each member's flat parameters)."""
    from sklearn.metrics import accuracy_score

    out = np.mean([_outputs(model, p, Xt) for p in params], axis=0)
    if classification:
        idx = out.argmax(axis=1) if out.shape[1] > 1 else (out[:, 0] > 0.5)
        return accuracy_score(yte, est.classes_[np.asarray(idx, int)])
    pred = out[:, 0] * est.target_scale_ + est.target_mean_
    return float(np.sqrt(np.mean((np.asarray(yte, float) - pred) ** 2)))


def _ensemble_score(model, params, valid, scoring):
    """The rule's validation score of the members' mean output on the validation block, as
    :func:`pipeline.train.members.ensemble_score` computes it from the members' outputs."""
    from pipeline.nn.ensemble import member_mean
    from pipeline.train.scores import fold_scores, outputs_score, score_value

    X, Y = valid.X, valid.Y
    out = member_mean(model.forward(p, X) for p in params)
    return score_value(fold_scores([[(0, outputs_score(out, Y, model.loss))]], 8), model.loss,
                       scoring)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=35)
    args = ap.parse_args()

    import probe_member_stopping as this  # the recorders by reference (see above)
    from bench_quality import _dataset
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    import pipeline as pl
    import pipeline.train.fused as fused
    from pipeline.train.stopping import StoppingRule

    this.EPOCHS[0] = args.epochs
    this._ORIGINAL.update(fused=fused.fused_epochs, update=StoppingRule.update)
    X, y, task = _dataset(args.dataset)
    classification = task == "classification"
    Est = pl.TabularClassifier if classification else pl.TabularRegressor
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        warnings.simplefilter("ignore")
        for seed in range(args.seeds):
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=seed,
                                                  stratify=y if classification else None)
            reference = Est(random_state=seed).fit(Xtr, ytr)  # the default fit, as it stops
            this.RECORDS.clear()
            fused.fused_epochs, StoppingRule.update = this.recording_fused, this.recording_update
            try:
                est = Est(random_state=seed).fit(Xtr, ytr)
            finally:
                fused.fused_epochs = this._ORIGINAL["fused"]
                StoppingRule.update = this._ORIGINAL["update"]
            tol, patience = float(est.tol), int(est.n_iter_no_change)
            members = list(this.RECORDS.values())
            model = members[0]["model"]
            Xt = np.asarray(est.preprocessor_.transform(Xte), dtype=np.float32)
            own = [replay(m["scores"], tol, patience) for m in members]
            own_metric = _test_metric(model, est, [m["params"][b] for m, (_, b) in
                                                   zip(members, own, strict=True)],
                                      Xt, yte, classification)
            n = min(len(m["scores"]) for m in members)
            ens_scores = [_ensemble_score(model, [m["params"][e] for m in members],
                                          members[0]["valid"], est._validation_scoring)
                          for e in range(n)]
            ens_epochs, ens_best = replay(ens_scores, tol, patience)
            ens_metric = _test_metric(model, est, [m["params"][ens_best] for m in members],
                                      Xt, yte, classification)
            row = {"seed": seed, "reference_epochs": list(reference.member_n_iter_),
                   "own_epochs": [e for e, _ in own], "fit_epochs_own": max(e for e, _ in own),
                   "metric_own": round(own_metric, 4), "fit_epochs_ensemble": ens_epochs,
                   "metric_ensemble": round(ens_metric, 4)}
            rows.append(row)
            print(row, flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in
            ("fit_epochs_own", "metric_own", "fit_epochs_ensemble", "metric_ensemble")}
    same = all(sorted(r["reference_epochs"]) == sorted(r["own_epochs"]) for r in rows)
    print(f"{args.dataset}, {args.seeds} seeds: own rule {mean['fit_epochs_own']:.2f} epochs, "
          f"metric {mean['metric_own']:.4f}; ensemble rule {mean['fit_epochs_ensemble']:.2f} "
          f"epochs, metric {mean['metric_ensemble']:.4f}; own rule reproduces the default "
          f"fits' member epochs: {same}")


if __name__ == "__main__":
    main()
