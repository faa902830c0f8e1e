"""Checkpoints: exact resume, refusal on a different run, atomic latest."""

import os
import warnings

import numpy as np
import pytest

import pipeline as pl
from pipeline.checkpoint import CheckpointMismatchError, latest_checkpoint


def _xy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    return X, (X[:, 0] - X[:, 2] > 0).astype(int)


def _fit(epochs, **fit_kw):
    X, y = _xy()
    m = pl.MLPClassifier(hidden_layer_sizes=(6,), max_iter=epochs, random_state=3,
                         batch_size=64, **fit_kw.pop("est", {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixed budgets, no convergence expected
        return m.fit(X, y, **fit_kw)


@pytest.mark.parametrize("sync", ["gradient", "average"])
def test_resume_is_bit_identical(client, tmp_path, sync):
    est = {"sync": sync, "local_steps": 2}
    full = _fit(6, est=dict(est))
    _fit(3, est=dict(est), checkpoint_dir=tmp_path)  # "killed" after epoch 3
    assert latest_checkpoint(tmp_path).name == "epoch-000003"
    resumed = _fit(6, est=dict(est), checkpoint_dir=tmp_path, resume=True)
    assert np.array_equal(resumed.params_, full.params_)
    assert resumed.loss_curve_ == full.loss_curve_
    assert resumed.n_iter_ == 6


def test_resume_with_another_config_is_refused(client, tmp_path):
    _fit(2, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"config.alpha: checkpoint has 0.0001"):
        _fit(4, est={"alpha": 0.1}, checkpoint_dir=tmp_path, resume=True)
    X, y = _xy()
    with pytest.raises(CheckpointMismatchError, match="n_features"):
        m = pl.MLPClassifier(hidden_layer_sizes=(6,), max_iter=4, random_state=3, batch_size=64)
        m.fit(X[:, :3], y, checkpoint_dir=tmp_path, resume=True)


def test_crash_mid_write_keeps_the_latest_checkpoint(client, tmp_path, monkeypatch):
    _fit(2, checkpoint_dir=tmp_path)
    before = latest_checkpoint(tmp_path)
    import pipeline.serialization as persist

    real = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst):
        calls["n"] += 1
        if str(dst).endswith("arrays.npz"):
            raise OSError("disk full (simulated)")
        return real(src, dst)

    monkeypatch.setattr(persist.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        _fit(4, checkpoint_dir=tmp_path, resume=True)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == before
    resumed = _fit(4, checkpoint_dir=tmp_path, resume=True)
    assert np.array_equal(resumed.params_, _fit(4).params_)


def test_resume_without_checkpoint_starts_fresh(client, tmp_path):
    a = _fit(2, checkpoint_dir=tmp_path / "new", resume=True)
    assert np.array_equal(a.params_, _fit(2).params_)
