"""How much of a tabular step's AdamW update is NumPy dispatch: the library's update (``optim``'s
``update_into`` on a workspace, as a member's step runs it) against the same arithmetic in one
compiled loop (numba, installed here through dask-ml; not a dependency of the library), on a
hotel_rates member's 65,234 float32 parameters with its weight mask. Prints microseconds per
update (best of 7 runs of 2,000) and numba's import and first-compile seconds::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/probe_fused_adamw.py [--fastmath]

An exploration for ``where_time_goes.md`` (session 14), not a proposed kernel: the loop does
not reproduce the library's bits (its operations fuse and round differently).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import numpy as np

from pipeline import optim
from pipeline.nn.workspace import Workspace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_microseconds

N = 65_234
FASTMATH = "--fastmath" in sys.argv


def _best(fn) -> float:
    return best_microseconds(fn, n=2000, repeat=7)


def main() -> None:
    rng = np.random.default_rng(0)
    params = rng.standard_normal(N).astype(np.float32)
    grad = (rng.standard_normal(N) * 1e-2).astype(np.float32)
    mask = rng.random(N) < 0.98
    opt = optim.from_sklearn("adamw", learning_rate_init=2e-3, learning_rate="cosine",
                             weight_decay=1e-4, clip_norm=1.0, warmup_steps=10,
                             total_steps=10_000, weight_mask=mask)
    state = opt.init(params)
    ws = Workspace()

    def library() -> None:
        nonlocal state
        _, state = opt.update_into(grad, state, params, ws)

    t_lib = _best(library)

    t0 = time.perf_counter()
    import numba

    t_import = time.perf_counter() - t0

    @numba.njit(cache=False, fastmath=FASTMATH)
    def fused(g, p, mu, nu, m, lr, b1, b2, eps, wd, clip, t):  # pragma: no cover
        s = np.float32(0.0)
        for i in range(g.size):
            s += g[i] * g[i]
        norm = math.sqrt(s)
        scale = np.float32(clip / norm) if norm >= clip else np.float32(1.0)
        c1 = 1.0 - b1 ** t
        c2 = math.sqrt(1.0 - b2 ** t)
        for i in range(g.size):
            gi = g[i] * scale
            mu[i] = b1 * mu[i] + (1 - b1) * gi
            nu[i] = b2 * nu[i] + (1 - b2) * gi * gi
            d = (mu[i] / c1) / (math.sqrt(nu[i]) / c2 + eps)
            if m[i]:
                d += wd * p[i]
            p[i] -= lr * d

    mu, nu, p = np.zeros_like(params), np.zeros_like(params), params.copy()
    args = (grad, p, mu, nu, mask, np.float32(2e-3), np.float32(0.9), np.float32(0.999),
            np.float32(1e-8), np.float32(1e-4), np.float32(1.0), 10)
    t0 = time.perf_counter()
    fused(*args)
    t_compile = time.perf_counter() - t0
    t_fused = _best(lambda: fused(*args))
    cold = subprocess.run([sys.executable, "-c", "import time; t=time.perf_counter(); "
                           "import numba; print(time.perf_counter()-t)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    print(f"library update_into: {t_lib:.1f} us an update ({N} float32 parameters)")
    print(f"one numba loop:      {t_fused:.1f} us an update")
    print(f"numba import {t_import:.2f} s in this process (cold process: {float(cold):.2f} s); "
          f"first call (compile) {t_compile:.2f} s")


if __name__ == "__main__":
    main()
