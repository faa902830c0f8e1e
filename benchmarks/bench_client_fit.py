"""``MLPClassifier.fit`` on 2 workers from data that starts on the client, against PyTorch CPU
with 2 threads on the same rows and epochs (issue 9, second target).

The user's path, with the README's settings: ``pipeline.connect()`` (a LocalCluster of 2
nanny-started workers, one thread each), the rows created on the client as NumPy arrays,
``da.from_array`` (8 partitions) → ``client.persist`` → ``MLPClassifier(hidden_layer_sizes=(64,
64), solver="adam", batch_size=256, sync="average", max_iter=E).fit`` with every other parameter
at its default. The fit's wall time includes building the blocks.

PyTorch: one process (this one), ``torch.set_num_threads(2)``, the same 20→64→64→1 ReLU network,
Adam (lr 1e-3), batch 256, a fresh permutation per epoch (rows gathered by index, no DataLoader),
``BCEWithLogitsLoss``; no L2 penalty (scikit-learn's ``alpha=1e-4`` per batch of 256 is a weight
decay of 4e-7, below what moves these accuracies). Both are scored on the same 100,000 test rows.
Fits and PyTorch runs alternate; medians.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
from common import (
    HIDDEN,
    N_FEATURES,
    classification_data,
    fmt,
    local_cluster,
    log,
    main,
    median,
    section,
    spread,
    table,
    target,
)

COMMAND = "python benchmarks/run_all.py --only client_fit"
ROWS, PARTITIONS, BATCH, LR = 400_000, 8, 256, 1e-3


def torch_fit(X: np.ndarray, y: np.ndarray, epochs: int, seed: int, threads: int = 2,
              deadline: float = math.inf) -> tuple[Any, int]:
    """PyTorch, ``epochs`` shuffled epochs of Adam at batch :data:`BATCH`; returns the model and
    the rows it trained on. Stops after ``deadline`` seconds (2-thread PyTorch collapses when
    another process keeps a core busy: TECH_NOTES), so the run says how far it got."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, HIDDEN[0]), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN[0], HIDDEN[1]), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN[1], 1),
    )
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    Xt = torch.from_numpy(X)
    Yt = torch.from_numpy(y.astype(np.float32).reshape(-1, 1))
    gen = torch.Generator().manual_seed(seed)
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        order = torch.randperm(Xt.shape[0], generator=gen)
        for lo in range(0, Xt.shape[0], BATCH):
            idx = order[lo:lo + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xt[idx]), Yt[idx])
            loss.backward()
            opt.step()
            seen += idx.shape[0]
            if time.perf_counter() - start > deadline:
                return model, seen
    return model, seen


def torch_accuracy(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        p = torch.sigmoid(model(torch.from_numpy(X))).numpy().reshape(-1)
    return float(np.mean((p > 0.5) == (y == 1)))


def run(quick: bool) -> dict[str, Any]:
    import dask.array as da
    from distributed import wait

    from pipeline.estimators import MLPClassifier

    epochs = 2 if quick else 3
    reps = 2 if quick else 3
    X, y = classification_data(ROWS, seed=0)  # created on the client
    Xte, yte = classification_data(100_000, seed=1)
    ours: dict[str, list[float]] = {"wall": [], "epoch_s": [], "acc": [], "blocks": []}
    torch_runs: dict[str, list[float]] = {"wall": [], "acc": [], "rows": []}
    torch1: dict[str, list[float]] = {"wall": [], "acc": [], "rows": []}  # for reference
    deadline = 120.0 if quick else 1200.0
    with local_cluster(2) as client, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a fixed number of epochs
        Xd = da.from_array(X, chunks=(ROWS // PARTITIONS, N_FEATURES))
        yd = da.from_array(y, chunks=(ROWS // PARTITIONS,))
        Xd, yd = client.persist([Xd, yd])
        wait([Xd, yd])
        MLPClassifier(HIDDEN, batch_size=BATCH, max_iter=1, sync="average",
                      random_state=0).fit(Xd[:20_000], yd[:20_000])  # warm-up: imports
        torch_fit(X[:20_000], y[:20_000], 1, 0, deadline=10.0)  # warm-up: thread pool
        for r in range(reps):
            clf = MLPClassifier(HIDDEN, solver="adam", batch_size=BATCH, max_iter=epochs,
                                sync="average", learning_rate_init=LR, random_state=r)
            t0 = time.perf_counter()
            clf.fit(Xd, yd)
            ours["wall"].append(time.perf_counter() - t0)
            ours["epoch_s"].append(sum(e["seconds"] for e in clf.history_))
            ours["acc"].append(float(np.mean(clf.predict(Xte) == yte)))
            ours["blocks"].append(clf.train_summary_["n_partitions"])
            t0 = time.perf_counter()
            model, seen = torch_fit(X, y, epochs, r, deadline=deadline)
            torch_runs["wall"].append(time.perf_counter() - t0)
            torch_runs["rows"].append(seen)
            t0 = time.perf_counter()
            model, seen = torch_fit(X, y, epochs, r, threads=1, deadline=deadline)
            torch1["wall"].append(time.perf_counter() - t0)
            torch1["rows"].append(seen)
            torch1["acc"].append(torch_accuracy(model, Xte, yte))
            torch_runs["acc"].append(torch_accuracy(model, Xte, yte))
            log(f"client_fit rep {r}: ours {ours['wall'][-1]:.1f} s (epochs "
                f"{ours['epoch_s'][-1]:.1f} s), acc {ours['acc'][-1]:.4f}; PyTorch 2 threads "
                f"{torch_runs['wall'][-1]:.1f} s, acc {torch_runs['acc'][-1]:.4f}")
    samples = ROWS * epochs
    torch_sps = [n / w for n, w in zip(torch_runs["rows"], torch_runs["wall"], strict=True)]
    torch1_sps = [n / w for n, w in zip(torch1["rows"], torch1["wall"], strict=True)]
    rows = [
        ["ours: MLPClassifier.fit, sync=\"average\", 2 workers (wall, blocks included)",
         median(ours["wall"]), spread(ours["wall"]), samples / median(ours["wall"]),
         f"{median(ours['acc']):.4f}"],
        ["  same, training epochs only (history_ seconds)", median(ours["epoch_s"]),
         spread(ours["epoch_s"]), samples / median(ours["epoch_s"]), "-"],
        ["PyTorch CPU, 2 threads, one process" + (
            "" if min(torch_runs["rows"]) == samples else
            f" (stopped at {deadline:.0f} s: {min(torch_runs['rows']):,} of {samples:,} samples)"),
         median(torch_runs["wall"]), spread(torch_runs["wall"]), median(torch_sps),
         f"{median(torch_runs['acc']):.4f}"],
        ["  (for reference) PyTorch CPU, 1 thread" + (
            "" if min(torch1["rows"]) == samples else
            f" (stopped at {deadline:.0f} s: {min(torch1['rows']):,} of {samples:,} samples)"),
         median(torch1["wall"]), spread(torch1["wall"]), median(torch1_sps),
         f"{median(torch1['acc']):.4f}"],
    ]
    t = table(["run", "seconds (median)", "min–max", "samples/s", "test accuracy"], rows,
              f"{ROWS:,} × {N_FEATURES} float32 rows created on the client, {PARTITIONS} "
              f"partitions ({median(ours['blocks']):.0f} training blocks), batch {BATCH}, "
              f"{epochs} epochs, MLP {HIDDEN}, Adam lr {LR}; {reps} runs each, alternating; "
              "100,000 test rows.")
    # samples/s ratios (equal to the wall-time ratio when PyTorch finished its epochs)
    ratio = samples / median(ours["wall"]) / median(torch_sps)
    ratio_epochs = samples / median(ours["epoch_s"]) / median(torch_sps)
    dacc = median(ours["acc"]) - median(torch_runs["acc"])
    targets = [
        target("fit on 2 workers from client data ≥ 2× PyTorch CPU 2 threads (same rows and "
               "epochs, batch 256; fit wall time with building the blocks)",
               f"{ratio:.2f}× ({ratio_epochs:.2f}× counting the epochs only); test accuracy "
               f"{median(ours['acc']):.4f} vs {median(torch_runs['acc']):.4f} ({dacc:+.4f})",
               ratio >= 2.0),
    ]
    log(f"client_fit: {ratio:.2f}× PyTorch ({fmt(samples / median(ours['wall']))} vs "
        f"{fmt(median(torch_sps))} samples/s)")
    return section("fit from client data vs PyTorch", COMMAND + (" --quick" if quick else ""),
                   tables=[t], targets=targets,
                   notes=["PyTorch with 2 threads slows down many times over when another "
                          "process keeps a core busy (its threads wait for each other); "
                          "compare the 1-thread row, and the other processes' CPU above."],
                   raw={"ours": ours, "torch": torch_runs, "torch_1_thread": torch1,
                        "epochs": epochs, "rows": ROWS})


if __name__ == "__main__":
    main(run)
