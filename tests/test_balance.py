"""Throughput-aware local SGD (balance="throughput"): faster workers take more local steps,
and the rows weighting keeps the average unbiased."""

import threading
import time

import dask.array as da
import numpy as np
import pytest

from pipeline import nn
from pipeline.blocks import Block
from pipeline.train import TrainConfig
from pipeline.train.local_steps import fold_local, partitions_local_steps
from pipeline.train.strategies import Balancer as _Balancer
from pipeline.train.tasks import Rate


def test_balancer_gives_slow_workers_fewer_steps():
    b = _Balancer(4, enabled=True, smoothing=1.0)
    assert b.counts(10) == [10, 10, 10, 10]  # nothing measured yet
    # blocks 0, 1 on a fast worker (1 ms/step each), 2, 3 on one 5x slower
    b.observe([(0, 0.010, "fast", 0.0, 1), (1, 0.010, "fast", 0.0, 1),
               (2, 0.050, "slow", 0.0, 1), (3, 0.050, "slow", 0.0, 1)], [10, 10, 10, 10])
    assert b.counts(10) == [10, 10, 2, 2]
    assert _Balancer(2, enabled=False).counts(7) == [7, 7]


def test_unequal_local_steps_average_is_rows_weighted():
    """Blocks that took different numbers of steps: the fold is Σ rows·Δ / Σ rows exactly."""
    rng = np.random.default_rng(0)
    spec = nn.MLPSpec((3, 4, 1), "tanh", "binary_log_loss")
    params = nn.init_params(spec, 0, dtype=np.float64)
    blocks = [Block(rng.standard_normal((n, 3)), (rng.random((n, 1)) > 0.5).astype(float))
              for n in (40, 80)]
    cfg = TrainConfig(solver="sgd", momentum=0.0, learning_rate_init=0.1, alpha=0.0,
                      shuffle=False)
    steps = 4
    schedules = [tuple((0, s, 30) for s in range(1)), tuple((0, s, 30) for s in range(3))]
    out = fold_local([partitions_local_steps(blocks, [0, 1], params, [None, None], spec,
                                             cfg.inner_optimizer(), cfg.alpha, Rate(0.1), schedules,
                                             steps, cfg.random_state, cfg.shuffle)],
                     split_every=8)
    # serial oracle: plain SGD on each block's rows, weighted by the rows it used
    deltas, rows = [], []
    for block, schedule in zip(blocks, schedules, strict=True):
        w, used = params.copy(), 0
        n = block.X.shape[0]
        for _, s, _ in schedule:
            lo, hi = (s * n) // steps, ((s + 1) * n) // steps
            _, g = nn.loss_and_grad(spec, w, block.X[lo:hi], block.Y[lo:hi])
            w = w - 0.1 * g / (hi - lo)
            used += hi - lo
        deltas.append((w - params) * used)
        rows.append(used)
    assert out.partial.n == sum(rows) == 10 + 60
    np.testing.assert_allclose(out.partial.vector, deltas[0] + deltas[1], rtol=1e-12)


def _hog(seconds):
    """Hold the GIL in a Python loop on this worker: a stand-in for a slower device."""
    def spin():
        end = time.time() + seconds
        while time.time() < end:
            sum(range(2000))

    for _ in range(2):
        threading.Thread(target=spin, daemon=True).start()
    return True


@pytest.mark.slow
def test_blocks_on_a_slowed_worker_take_fewer_steps(client):
    from pipeline.blocks import to_blocks
    from pipeline.train import train

    rng = np.random.default_rng(0)
    X = rng.standard_normal((16000, 10))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    blocks = to_blocks(client, da.from_array(X, chunks=(2000, -1)),
                       da.from_array(y, chunks=2000), classification=True)
    client.rebalance(blocks.futures)  # both workers hold blocks, whatever the scheduler chose
    holders = {k: sorted(v)[0] for k, v in client.who_has(blocks.futures).items()}
    slow = sorted(set(holders.values()))[0]
    on_slow = [i for i, f in enumerate(blocks.futures) if holders[f.key] == slow]
    assert 0 < len(on_slow) < 8
    spec = nn.MLPSpec((10, 32, 1), "relu", "binary_log_loss")
    cfg = TrainConfig(sync="average", local_steps=20, batch_size=50, max_iter=3,
                      balance="throughput", learning_rate_init=0.01, random_state=0)
    client.run(_hog, 8, workers=[slow])  # long enough for this fit, short for later tests
    result = train(client, blocks, model=spec, config=cfg)
    counts = result.history[-1]["local_steps"]  # per block, as the balancer set them
    fast = [c for i, c in enumerate(counts) if i not in on_slow]
    assert max(counts[i] for i in on_slow) < min(fast) == 20, (counts, on_slow)
    # streams run on across epochs: every epoch still covers the data
    assert result.state.t >= 3 * 16000
