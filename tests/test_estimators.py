"""scikit-learn conventions, lazy prediction, clear errors."""

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from pipeline import MLPClassifier, MLPRegressor


def _xy(n=200, seed=0, classes=2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = np.digitize(X[:, 0] + 0.3 * X[:, 1], np.linspace(-1, 1, classes - 1))
    return X, y


def test_init_stores_params_only_and_clone_works():
    m = MLPClassifier(hidden_layer_sizes=(5,), alpha=0.1, sync="average", local_steps=3)
    c = clone(m)
    assert c.get_params() == m.get_params()
    c.set_params(alpha=0.5)
    assert c.alpha == 0.5 and m.alpha == 0.1
    # validation happens in fit, not __init__
    bad = MLPClassifier(solver="nope")
    assert bad.solver == "nope"


def test_invalid_params_fail_in_fit(client):
    X, y = _xy()
    with pytest.raises(ValueError, match="solver"):
        MLPClassifier(solver="nope").fit(X, y)
    with pytest.raises(ValueError, match="sync"):
        MLPClassifier(sync="sometimes").fit(X, y)
    with pytest.raises(ValueError, match="batch_size"):
        MLPClassifier(batch_size=0).fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(0,)).fit(X, y)


def test_not_fitted():
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(np.zeros((2, 3)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budget
def test_fit_returns_self_and_learned_attributes(client):
    X, y = _xy(classes=3)
    m = MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0)
    assert m.fit(X, y) is m
    assert list(m.classes_) == [0, 1, 2]
    assert m.n_features_in_ == 4 and m.n_outputs_ == 3 and m.n_iter_ == 3
    assert len(m.loss_curve_) == 3 and m.out_activation_ == "softmax"
    assert [c.shape for c in m.coefs_] == [(4, 6), (6, 3)]
    assert m.t_ == 3 * len(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budget
def test_predictions_are_lazy_and_match_in_memory(client):
    X, y = _xy(n=300)
    labels = np.array(["no", "yes"])[y]
    m = MLPClassifier(hidden_layer_sizes=(6,), max_iter=5, random_state=0).fit(X, labels)
    Xd = dd.from_pandas(pd.DataFrame(X, columns=list("abcd")), npartitions=3)
    proba = m.predict_proba(Xd)
    pred = m.predict(Xd)
    assert isinstance(proba, da.Array) and isinstance(pred, da.Array)
    np.testing.assert_allclose(proba.compute(), m.predict_proba(X), rtol=1e-6)
    assert list(pred.compute()) == list(m.predict(X))
    assert set(pred.compute()) <= {"no", "yes"}
    np.testing.assert_allclose(m.predict_proba(X).sum(axis=1), 1, rtol=1e-6)
    # score is computed on the workers and equals the in-memory accuracy
    assert m.score(Xd, dd.from_pandas(pd.Series(labels), npartitions=3)) == pytest.approx(
        np.mean(m.predict(X) == labels))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budget
def test_feature_count_mismatch_is_clear(client):
    X, y = _xy()
    m = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2).fit(X, y.astype(float))
    with pytest.raises(ValueError, match="expecting 4 features"):
        m.predict(np.zeros((3, 5)))


def test_single_class_is_refused(client):
    X, _ = _xy()
    with pytest.raises(ValueError, match="single class"):
        MLPClassifier().fit(X, np.ones(len(X)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budget
def test_unknown_validation_labels_are_refused(client):
    X, y = _xy()
    with pytest.raises(ValueError, match="not among the classes"):
        MLPClassifier(max_iter=1).fit(X, y, validation_data=(X, y + 5))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budget
def test_partial_fit_continues(client):
    X, y = _xy()
    m = MLPClassifier(hidden_layer_sizes=(4,), random_state=0)
    m.partial_fit(X, y, classes=[0, 1])
    first = m.params_.copy()
    m.partial_fit(X, y)
    assert not np.array_equal(first, m.params_)
    with pytest.raises(ValueError, match="classes"):
        MLPClassifier().partial_fit(X, y)


@pytest.mark.parametrize("sync", ["gradient", "average"])
def test_partial_fit_keeps_optimizer_state_iterations_and_t(client, sync):
    """scikit-learn's partial_fit continues its optimizer (Adam moments, step count), n_iter_
    and t_: k calls of partial_fit are k epochs of one fit, bit for bit."""
    import dask.array as da

    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 4))
    y = (X[:, 0] - X[:, 1] > 0).astype(int)
    Xd, yd = da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=100)
    kw = dict(hidden_layer_sizes=(6,), batch_size=32, random_state=0, sync=sync,
              local_steps=2, min_block_rows=1, learning_rate_init=0.01)
    inc = MLPClassifier(**kw)
    for _ in range(3):
        inc.partial_fit(Xd, yd, classes=[0, 1], client=client)
    with pytest.warns(ConvergenceWarning):
        full = MLPClassifier(max_iter=3, **kw).fit(Xd, yd, client=client)
    assert inc.n_iter_ == 3 and inc.t_ == full.t_ == 3 * 300
    assert inc.loss_curve_ == full.loss_curve_
    for a, b in zip(inc.coefs_ + inc.intercepts_, full.coefs_ + full.intercepts_, strict=True):
        assert np.array_equal(a, b)


def test_adamw_cosine_warmup_clip_dropout_reach_the_trainer(client):
    """The second-generation options build the optimizer they name (AdamW with decoupled decay
    on weights only, warm-up then cosine decay to 0 over the run's updates, clipping) and a
    network with dropout; the fit stays reproducible."""
    from pipeline import optim

    rng = np.random.default_rng(5)
    X = rng.standard_normal((400, 5))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    Xd, yd = da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=100)
    kw = dict(hidden_layer_sizes=(16, 8), solver="adamw", weight_decay=0.05,
              learning_rate="cosine", warmup_fraction=0.2, clip_norm=1.0, dropout=(0.2, 0.0),
              sync="gradient",  # one global optimizer state to read the schedule from
              batch_size=50, max_iter=4, random_state=0, min_block_rows=1,
              learning_rate_init=0.01)
    with pytest.warns(ConvergenceWarning):
        a = MLPClassifier(**kw).fit(Xd, yd, client=client)
    with pytest.warns(ConvergenceWarning):
        b = MLPClassifier(**kw).fit(Xd, yd, client=client)
    assert all(np.array_equal(u, v) for u, v in zip(a.coefs_, b.coefs_, strict=True))
    assert a.spec_.dropout == (0.2, 0.0)
    # 8 updates per epoch x 4 epochs: the schedule has run to its end (rate 0)
    assert optim.get_learning_rate(a.optimizer_state_) == pytest.approx(0.0, abs=1e-12)
    assert a.predict_proba(X).shape == (400, 2)  # prediction: dropout off, deterministic
    np.testing.assert_array_equal(a.predict_proba(X), a.predict_proba(X))


def test_weight_decay_needs_adamw(client):
    X = np.random.default_rng(0).standard_normal((50, 3))
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match="adamw"):
        MLPClassifier(solver="adam", weight_decay=0.1, max_iter=1).fit(X, y, client=client)


# --- prediction blocks on a device (array_api_strict "device1" stands in for CuPy) ----------

@pytest.mark.parametrize("classes", [np.array([10, 20, 30]), np.array(["a", "b", "c"])])
def test_predict_class_block_on_a_device(classes):
    """Numeric classes are looked up on the device (they used to be created on the default
    device: `xp.asarray(classes)` without `device=`); string classes come to the host."""
    from pipeline import nn
    from pipeline.backend import to_host
    from pipeline.predict_blocks import predict_class_block as _predict_class_block

    xs = pytest.importorskip("array_api_strict")
    dev = xs.Device("device1")
    rng = np.random.default_rng(0)
    spec = nn.MLPSpec((4, 6, 3), "relu", "log_loss")
    params = nn.init_params(spec, 1, dtype=np.float64)
    X = rng.standard_normal((9, 4))
    want = classes[np.argmax(nn.forward(spec, params, X), axis=1)]
    got = _predict_class_block(xs.asarray(X, device=dev), params, spec, np.float64, classes)
    if classes.dtype.kind in "iu":
        assert got.device == dev
    np.testing.assert_array_equal(to_host(got), want)
    empty = _predict_class_block(xs.asarray(X[:0], device=dev), params, spec, np.float64,
                                 classes)
    assert to_host(empty).shape == (0,)
