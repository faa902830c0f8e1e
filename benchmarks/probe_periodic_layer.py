"""The periodic embedding of hotel_rates' numeric features, one forward and backward at a
member's batch (346 rows), in-process, three ways: one ``Periodic`` layer per frequency count
side by side in a ``ColumnSplit`` (the network until session 17), one layer of every count
with the per-count output order (``order="groups"``, kept for the models saved before), and one
layer with every sine, then every cosine (``order="halves"``, the default). Prints the median
microseconds of a forward and of a backward (best of 5 runs of 2,000)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/probe_periodic_layer.py
"""

from __future__ import annotations

import os
import sys

import numpy as np

from pipeline.nn import ColumnSplit, Periodic
from pipeline.nn.layers import make_context
from pipeline.nn.workspace import Workspace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_microseconds

# hotel_rates' numeric features by frequency count (tabular_net.periodic_frequencies of their
# numbers of values), most first, as build_network groups them
COUNTS = (8,) * 6 + (7,) + (5,) + (3,) * 4 + (2,) * 2
ROWS = 346


def _time(layer, f: int) -> tuple[float, float]:
    shapes, out = layer.build((f,))
    rng = np.random.default_rng(0)
    params = [rng.normal(0.0, 0.1, s).astype(np.float32) for s in shapes]
    grads = [np.empty_like(p) for p in params]
    x = rng.standard_normal((ROWS, f)).astype(np.float32)
    dy = rng.standard_normal((ROWS, out[0])).astype(np.float32)
    ctx = make_context(True, (0,), Workspace(), False)
    _, cache = layer.forward(params, x, ctx)
    return (best_microseconds(lambda: layer.forward(params, x, ctx)),
            best_microseconds(lambda: layer.backward(params, cache, dy, ctx, grads)))


def main() -> None:
    f = len(COUNTS)
    per_count, start = [], 0
    for k in sorted(set(COUNTS), reverse=True):
        m = COUNTS.count(k)
        per_count.append((tuple(range(start, start + m)), Periodic(k)))
        start += m
    for name, layer in [("one Periodic per count (ColumnSplit)", ColumnSplit(per_count)),
                        ("one Periodic, order='groups'", Periodic(COUNTS, order="groups")),
                        ("one Periodic, order='halves'", Periodic(COUNTS))]:
        fwd, bwd = _time(layer, f)
        print(f"{name:38s} forward {fwd:6.1f} us  backward {bwd:6.1f} us  "
              f"total {fwd + bwd:6.1f} us")


if __name__ == "__main__":
    main()
