"""The round watchdog under stress: dozens of rounds whose results are several MB, polled with
a very short watchdog interval while a browser-like client polls the dashboard. Polling
``Future.result(timeout=...)`` raced with such results inside distributed (``UnboundLocalError``
from ``distributed.utils.sync``) and ended a 30-epoch demo at epoch 21; a fit must never end
because of the waiting machinery."""

from __future__ import annotations

import threading
import urllib.request

import dask
import dask.array as da
import numpy as np
import pytest

from pipeline import nn
from pipeline.blocks import to_blocks
from pipeline.train import TrainConfig, train

pytestmark = pytest.mark.slow


def test_dozens_of_multi_mb_rounds_with_a_short_watchdog_interval(client):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 1200))
    y = (X[:, 0] > 0).astype(int)
    spec = nn.MLPSpec((1200, 500, 1), "relu", "binary_log_loss")  # 2.4 MB of float32 grads
    blocks = to_blocks(client, da.from_array(X, chunks=(24, -1)), da.from_array(y, chunks=24),
                       classification=True)
    cfg = TrainConfig(solver="sgd", batch_size=8, max_iter=12, rounds_ahead=1,
                      learning_rate_init=1e-3, n_iter_no_change=1000, random_state=0)
    stop = threading.Event()
    polled = [0]

    def poll_dashboard() -> None:
        url = client.dashboard_link.replace("/status", "/individual-progress")
        while not stop.is_set():
            try:
                urllib.request.urlopen(url, timeout=2).read()
                polled[0] += 1
            except OSError:
                pass
            stop.wait(0.2)  # a page render holds the scheduler's loop: not back to back

    poller = threading.Thread(target=poll_dashboard, daemon=True)
    poller.start()
    try:
        with dask.config.set({"pipeline.train.watchdog-interval": "5ms"}):
            result = train(client, blocks, model=spec, config=cfg)
    finally:
        stop.set()
        poller.join(5)
    assert result.rounds == 12 * 6  # 72 rounds, every one returning 2.4 MB to the client
    assert result.n_iter == 12
    assert polled[0] > 0
