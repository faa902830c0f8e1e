"""The epochs' parameter average (``TrainConfig.ema_decay``, ``pipeline.train.stopping``).

The oracle is the average written out in NumPy over the parameters each epoch ended with
(recorded by a per-epoch hook), and the validation score recomputed with
:func:`pipeline.train.evaluate` on the averaged parameters; the fused task, the mesh running
ahead and a resumed run must then give the same bits as the round-by-round loop.
"""

from __future__ import annotations

import dataclasses
import warnings

import dask
import dask.array as da
import numpy as np
import pytest

import pipeline.train.core as core
from pipeline import nn, optim
from pipeline.blocks import split_blocks, to_blocks
from pipeline.train import TrainConfig, evaluate, train


def _blocks(client, n=480, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X[:, 0] - X[:, 1] * X[:, 2] + 0.3 * rng.standard_normal(n) > 0).astype(int)
    return to_blocks(client, da.from_array(X, chunks=(n, -1)), da.from_array(y, chunks=n),
                     classification=True, dtype="float32")


def _model():
    return nn.Sequential([nn.Dense(16), nn.ReLU(), nn.Dense(1)], loss="binary_log_loss",
                         in_shape=(6,))


def _train(client, blocks, valid, *, fuse=False, on_epoch_end=None, **kw):
    cfg = TrainConfig(**{"solver": "adamw", "learning_rate": "cosine", "batch_size": 48,
                         "max_iter": 8, "sync": "average", "early_stopping": valid is not None,
                         "n_iter_no_change": 2, "tol": 0.0, "random_state": 3,
                         "scheduled_rate": True, "alpha": 0.0, "ema_decay": 0.5, **kw})
    opt = optim.from_sklearn("adamw", learning_rate_init=2e-2, learning_rate="cosine",
                             weight_decay=1e-3, clip_norm=1.0, warmup_steps=4, total_steps=80)
    return train(client, blocks, model=_model(), config=cfg, optimizer=opt, validation=valid,
                 fuse_epochs=fuse, on_epoch_end=on_epoch_end)


def _oracle_averages(epoch_params: list[np.ndarray], d: float) -> list[np.ndarray]:
    out, a = [], None
    for p in epoch_params:
        p = p.astype(np.float64)
        a = p if a is None else d * a + (1 - d) * p
        out.append(a)
    return out


def test_a_run_ends_with_the_numpy_average_of_its_epochs(client):
    blocks = _blocks(client)
    seen: list[np.ndarray] = []
    res = _train(client, blocks, None, on_epoch_end=lambda s: seen.append(s.params.copy()))
    assert len(seen) == 8
    expected = _oracle_averages(seen, 0.5)[-1]
    np.testing.assert_allclose(res.params, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(res.params, seen[-1], rtol=1e-3)  # the average, not the last epoch
    # training itself goes on from each epoch's own parameters: without the average the run
    # has the same epoch-end parameters
    plain: list[np.ndarray] = []
    _train(client, blocks, None, ema_decay=0.0, on_epoch_end=lambda s: plain.append(s.params))
    for a, b in zip(seen, plain, strict=True):
        assert np.array_equal(a, b)


def test_early_stopping_scores_and_restores_the_average(client):
    blocks, valid = split_blocks(client, _blocks(client, seed=1), 0.25, 5)
    seen: list[np.ndarray] = []
    res = _train(client, blocks, valid, max_iter=12,
                 on_epoch_end=lambda s: seen.append(s.params.copy()))
    averages = _oracle_averages(seen, 0.5)
    scores = res.state.validation_scores
    assert len(scores) == len(seen) == res.n_iter
    for a, s in zip(averages, scores, strict=True):  # each epoch scored on the average
        ref = evaluate(client, valid, a.astype(np.float32), _model())["accuracy"]
        assert s == pytest.approx(ref, abs=1.5 / valid.n_samples)
    best = int(np.argmax(scores))
    np.testing.assert_allclose(res.params, averages[best], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("early", [True, False])
def test_fused_task_averages_as_the_round_by_round_loop(client, early):
    blocks, valid = _blocks(client), None
    if early:
        blocks, valid = split_blocks(client, blocks, 0.2, 5)
    fused = _train(client, blocks, valid, fuse=True, max_iter=10)
    loop = _train(client, blocks, valid, fuse=False, max_iter=10)
    assert np.array_equal(fused.params, loop.params)
    assert fused.n_iter == loop.n_iter
    assert fused.state.validation_scores == loop.state.validation_scores
    assert np.array_equal(fused.state.average, loop.state.average)


def test_mesh_running_ahead_averages_as_epoch_by_epoch(client, monkeypatch):
    """The ranks take the average themselves and score it; the client replays the same."""
    import pipeline as pl

    rng = np.random.default_rng(7)
    X = rng.standard_normal((1800, 5)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] + 0.2 * rng.standard_normal(1800) > 0).astype(int)
    data = client.persist([da.from_array(X, chunks=300), da.from_array(y, chunks=300)])
    real = core._stopping_rule
    monkeypatch.setattr(core, "_stopping_rule",
                        lambda config: dataclasses.replace(real(config), ema_decay=0.6))
    params = {"hidden_layer_sizes": (16,), "batch_size": 50, "local_steps": 6, "replicas": 2,
              "max_iter": 6, "random_state": 2, "min_block_rows": 1, "early_stopping": True,
              "validation_fraction": 0.25, "tol": 0.0, "n_iter_no_change": 2}
    fits = []
    for mesh in (True, False):
        with dask.config.set({"pipeline.train.mesh": mesh}), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.append(pl.MLPClassifier(**params).fit(*data, client=client))
    a, b = fits
    assert np.array_equal(a.params_, b.params_)
    assert a.validation_scores_ == b.validation_scores_ and a.n_iter_ == b.n_iter_
    plain = pl.MLPClassifier(**params)
    with dask.config.set({"pipeline.train.mesh": False}), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monkeypatch.setattr(core, "_stopping_rule", real)
        plain.fit(*data, client=client)
    assert plain.validation_scores_ != a.validation_scores_  # the average was in effect


def test_ema_decay_is_checked(client):
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0).validate()
    import pandas as pd

    import pipeline as pl

    X = pd.DataFrame({"a": np.arange(40.0)})
    for bad in (1.0, -0.1, "x", True):
        with pytest.raises(ValueError, match="ema_decay"):
            pl.TabularRegressor(ema_decay=bad).fit(X, X["a"])
