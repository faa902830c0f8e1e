"""Pruning: exact global magnitude sparsity, and masks that keep pruned weights at zero.

Oracles: NumPy sorting of the weight magnitudes written out here, a plain NumPy forward pass,
and the unmasked optimizers (elementwise, so a masked run must match them bit for bit on the
kept coordinates).
"""

from __future__ import annotations

import copy
import itertools
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import pipeline as pl
from pipeline import optim
from pipeline.backend import to_host
from pipeline.compress import (
    cubic_sparsity,
    fine_tune,
    keep_mask,
    masked,
    prune,
    prune_gradually,
    sparsity,
    weight_positions,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3_000, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64)
    t = X[:, 0] - 2 * X[:, 3] + 0.1 * rng.standard_normal(3_000)
    return X, y, t


@pytest.fixture(scope="module")
def _fitted(client, data):
    X, y, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a short budget is enough here
        return pl.MLPClassifier((24, 12), max_iter=5, random_state=0, batch_size=128).fit(X, y)


@pytest.fixture
def classifier(_fitted):
    return copy.deepcopy(_fitted)  # prune modifies the model


def _numpy_proba(coefs, intercepts, X):
    a = X.astype(np.float64)
    for W, b in zip(coefs[:-1], intercepts[:-1], strict=True):
        a = np.maximum(a @ W + b, 0.0)
    p = 1.0 / (1.0 + np.exp(-(a @ coefs[-1] + intercepts[-1])))
    return np.hstack([1 - p, p])


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.8, 0.97])
def test_prune_is_exact_global_magnitude(classifier, data, fraction):
    X, _, _ = data
    before = classifier.params_.copy()
    mask = prune(classifier, fraction)
    w = weight_positions(classifier.spec_)
    n_weights = int(w.sum())
    assert n_weights == sum(W.size for W in classifier.coefs_)
    pruned = w & ~mask
    assert pruned.sum() == round(fraction * n_weights)
    assert sparsity(classifier.spec_, classifier.params_) == pytest.approx(
        round(fraction * n_weights) / n_weights, abs=0)
    # The pruned weights are the smallest magnitudes over all layers at once.
    if 0 < pruned.sum() < n_weights:
        assert np.abs(before[pruned]).max() <= np.abs(before[w & mask]).min()
    assert np.all(classifier.params_[~mask] == 0)
    np.testing.assert_array_equal(classifier.params_[mask], before[mask])  # biases and the rest
    assert mask[~w].all()
    expected = _numpy_proba(classifier.coefs_, classifier.intercepts_, X)
    np.testing.assert_allclose(classifier.predict_proba(X), expected, rtol=1e-5, atol=1e-5)
    for W, (Wu, _) in zip(classifier.coefs_, pl.nn.unpack(classifier.spec_, classifier.params_),
                          strict=True):
        np.testing.assert_array_equal(W, Wu)


def test_prune_rejects_bad_input(classifier):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        prune(classifier, 1.0)
    with pytest.raises(ValueError, match="not fitted"):
        prune(pl.MLPClassifier(), 0.5)


@pytest.mark.parametrize("make", [lambda: optim.adam(0.05), lambda: optim.sgd(0.05, 0.9)])
def test_masked_optimizer_keeps_zeros_exactly(backend, make):
    rng = np.random.default_rng(1)
    mask = rng.random(50) < 0.3
    target = backend.asarray(rng.standard_normal(50))
    start = np.where(mask, rng.standard_normal(50), 0.0)
    params, ref = backend.asarray(start), backend.asarray(start)
    opt, plain = masked(make(), mask), make()
    state, ref_state = opt.init(params), plain.init(ref)
    for _ in range(300):
        updates, state = opt.update(2 * (params - target), state, params)
        params = optim.apply_updates(params, updates)
        ref_updates, ref_state = plain.update(2 * (ref - target), ref_state, ref)
        ref = optim.apply_updates(ref, ref_updates)
    host, ref_host = to_host(params), to_host(ref)
    assert np.all(host[~mask] == 0)  # exactly zero, not small
    np.testing.assert_array_equal(host[mask], ref_host[mask])  # elementwise: same bits
    assert np.abs(host[mask] - to_host(target)[mask]).max() < 0.1


def test_keep_mask_is_stateless(backend):
    t = keep_mask(np.array([True, False, True]))
    params = backend.asarray(np.zeros(3))
    u, state = t.update(backend.asarray(np.array([1.0, 2.0, 3.0])), t.init(params))
    assert state == () and to_host(u).tolist() == [1.0, 0.0, 3.0]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budget
def test_fine_tune_keeps_the_mask(classifier, data, client):
    X, y, t = data
    mask = prune(classifier, 0.8)
    history = fine_tune(classifier, X, y, mask, epochs=2, validation_data=(X, y))
    assert [h["epoch"] for h in history] == [1, 2]
    n_weights = int(weight_positions(classifier.spec_).sum())
    assert all(h["sparsity"] == round(0.8 * n_weights) / n_weights for h in history)
    assert np.all(classifier.params_[~mask] == 0)
    assert history[-1]["score"] == pytest.approx(classifier.score(X, y))
    assert history[-1]["score"] > 0.6  # still a classifier, not a constant

    reg = pl.MLPRegressor((16,), max_iter=3, random_state=0, batch_size=128).fit(X, t)
    rmask = prune(reg, 0.5)
    rhist = fine_tune(reg, X, t, rmask, epochs=1)
    assert np.all(reg.params_[~rmask] == 0) and rhist[0]["sparsity"] == pytest.approx(0.5,
                                                                                        abs=0.01)
    assert (reg.max_iter, reg.warm_start) == (3, False)  # restored


def test_cubic_sparsity_schedule():
    # Zhu & Gupta's formula written out: s_f + (0 - s_f) * (1 - t / n) ** 3
    for t in range(6):
        assert cubic_sparsity(0.8, t, 4) == pytest.approx(0.8 + (0 - 0.8) * (1 - min(t, 4) / 4) ** 3)
    with pytest.raises(ValueError, match="ramp >= 1"):
        cubic_sparsity(0.8, 1, 0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budget
def test_prune_gradually_follows_the_schedule_and_never_regrows(classifier, data, client,
                                                               monkeypatch):
    import pipeline.compress as compress

    X, y, _ = data
    w = weight_positions(classifier.spec_)
    n_weights = int(w.sum())
    seen = []

    def spy(model, X, y, mask, **kw):  # records each epoch's mask, then trains as usual
        seen.append(mask.copy())
        return fine_tune(model, X, y, mask, **kw)

    monkeypatch.setattr(compress, "fine_tune", spy)
    mask, history = prune_gradually(classifier, X, y, 0.8, epochs=3, validation_data=(X, y))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    ramp = 2  # two thirds of 3 epochs
    for e, (m, h) in enumerate(zip(seen, history, strict=True), start=1):
        expected = round(cubic_sparsity(0.8, e, ramp) * n_weights)
        assert np.count_nonzero(~m[w]) == expected
        assert h["sparsity"] == expected / n_weights  # the epoch kept its mask exactly
    for before, after in itertools.pairwise(seen):
        assert np.all(after <= before)  # a pruned weight is never kept again
    np.testing.assert_array_equal(mask, seen[-1])
    assert np.all(classifier.params_[~mask] == 0) and np.all(mask[~w])  # biases all kept
    assert history[-1]["score"] > 0.6
    with pytest.raises(ValueError, match="ramp_epochs must be in"):
        prune_gradually(classifier, X, y, 0.8, epochs=2, ramp_epochs=3)
