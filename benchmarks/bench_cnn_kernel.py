"""Forward + backward throughput of a small CNN on one core: our layers vs PyTorch CPU, 1 thread.

Network (both sides): Conv2D 32 3×3 "same" → ReLU → MaxPool 2 → Conv2D 64 3×3 "same" →
ReLU → MaxPool 2 → Flatten → Dense 128 → ReLU → Dense 10, softmax cross-entropy summed,
on 28×28×1 float32 images (random normal pixels, random labels), batch 64 and 128. One step is
the forward pass, the loss and the gradients of all parameters (no optimizer update); ours is
the network ``pl.ImageClassifier`` builds (``pipeline.image_estimator.default_layers`` + the
output layer), called as the trainer calls it (``loss_and_grad`` with a reused workspace, one
flat gradient buffer). PyTorch runs with ``torch.set_num_threads(1)``; our process uses one BLAS
thread.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from common import fmt, main, median, other_cpu_now, section, spread, table, target

from pipeline.nn import Context, Dense, Workspace

BATCHES = (64, 128)


def _ours(batch: int) -> Any:
    """One forward + backward step of our network, as a closure: the trainer's own call
    (``loss_and_grad`` with a reused workspace, gradients in one flat buffer)."""
    from pipeline.image_estimator import ImageNetwork, default_layers

    net = ImageNetwork([*default_layers(), Dense(10)], loss="log_loss", in_shape=(28, 28, 1))
    rng = np.random.default_rng(0)
    flat = net.init_params(0)
    X = rng.normal(size=(batch, 28, 28, 1)).astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    ctx = Context(training=True, key=(0, 0, 0, 0), workspace=Workspace(), need_input_grad=False)

    def step() -> None:
        net.loss_and_grad(flat, X, Y, ctx=ctx)

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
