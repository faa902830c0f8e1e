"""What one training step of a captured one-block tabular task costs, in-process (issue 13,
session 15). The task is one pickled by ``profile_tabular_fused.py capture NAME FILE``.

``batch FILE M1,M2,...``: the step (``_local_step``: forward, backward, AdamW) on the block's
first ``M`` rows, 300 times after a warm-up, median of 7 runs of 50: milliseconds a step,
microseconds a row, and the epoch that rate makes of the block's rows.

``layers FILE [M]``: wrapped timers around every layer's forward and backward (and the
optimizer's update, the embedding's code check, gather and scatter) over 300 steps of ``M``
rows (default 346): microseconds a step each. The timers inflate the small calls; compare
parts of one run, not runs.

    MALLOC_TRIM_THRESHOLD_=65536 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. \\
        python benchmarks/probe_step_costs.py layers /tmp/hotel.pkl 346
"""

from __future__ import annotations

import collections
import pickle
import sys
import time

import numpy as np

from pipeline.train.local_steps import _local_step
from pipeline.train.tasks import _like, _step_context, workspace_for


def _task(path: str):
    with open(path, "rb") as f:
        args = pickle.load(f)
    block, params, model, optimizer = args[0], args[2], args[4], args[5]
    return block, params, model, optimizer


def batch(path: str, sizes: list[int]) -> None:
    block, params, model, optimizer = _task(path)
    X, Y = _like(block), block.Y
    for m in sizes:
        ws = workspace_for(1000 + m, X)
        w = params.astype(X.dtype).copy()
        state = optimizer.init(w)
        Xb, Yb = np.ascontiguousarray(X[:m]), np.ascontiguousarray(Y[:m])
        for i in range(20):
            w, state, _ = _local_step(model, optimizer, 0.0, w, state, Xb, Yb, m,
                                      _step_context(ws, 0, 0, 0, i))
        runs = []
        for _ in range(7):
            t0 = time.perf_counter()
            for i in range(50):
                w, state, _ = _local_step(model, optimizer, 0.0, w, state, Xb, Yb, m,
                                          _step_context(ws, 0, 0, 0, i))
            runs.append((time.perf_counter() - t0) / 50)
        t = sorted(runs)[3]
        print(f"m={m:5d}  step {t * 1e3:7.3f} ms  per row {t / m * 1e6:6.2f} us  "
              f"epoch of {X.shape[0]} rows {t * X.shape[0] / m * 1e3:6.1f} ms")


def layers(path: str, m: int) -> None:
    block, params, model, optimizer = _task(path)
    acc: dict[str, float] = collections.defaultdict(float)

    def timed(f, label):
        def g(*a, **k):
            t = time.perf_counter()
            r = f(*a, **k)
            acc[label] += time.perf_counter() - t
            return r
        return g

    def walk(layer, prefix):
        label = prefix + type(layer).__name__
        layer.forward = timed(layer.forward, label + ".forward")
        layer.backward = timed(layer.backward, label + ".backward")
        for i, sub in enumerate(getattr(layer, "_parts", None) or []):
            walk(sub, f"{label}[{i}]/")

    walk(model.body, "")
    import pipeline.nn.embedding as embedding
    for layer in getattr(model.body.layers[0], "_parts", []):
        if isinstance(layer, embedding.Embedding):
            layer._check_codes = timed(layer._check_codes, "embedding code check")
            layer._host_forward = timed(layer._host_forward, "embedding gather")
    embedding._scatter_add = timed(embedding._scatter_add, "embedding scatter-add")
    optimizer = optimizer._replace(update_into=timed(optimizer.update_into, "optimizer"))
    X, Y = _like(block), block.Y
    ws = workspace_for(7, X)
    w = params.astype(X.dtype).copy()
    state = optimizer.init(w)
    Xb, Yb = np.ascontiguousarray(X[:m]), np.ascontiguousarray(Y[:m])
    n = 300
    for _ in range(2):  # the first pass warms the workspace
        acc.clear()
        t0 = time.perf_counter()
        for i in range(n):
            w, state, _ = _local_step(model, optimizer, 0.0, w, state, Xb, Yb, m,
                                      _step_context(ws, 0, 0, 0, i))
        step = (time.perf_counter() - t0) / n
    print(f"{m} rows: step {step * 1e6:.0f} us")
    for k, v in sorted(acc.items()):
        print(f"  {k:52s} {v / n * 1e6:8.1f} us")


if __name__ == "__main__":
    if sys.argv[1] == "batch":
        batch(sys.argv[2], [int(s) for s in sys.argv[3].split(",")])
    elif sys.argv[1] == "layers":
        layers(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 346)
    else:
        raise SystemExit(__doc__)
