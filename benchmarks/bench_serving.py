"""Batch scoring: NumPy ``predict_proba`` against onnxruntime fp32 and int8, on the demo model.

The demo model (``pipeline demo``'s classifier: 28 features → 64 → 64 → 1, relu, float32) is
trained on the demo data on a one-worker cluster, exported with ``export_onnx`` twice (with the
preprocessor: raw columns in; without: the 28 features in) and each export quantized to int8.

Latency per call at 1, 64 and 10,000 rows, in this process, one thread everywhere (OpenBLAS with
``OPENBLAS_NUM_THREADS=1``; ``InferenceSession`` with ``intra_op_num_threads=1``), so neither
runtime gets more cores than the other:

- ``numpy predict_proba``: ``MLPClassifier.predict_proba`` on a float32 NumPy feature array
  (the package's own forward pass);
- ``onnxruntime fp32/int8, features``: the network-only graph on the same array;
- ``numpy transform + predict_proba``: ``Preprocessor.transform`` of a pandas frame of raw
  columns, then ``predict_proba``;
- ``onnxruntime fp32/int8, raw columns``: the whole graph on prebuilt inputs (the per-column
  arrays are built once, outside the timing, as a server receives them).

Accuracies on held-out demo rows (raw columns, 2% of numeric values missing).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from typing import Any

import numpy as np
from common import log, main, median, section, table, target

COMMAND = "python benchmarks/bench_serving.py [--quick]"
BATCHES = (1, 64, 10_000)


def _train(n_rows: int, epochs: int) -> tuple[Any, Any, float]:
    import pandas as pd
    from distributed import Client, LocalCluster
    from sklearn.exceptions import ConvergenceWarning

    import pipeline as pl
    from pipeline.datasets import make_tabular

    train = pd.concat(make_tabular(n_rows, chunk_rows=50_000), ignore_index=True)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster):
        prep = pl.Preprocessor(label="y", categorical=["city", "segment"]).fit(train)
        model = pl.MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=epochs,
                                 batch_size=1024, random_state=0, sync="average")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(*prep.transform_xy(train))
    return model, prep, time.perf_counter() - t0


def _per_call(fn: Any, budget: float) -> float:
    """Median seconds per call: calls grouped into timed runs of ~budget/5 seconds each."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(budget / 5 / once))
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        runs.append((time.perf_counter() - t0) / inner)
    return median(runs)


def _weight_bytes(path: str) -> int:
    """Bytes of the network's parameter tensors in an exported file: the fp32 ``W``/``b``, or
    the int8 ``W_quantized`` with its scale and zero point and the fp32 ``b``."""
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(path).graph.initializer
               if t.name.startswith(("pl/W", "pl/b")))


def run(quick: bool) -> dict[str, Any]:
    import onnxruntime as ort
    import pandas as pd

    from pipeline.datasets import make_chunk
    from pipeline.export import export_onnx, onnx_feed

    n_train, epochs, budget = (50_000, 3, 0.5) if quick else (200_000, 8, 2.0)
    log(f"training the demo model on {n_train:,} rows, {epochs} epochs")
    model, prep, fit_s = _train(n_train, epochs)
    test = pd.concat([make_chunk(900 + i, 10_000) for i in range(2)], ignore_index=True)
    X = prep.transform(test).to_numpy(dtype=np.float32)
    y = test["y"].to_numpy()

    tmp = tempfile.mkdtemp(prefix="bench-serving-")
    reports, sessions = {}, {}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    for graph, p in (("raw columns", prep), ("features", None)):
        for q in (None, "int8"):
            path = os.path.join(tmp, f"{graph[:3]}-{q or 'fp32'}.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the figures are reported below
                reports[graph, q] = export_onnx(model, path, preprocessor=p, quantize=q,
                                                validation=(test if p else X, y),
                                                max_accuracy_drop=0.003, on_drop="warn")
            sessions[graph, q] = ort.InferenceSession(path, sess_options=opts,
                                                      providers=["CPUExecutionProvider"])

    log("timing")
    rows = []
    lat: dict[tuple[str, int], float] = {}
    for b in BATCHES:
        Xb, raw_b = X[:b], test.iloc[:b]
        feeds = {k: onnx_feed(s, raw_b if k[0] == "raw columns" else Xb)
                 for k, s in sessions.items()}
        cases = {
            "numpy predict_proba": lambda Xb=Xb: model.predict_proba(Xb),
            "onnxruntime fp32, features": lambda f=feeds["features", None]:
                sessions["features", None].run(["probabilities"], f),
            "onnxruntime int8, features": lambda f=feeds["features", "int8"]:
                sessions["features", "int8"].run(["probabilities"], f),
            "numpy transform + predict_proba": lambda raw_b=raw_b:
                model.predict_proba(prep.transform(raw_b)),
            "onnxruntime fp32, raw columns": lambda f=feeds["raw columns", None]:
                sessions["raw columns", None].run(["probabilities"], f),
            "onnxruntime int8, raw columns": lambda f=feeds["raw columns", "int8"]:
                sessions["raw columns", "int8"].run(["probabilities"], f),
        }
        for name, fn in cases.items():
            lat[name, b] = _per_call(fn, budget)
    for name in dict.fromkeys(n for n, _ in lat):
        rows.append([name, *[lat[name, b] * 1e3 for b in BATCHES],
                     *[b / lat[name, b] for b in BATCHES]])
    timing = table(["scorer", *[f"ms/call @{b:,}" for b in BATCHES],
                    *[f"rows/s @{b:,}" for b in BATCHES]], rows,
                   "Latency (median ms per call) and throughput (rows/s), one thread each.")

    numpy_acc = float(np.mean(model.predict(X) == y))
    size_rows, acc_rows = [], []
    for graph in ("raw columns", "features"):
        r32, r8 = reports[graph, None], reports[graph, "int8"]
        w32, w8 = _weight_bytes(r32.path), _weight_bytes(r8.path)
        size_rows.append([graph, r32.fp32_bytes, r8.int8_bytes, r8.size_ratio, w32, w8,
                          w32 / w8])
        acc_rows.append([graph, r32.fp32_score, r8.int8_score,
                         100 * (r32.fp32_score - numpy_acc), 100 * r8.drop])
    sizes = table(["graph", "fp32 file bytes", "int8 file bytes", "fp32/int8",
                   "fp32 weight bytes", "int8 weight bytes", "fp32/int8 weights"], size_rows,
                  "ONNX sizes: whole files, and the network's W and b tensors alone (the rest "
                  "is a fixed ~1-3 KB of graph, names and preprocessing constants).")
    accs = table(["graph", "fp32 accuracy", "int8 accuracy", "fp32 − numpy (points)",
                  "fp32 − int8 (points)"], acc_rows,
                 f"Accuracy on {len(y):,} held-out demo rows; numpy predict: {numpy_acc:.4f}.")

    shutil.rmtree(tmp, ignore_errors=True)
    r8 = reports["raw columns", "int8"]
    one = lat["onnxruntime fp32, raw columns", 1] * 1e3
    speedup = lat["numpy predict_proba", 10_000] / lat["onnxruntime fp32, features", 10_000]
    targets = [
        target("int8 ≥ 3.5× smaller than fp32 (whole graph)", f"{r8.size_ratio:.2f}×",
               r8.size_ratio >= 3.5),
        target("int8 ≥ 3.5× smaller (network-only graph)",
               f"{reports['features', 'int8'].size_ratio:.2f}×",
               reports["features", "int8"].size_ratio >= 3.5),
        target("int8 loses ≤ 0.3 accuracy points", f"{100 * r8.drop:+.2f} points",
               r8.drop <= 0.003),
        target("onnxruntime fp32 single-row latency ≤ 0.2 ms (raw columns)", f"{one:.3f} ms",
               one <= 0.2),
        target("onnxruntime fp32 10,000-row throughput ≥ 3× numpy predict_proba",
               f"{speedup:.2f}×", speedup >= 3.0),
    ]
    notes = [
        f"model: 28 → 64 → 64 → 1 relu float32, trained on {n_train:,} demo rows for "
        f"{epochs} epochs ({fit_s:.0f} s on a 1-worker in-process cluster).",
        "One thread per scorer (OPENBLAS_NUM_THREADS=1, intra_op_num_threads=1): a fair "
        "per-core comparison, not the best either runtime can do with more cores.",
        "The machine is a shared 2-core VM with other jobs running: figures are noisy "
        "(±15% or worse); compare rows of one run, not runs.",
        "Raw-column ONNX timings exclude building the per-column input arrays from a pandas "
        "frame (pipeline.export.onnx_feed), as a server receives arrays; the numpy "
        "transform row includes the pandas preprocessing it needs.",
    ]
    return section("Serving: NumPy vs onnxruntime fp32/int8", COMMAND,
                   tables=[timing, sizes, accs], targets=targets, notes=notes,
                   raw={"latency_s": {f"{k[0]}@{k[1]}": v for k, v in lat.items()}})


if __name__ == "__main__":
    main(run)
