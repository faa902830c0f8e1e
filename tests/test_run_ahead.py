"""Mesh segments that run past their epoch (``pipeline.train.run_ahead``).

Without validation blocks or a per-epoch hook, a fit's mesh segment (local SGD over replicas,
or exact gradients) goes on into the next epochs, the stopping rule evaluated on every rank. Each fit here is compared with the same
fit epoch by epoch: through Dask's rounds (the mesh off), on the mesh with a checkpoint hook
(the client between epochs) and with a segment per round. Parameters, loss curves, epoch
counts and learning rates must have the same bits; the distributed path itself is checked
against NumPy and scikit-learn elsewhere (``test_bit_identity.py``, the distributed math tests),
so this file proves only that running ahead changes nothing but the number of rendezvous.
"""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pytest

import pipeline.train.mesh_epoch as mesh_epoch
import pipeline.train.mesh_local as mesh_local


@pytest.fixture(scope="module")
def data(client):
    import dask.array as da

    rng = np.random.default_rng(7)
    X = rng.standard_normal((1800, 5)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] + 0.2 * rng.standard_normal(1800) > 0).astype(int)
    Xd, yd = client.persist([da.from_array(X, chunks=300), da.from_array(y, chunks=300)])
    return Xd, yd


def _fit(client, data, monkeypatch, *, mesh=True, segment="60s", tmp=None, **kw):
    """A fit, and how many mesh segments it ran."""
    import pipeline as pl

    segments = []
    real = mesh_epoch.run_segment

    def counted(*a, **k):
        segments.append(a[3])  # the segment's description
        return real(*a, **k)

    monkeypatch.setattr(mesh_local, "run_segment", counted)
    monkeypatch.setattr(mesh_epoch, "run_segment", counted)
    params = {"hidden_layer_sizes": (16,), "batch_size": 50, "local_steps": 6, "replicas": 2,
              "outer_momentum": 0.5, "max_iter": 4, "random_state": 2, "min_block_rows": 1,
              **kw}
    est = pl.MLPClassifier(**params)
    with dask.config.set({"pipeline.train.mesh": mesh,
                          "pipeline.train.mesh-segment": segment}), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
        est.fit(*data, client=client, checkpoint_dir=tmp)
    monkeypatch.undo()
    assert est.train_summary_["retries"] == 0
    return est, len(segments)


def _same(a, b, what):
    for x, y in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        assert np.array_equal(x, y), what
    assert a.loss_curve_ == b.loss_curve_, what
    assert a.n_iter_ == b.n_iter_, what
    assert [h["learning_rate"] for h in a.history_] == [h["learning_rate"] for h in b.history_]
    assert a.validation_scores_ == b.validation_scores_, what


@pytest.mark.parametrize("kw", [
    {},  # 4 epochs of 3 rounds (6 local steps of 50 rows, 900 rows a replica)
    {"tol": 0.5, "n_iter_no_change": 1, "max_iter": 8},  # the rule stops the run at epoch 3
    {"solver": "sgd", "learning_rate": "adaptive", "learning_rate_init": 0.05, "tol": 0.5,
     "n_iter_no_change": 1, "max_iter": 6},  # the rule divides the rate by 5, twice
    {"local_steps": None, "max_iter": 5},  # one round an epoch: the mesh only because it runs
    {"sync": "gradient", "batch_size": 300},  # exact: 6 rounds an epoch
    {"sync": "gradient", "batch_size": 300, "tol": 0.5, "n_iter_no_change": 1, "max_iter": 8},
    {"sync": "gradient", "batch_size": 300, "solver": "sgd", "learning_rate": "adaptive",
     "learning_rate_init": 0.05, "tol": 0.5, "n_iter_no_change": 1, "max_iter": 6},
    # early stopping on held-out blocks: the ranks score them and stop on the score
    {"early_stopping": True, "validation_fraction": 0.25, "tol": 0.1, "n_iter_no_change": 2,
     "max_iter": 10},
    {"sync": "gradient", "batch_size": 300, "early_stopping": True, "validation_fraction": 0.25,
     "tol": 0.1, "n_iter_no_change": 2, "max_iter": 10},
], ids=["epochs", "stopping", "adaptive-rate", "round-per-epoch", "exact", "exact-stopping",
        "exact-adaptive-rate", "early-stopping", "exact-early-stopping"])
def test_running_ahead_has_the_bits_of_epoch_by_epoch(client, data, monkeypatch, tmp_path, kw):
    ahead, n_ahead = _fit(client, data, monkeypatch, **kw)
    dask_rounds, n_dask = _fit(client, data, monkeypatch, mesh=False, **kw)
    hooked, n_hooked = _fit(client, data, monkeypatch, tmp=str(tmp_path / "ckpt"), **kw)
    per_round, _ = _fit(client, data, monkeypatch, segment="0s", **kw)
    assert n_ahead == 1, "the whole fit is one segment"
    assert n_dask == 0
    if kw.get("local_steps", 6) is None:
        assert n_hooked == 0  # a one-round epoch alone is not worth a mesh
    else:
        assert n_hooked == ahead.n_iter_, "a checkpoint hook: a segment an epoch"
    for other, what in ((dask_rounds, "dask"), (hooked, "checkpoint hook"),
                        (per_round, "a segment per round")):
        _same(ahead, other, what)
    if "tol" in kw and kw.get("solver") != "sgd" and not kw.get("early_stopping"):
        assert ahead.n_iter_ == 3 < kw["max_iter"]
    if kw.get("early_stopping"):  # stopped by the score, the best epoch's parameters kept
        assert len(ahead.validation_scores_) == ahead.n_iter_ < kw["max_iter"]
    if kw.get("learning_rate") == "adaptive":
        rates = [h["learning_rate"] for h in ahead.history_]
        assert len(set(rates)) == 3, rates  # two cuts by 5 inside the one segment
    seconds = [h["seconds"] for h in ahead.history_]
    assert all(s > 0 for s in seconds)
    assert sum(seconds) <= ahead.train_summary_["fit_seconds"]


def test_a_segment_that_ends_inside_an_epoch_is_continued_by_the_next(client, data,
                                                                      monkeypatch):
    """A short segment length: segments end mid-epoch, in later epochs than they began in;
    the next epoch's call picks up the rounds already run and goes on from there."""
    for kw in ({}, {"sync": "gradient", "batch_size": 300}):  # 3 and 6 rounds an epoch
        ref, _ = _fit(client, data, monkeypatch, mesh=False, max_iter=6, **kw)
        fit, n = _fit(client, data, monkeypatch, segment="20ms", max_iter=6, **kw)
        assert 1 < n < 18  # not one segment, not one per round
        _same(fit, ref, f"short segments {kw}")


def test_validation_data_of_its_own_is_scored_on_the_mesh_with_the_same_bits(client, data,
                                                                              monkeypatch):
    """``validation_data`` are blocks of their own, placed apart from the training blocks: the
    ranks score a share each (those their workers hold, the rest dealt out), and the scores,
    the stopping epoch and the kept parameters are those of scoring rounds through Dask."""
    import dask.array as da

    rng = np.random.default_rng(8)
    Xv = rng.standard_normal((700, 5)).astype(np.float32)
    yv = (Xv[:, 0] * Xv[:, 1] > 0).astype(int)
    valid = (da.from_array(Xv, chunks=100), da.from_array(yv, chunks=100))
    kw = {"early_stopping": True, "tol": 0.1, "n_iter_no_change": 2, "max_iter": 10}
    fits = {}
    for name, mesh in (("ahead", True), ("dask", False)):
        import pipeline as pl

        est = pl.MLPClassifier(hidden_layer_sizes=(16,), batch_size=50, local_steps=6,
                               replicas=2, random_state=2, min_block_rows=1, **kw)
        with dask.config.set({"pipeline.train.mesh": mesh}), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[name] = est.fit(*data, client=client, validation_data=valid)
    _same(fits["ahead"], fits["dask"], "validation_data")
    assert fits["ahead"].n_iter_ < kw["max_iter"]


def test_a_segment_ends_when_its_epochs_parameters_fill_the_budget(client, data, monkeypatch):
    """Rank 0 ships every finished epoch's parameters to the client, so a segment ends once
    they take ``pipeline.train.mesh-ahead-bytes``: with room for two epochs' parameters, a
    6-epoch fit is three segments, with the bits of a fit without the budget."""
    import pipeline as pl

    n_params = pl.MLPClassifier(hidden_layer_sizes=(16,))._spec(5, 1).n_params
    ref, n_ref = _fit(client, data, monkeypatch, max_iter=6)
    with dask.config.set({"pipeline.train.mesh-ahead-bytes": 2 * 4 * n_params}):  # float32
        capped, n = _fit(client, data, monkeypatch, max_iter=6)
    assert (n_ref, n) == (1, 3)
    _same(capped, ref, "capped segments")
