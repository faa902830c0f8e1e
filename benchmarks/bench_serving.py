"""Batch scoring: NumPy ``predict_proba`` against onnxruntime fp32 and int8, on the demo model.

The demo model (``pipeline demo``'s classifier: 28 features → 64 → 64 → 1, relu, float32) is
trained on the demo data on a one-worker cluster, exported with ``export_onnx`` twice (with the
preprocessor: raw columns in; without: the 28 features in) and each export quantized to int8.

The int8 graph is :func:`pipeline.export.quantize_int8`'s: int8 weights per output channel,
float activations (``DequantizeLinear`` -> ``Gemm``).

Latency per call at 1, 64 and 10,000 rows, in this process, one thread everywhere (OpenBLAS with
``OPENBLAS_NUM_THREADS=1``; ``InferenceSession`` with ``intra_op_num_threads=1``, sequential,
``ORT_ENABLE_ALL``), so neither runtime gets more cores than the other. The scorers are timed in
interleaved rounds (each round times each scorer once) and the NumPy/onnxruntime throughput
ratio is the median of the per-round ratios, in wall time and in CPU time:

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
import re
import shutil
import tempfile
import time
import warnings
from typing import Any

import numpy as np
from common import log, main, median, section, table, target

COMMAND = "python benchmarks/bench_serving.py [--quick]"
BATCHES = (1, 64, 10_000)
WIDE = (256, 256)  # a wider network, for the sizes only


def _train(n_rows: int, epochs: int, hidden: tuple[int, ...] = (64, 64)) -> tuple[Any, Any, float]:
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
        model = pl.MLPClassifier(hidden_layer_sizes=hidden, max_iter=epochs,
                                 batch_size=1024, random_state=0, sync="average")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(*prep.transform_xy(train))
    return model, prep, time.perf_counter() - t0


ROUNDS = 7


def _interleaved(cases: dict[str, Any], budget: float) -> dict[str, list[tuple[float, float]]]:
    """Per case, ``ROUNDS`` measurements ``(wall s, CPU s)`` per call, about ``budget`` seconds
    in all. Each round times every case once, one after the other, so that a burst of
    load from the rest of the machine hits all cases of a round alike; ratios are then taken
    round by round (:func:`_paired_ratio`)."""
    inner = {}
    for name, fn in cases.items():
        fn()  # warm-up: first-run allocations, lazy initialisation
        t0 = time.perf_counter()
        fn()
        inner[name] = max(1, int(budget / ROUNDS / max(time.perf_counter() - t0, 1e-7)))
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            n = inner[name]
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                fn()
            out[name].append(((time.perf_counter() - t0) / n, (time.process_time() - c0) / n))
    return out


def _paired_ratio(runs: dict[str, list[tuple[float, float]]], slow: str, fast: str,
                  cpu: bool = False) -> float:
    """Median over rounds of ``slow / fast`` time per call (wall, or CPU with ``cpu``)."""
    k = 1 if cpu else 0
    return median([a[k] / b[k] for a, b in zip(runs[slow], runs[fast], strict=True)])


def _weight_bytes(path: str) -> int:
    """Bytes of the network's parameter tensors in an exported file: the fp32 ``W``/``b``, or
    the int8 ``W`` with its per-channel scales and the biases (float16 or float32)."""
    import onnx
    from onnx import numpy_helper

    # fp32 W/b: pl/W<i>_<n>, pl/b<i>_<n>; int8: pl/q<i> (W), pl/s<i> (scales), pl/c<i> (biases)
    network = re.compile(r"pl/[Wb]\d+_\d+|pl/[qsc]\d+")
    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(path).graph.initializer
               if network.fullmatch(t.name))


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
    # What pipeline.export.session uses (onnxruntime's defaults, spelled out): one intra-op
    # thread, sequential execution, every graph optimization (Gemm + activation fusion).
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
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
    cpu: dict[tuple[str, int], float] = {}
    ratios: dict[int, tuple[float, float]] = {}
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
        runs = _interleaved(cases, budget)
        for name, r in runs.items():
            lat[name, b] = median([w for w, _ in r])
            cpu[name, b] = median([c for _, c in r])
        ratios[b] = (_paired_ratio(runs, "numpy predict_proba", "onnxruntime fp32, features"),
                     _paired_ratio(runs, "numpy predict_proba", "onnxruntime fp32, features",
                                   cpu=True))
    for name in dict.fromkeys(n for n, _ in lat):
        rows.append([name, *[lat[name, b] * 1e3 for b in BATCHES],
                     *[b / lat[name, b] for b in BATCHES]])
    timing = table(["scorer", *[f"ms/call @{b:,}" for b in BATCHES],
                    *[f"rows/s @{b:,}" for b in BATCHES]], rows,
                   f"Latency (median ms per call over {ROUNDS} interleaved rounds) and "
                   "throughput (rows/s), one thread each.")
    cpu_rows = [[name, *[cpu[name, b] * 1e3 for b in BATCHES]]
                for name in dict.fromkeys(n for n, _ in cpu)]
    cpu_rows.append(["numpy / onnxruntime fp32 features, paired wall (CPU)",
                     *[f"{ratios[b][0]:.2f}× ({ratios[b][1]:.2f}×)" for b in BATCHES]])
    cpu_table = table(["scorer", *[f"CPU ms/call @{b:,}" for b in BATCHES]], cpu_rows,
                      "CPU time of this process per call (median over rounds): the per-core "
                      "cost, less sensitive than wall time to the process being descheduled. "
                      "Last row: median over rounds of the per-round ratio.")

    # The same sizes for a wider network (one epoch is enough to measure sizes): the fixed
    # bytes (graph, names, metadata, preprocessing) weigh less next to 4x the weights.
    wide, wide_prep, _ = _train(n_train, 1, hidden=WIDE)
    for graph, p in (("raw columns", wide_prep), ("features", None)):
        for q in (None, "int8"):
            path = os.path.join(tmp, f"wide-{graph[:3]}-{q or 'fp32'}.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                reports[f"{graph}, {' → '.join(map(str, WIDE))}", q] = export_onnx(
                    wide, path, preprocessor=p, quantize=q,
                    validation=(test if p else wide_prep.transform(test).to_numpy(np.float32), y),
                    max_accuracy_drop=0.003, on_drop="warn")

    numpy_acc = float(np.mean(model.predict(X) == y))
    wide_acc = float(np.mean(wide.predict(wide_prep.transform(test).to_numpy(np.float32)) == y))
    size_rows, acc_rows = [], []
    for graph in dict.fromkeys(g for g, _ in reports):
        r32, r8 = reports[graph, None], reports[graph, "int8"]
        w32, w8 = _weight_bytes(r32.path), _weight_bytes(r8.path)
        size_rows.append([graph, r32.fp32_bytes, r8.int8_bytes, r8.size_ratio, w32, w8,
                          w32 / w8])
        ref = numpy_acc if graph in ("raw columns", "features") else wide_acc
        acc_rows.append([graph, r32.fp32_score, r8.int8_score,
                         100 * (r32.fp32_score - ref), 100 * r8.drop])
    sizes = table(["graph", "fp32 file bytes", "int8 file bytes", "fp32/int8",
                   "fp32 weight bytes", "int8 weight bytes", "fp32/int8 weights"], size_rows,
                  "ONNX sizes: whole files, and the network's parameter tensors alone (int8: "
                  "the int8 W, float16 per-channel scales and biases); the rest is graph, "
                  "names, metadata and the preprocessing part, about the same bytes in both "
                  "files.")
    accs = table(["graph", "fp32 accuracy", "int8 accuracy", "fp32 − numpy (points)",
                  "fp32 − int8 (points)"], acc_rows,
                 f"Accuracy on {len(y):,} held-out demo rows; numpy predict: {numpy_acc:.4f} "
                 f"({' → '.join(map(str, WIDE))}: {wide_acc:.4f}).")

    shutil.rmtree(tmp, ignore_errors=True)
    r8 = reports["raw columns", "int8"]
    one = lat["onnxruntime fp32, raw columns", 1] * 1e3
    speedup, speedup_cpu = ratios[10_000]
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
               f"{speedup:.2f}× (wall, paired rounds); {speedup_cpu:.2f}× in CPU time",
               speedup >= 3.0),
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
                   tables=[timing, cpu_table, sizes, accs], targets=targets, notes=notes,
                   raw={"latency_s": {f"{k[0]}@{k[1]}": v for k, v in lat.items()},
                        "cpu_s": {f"{k[0]}@{k[1]}": v for k, v in cpu.items()},
                        "numpy_over_ort_fp32": {str(b): list(r) for b, r in ratios.items()}})


if __name__ == "__main__":
    main(run)
