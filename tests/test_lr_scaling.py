"""``lr_scaling``: the learning-rate scaling rule for large batches, with its automatic warm-up.

Oracles: the effective rate of every update written out in NumPy from the documented rule
(Goyal et al. 2017's linear rule, or its square root; a linear warm-up from 0 over 5 epochs, at
most a tenth of the run), the same fit spelled out by hand with ``lr_scaling=None``, and
scikit-learn's accuracy on the same data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.neural_network import MLPClassifier as SkMLP

from pipeline import MLPClassifier


def _oracle_rates(lr0: float, scaling: str | None, batch: int, n: int, max_iter: int,
                  updates: int, averaged: int = 1, ref: int = 256) -> np.ndarray:
    """The rate of updates 0..updates-1 (the first update of a warm-up has rate 0)."""
    ratio = batch / ref
    k = {None: 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]
    peak = lr0 * k
    total = math.ceil(n / batch) * max_iter
    warm = 0
    if scaling is not None and k * averaged > 1:
        warm = round(min(5 / max_iter, 0.1) * total)
    t = np.arange(updates, dtype=np.float64)
    return peak * (np.minimum(t, warm) / warm if warm else np.ones_like(t))


def _rates_of(est: MLPClassifier, n: int, rows: list[int], updates: int) -> np.ndarray:
    """Run the estimator's inner optimizer (plain SGD) on unit gradients: -update = rate."""
    config = est._train_config(n, seed=0)
    spec = est._spec(3, 1)
    opt = est._optimizer(config, spec, rows)
    params = np.zeros(spec.n_params)
    state = opt.init(params)
    out = []
    for _ in range(updates):
        upd, state = opt.update(np.ones_like(params), state, params)
        out.append(-float(upd[0]))
    return np.asarray(out)


@pytest.mark.parametrize(("scaling", "batch", "max_iter"), [
    ("linear", 1024, 20),   # rate x4; 5 epochs are a quarter of the run: capped at a tenth
    ("sqrt", 4096, 100),    # rate x4, warm-up 5 epochs = 5 % of the run
    ("linear", 128, 20),    # batch below the reference: rate halved, no warm-up
    (None, 1024, 20),       # off: the rate as given
])
def test_effective_rate_of_every_update_follows_the_rule(scaling, batch, max_iter):
    n = 8192
    est = MLPClassifier(solver="sgd", momentum=0.0, sync="gradient", batch_size=batch,
                        max_iter=max_iter, learning_rate_init=0.01, lr_scaling=scaling)
    updates = 3 * math.ceil(n / batch) * min(max_iter, 12)
    got = _rates_of(est, n, [n // 4] * 4, updates)
    want = _oracle_rates(0.01, scaling, batch, n, max_iter, updates)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_average_mode_counts_the_replicas_in_the_warm_up_rule():
    """sync="average" already scales the rate by R (replicas): a per-replica batch below the
    reference still gets the warm-up when the run's rate grows (x0.5 x R=4)."""
    n, rows = 8192, [2048] * 4
    est = MLPClassifier(solver="sgd", momentum=0.0, sync="average", replicas=4, batch_size=128,
                        max_iter=20, learning_rate_init=0.01, lr_scaling="linear")
    got = _rates_of(est, n, rows, 200)
    # the optimizer's own rate (LocalSGD multiplies by R when it hands out the epoch's rate)
    steps_per_epoch = math.ceil(2048 / 128)
    total = steps_per_epoch * 20
    warm = round(min(5 / 20, 0.1) * total)
    t = np.arange(200, dtype=np.float64)
    np.testing.assert_allclose(got, 0.01 * 0.5 * np.minimum(t, warm) / warm, rtol=1e-12)
    one_per_block = MLPClassifier(solver="sgd", momentum=0.0, sync="average", replicas=None,
                                  batch_size=128, max_iter=20, learning_rate_init=0.01,
                                  lr_scaling="linear")
    np.testing.assert_allclose(_rates_of(one_per_block, n, rows, 50), 0.005, rtol=1e-12)


def test_an_explicit_warmup_fraction_is_kept():
    n = 8192
    est = MLPClassifier(solver="sgd", momentum=0.0, sync="gradient", batch_size=1024,
                        max_iter=10, learning_rate_init=0.01, lr_scaling="linear",
                        warmup_fraction=0.5)
    got = _rates_of(est, n, [n], 80)
    warm = round(0.5 * 8 * 10)
    t = np.arange(80, dtype=np.float64)
    np.testing.assert_allclose(got, 0.04 * np.minimum(t, warm) / warm, rtol=1e-12)


@pytest.mark.parametrize(("kw", "match"), [
    ({"lr_scaling": "cubic"}, "lr_scaling must be one of"),
    ({"lr_scaling": "linear", "reference_batch_size": 0}, "reference_batch_size must be"),
])
def test_bad_settings_are_refused_in_fit(client, kw, match):
    X, y = _data(0)
    est = MLPClassifier((4,), sync="gradient", max_iter=1, **kw)  # __init__ stores, fit checks
    with pytest.raises(ValueError, match=match):
        est.fit(X[:200], y[:200], client=client)


def _data(seed: int):
    X, y = make_classification(n_samples=6000, n_features=20, n_informative=10, n_redundant=2,
                               n_clusters_per_class=3, class_sep=1.0, random_state=seed)
    return X, y


def test_scaled_fit_is_the_hand_written_configuration(client):
    """lr_scaling is only a rule for learning_rate_init and warmup_fraction: the same bits as
    asking for the scaled rate and the warm-up by hand."""
    X, y = _data(1)
    kw = dict(hidden_layer_sizes=(8,), sync="gradient", batch_size=512, max_iter=3,
              random_state=0, min_block_rows=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixed budget: ConvergenceWarning
        a = MLPClassifier(lr_scaling="sqrt", **kw).fit(X[:2000], y[:2000], client=client)
        b = MLPClassifier(learning_rate_init=1e-3 * math.sqrt(2), warmup_fraction=0.1,
                          **kw).fit(X[:2000], y[:2000], client=client)
    assert np.array_equal(a.params_, b.params_)
    assert a.loss_curve_ == b.loss_curve_


def test_large_batch_with_scaling_reaches_sklearn_accuracy(client):
    """Batch 1024 (4 exact rounds per epoch) for 10 epochs: unscaled, Adam's 1e-3 barely
    moves in 40 updates; scaled linearly (x4, one epoch of warm-up) it gets within 0.03 of
    scikit-learn's accuracy at its default batch (200 rows, 200 updates). Measured margins on
    three seeds: sklearn - scaled 0.00-0.017; scaled - unscaled 0.09-0.13."""
    X, y = _data(0)
    Xtr, ytr, Xte, yte = X[:4000], y[:4000], X[4000:], y[4000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixed budget: ConvergenceWarning
        sk = SkMLP((32,), max_iter=10, random_state=0).fit(Xtr, ytr).score(Xte, yte)
        acc = {}
        for scaling in (None, "linear"):
            m = MLPClassifier((32,), sync="gradient", batch_size=1024, max_iter=10,
                              random_state=0, min_block_rows=None, lr_scaling=scaling)
            m.fit(Xtr, ytr, client=client)
            acc[scaling] = float(np.mean(np.asarray(m.predict(Xte)) == yte))
    assert acc["linear"] >= sk - 0.03
    assert acc["linear"] >= acc[None] + 0.05


def test_run_configs_accept_the_scaling_rule():
    """`pipeline run` configs take lr_scaling and reference_batch_size in the train section."""
    from pipeline.config import ConfigError, bundled_config, load_config

    cfg = load_config(bundled_config(), {"train": {"lr_scaling": "sqrt",
                                                   "reference_batch_size": 512}})
    assert (cfg.train.lr_scaling, cfg.train.reference_batch_size) == ("sqrt", 512)
    assert load_config(bundled_config()).train.lr_scaling is None
    with pytest.raises(ConfigError, match="lr_scaling"):
        load_config(bundled_config(), {"train": {"lr_scaling": "cubic"}})
