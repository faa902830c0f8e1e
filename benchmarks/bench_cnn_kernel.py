"""Forward + backward throughput of a small CNN on one core: our layers vs PyTorch CPU, 1 thread.

Network (both sides): Conv2D 32 3×3 "same" → ReLU → MaxPool 2 → Conv2D 64 3×3 "same" →
ReLU → MaxPool 2 → Flatten → Dense 128 → ReLU → Dense 10, softmax cross-entropy summed,
on 28×28×1 float32 images (random normal pixels, random labels), batch 64 and 128. One step is
the forward pass, the loss and the gradients of all parameters (no optimizer update); ours
writes them into one flat gradient buffer as the trainer does. PyTorch runs with
``torch.set_num_threads(1)``; our process uses one BLAS thread.

Dense and ReLU here are stand-ins with the layer-library interface until ``pipeline.nn`` lands.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from common import fmt, main, median, other_cpu_now, section, spread, table, target

from pipeline.nn import Context, Conv2D, Flatten, MaxPool2D

BATCHES = (64, 128)


class _Dense:  # stand-in for pipeline.nn's Dense
    def __init__(self, units: int):
        self.units = units

    def build(self, in_shape):
        return [(in_shape[0], self.units), (self.units,)], (self.units,)

    def init(self, rng, in_shape):
        bound = np.sqrt(6.0 / (in_shape[0] + self.units))
        return [rng.uniform(-bound, bound, (in_shape[0], self.units)), np.zeros(self.units)]

    def forward(self, params, x, ctx):
        return x @ params[0] + params[1], x

    def backward(self, params, x, dy, ctx, grads):
        np.matmul(x.T, dy, out=grads[0])
        np.sum(dy, axis=0, out=grads[1])
        return dy @ params[0].T if ctx.need_input_grad else None


class _ReLU:  # stand-in for pipeline.nn's ReLU
    def build(self, in_shape):
        return [], in_shape

    def init(self, rng, in_shape):
        return []

    def forward(self, params, x, ctx):
        y = np.maximum(x, 0.0)
        return y, y

    def backward(self, params, y, dy, ctx, grads):
        return dy * (y > 0)


def _ours(batch: int) -> Any:
    """One forward + backward step of our network, as a closure."""
    layers = [Conv2D(32, 3), _ReLU(), MaxPool2D(2), Conv2D(64, 3), _ReLU(), MaxPool2D(2),
              Flatten(), _Dense(128), _ReLU(), _Dense(10)]
    rng = np.random.default_rng(0)
    shape: tuple[int, ...] = (28, 28, 1)
    shapes, host = [], []
    for layer in layers:
        s, out = layer.build(shape)
        shapes.append(s)
        host.append(layer.init(rng, shape))
        shape = out
    flat = np.concatenate([a.ravel() for ps in host for a in ps]).astype(np.float32)
    gflat = np.zeros_like(flat)

    def views(buf: np.ndarray) -> list[list[np.ndarray]]:
        out, at = [], 0
        for s in shapes:
            vs = []
            for shp in s:
                size = int(np.prod(shp))
                vs.append(buf[at : at + size].reshape(shp))
                at += size
            out.append(vs)
        return out

    params, grads = views(flat), views(gflat)
    X = rng.normal(size=(batch, 28, 28, 1)).astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]

    def step() -> None:
        h, caches = X, []
        for layer, p in zip(layers, params, strict=True):
            h, c = layer.forward(p, h, Context(training=True))
            caches.append(c)
        e = np.exp(h - h.max(axis=1, keepdims=True))
        dy = e / e.sum(axis=1, keepdims=True) - Y
        for i in range(len(layers) - 1, -1, -1):
            ctx = Context(training=True, need_input_grad=i > 0)
            dy = layers[i].backward(params[i], caches[i], dy, ctx, grads[i])

    return step


def _torch(batch: int) -> Any:
    """One forward + backward step of the PyTorch network, as a closure."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(7 * 7 * 64, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )
    X = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")

    def step() -> None:
        net.zero_grad(set_to_none=False)
        loss_fn(net(X), y).backward()

    return step


def _rates(step: Any, batch: int, n: int) -> list[float]:
    """Samples/s of each of ``n`` timed steps."""
    rates = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        rates.append(batch / (time.perf_counter() - t0))
    return rates


def run(quick: bool) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    # One BLAS thread, whatever imported NumPy first (common.py's environment variables only
    # act if they are set before NumPy loads OpenBLAS).
    with threadpool_limits(limits=1):
        return _run(quick)


def _run(quick: bool) -> dict[str, Any]:
    rounds = 4 if quick else 10
    busy = other_cpu_now(1.0)
    rows, ratios = [], []
    for batch in BATCHES:
        steps = {"ours": _ours(batch), "torch": _torch(batch)}
        for step in steps.values():  # warm-up: first-touch memory, BLAS and oneDNN set-up
            for _ in range(3):
                step()
        # Interleave the two sides, a few steps at a time, so that load from other processes
        # hits both alike.
        ours, theirs = [], []
        for _ in range(rounds):
            ours += _rates(steps["ours"], batch, 3)
            theirs += _rates(steps["torch"], batch, 3)
        ratio = median(ours) / median(theirs)
        ratios.append(ratio)
        rows.append([batch, fmt(median(ours)), spread(ours), fmt(median(theirs)), spread(theirs),
                     fmt(ratio)])
    worst = min(ratios)
    return section(
        "Small CNN kernel: forward + backward per core vs PyTorch",
        "python benchmarks/bench_cnn_kernel.py" + (" --quick" if quick else ""),
        tables=[table(["batch", "ours samples/s", "spread", "PyTorch samples/s", "spread",
                       "ratio"], rows, "median of per-step rates")],
        targets=[target("ours ≥ 0.5× PyTorch CPU (1 thread), per worker",
                        f"{fmt(worst)}× (worst batch)", worst >= 0.5)],
        notes=[__doc__.strip().splitlines()[0],
               f"other processes used {fmt(busy)} cores meanwhile (2-core machine)"],
    )


if __name__ == "__main__":
    main(run)
