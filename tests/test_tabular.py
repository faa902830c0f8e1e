"""TabularClassifier/TabularRegressor and the ensemble layers.

Oracles: central finite differences (EnsembleDense, OneHot, EnsembleSequential's loss), plain
NumPy members written out here and k separately built ``Sequential`` networks (the ensemble in
one buffer), NumPy indexing (OneHot), the save/load round trip (identical predictions), a
1-worker cluster (bit-identical fits on 2 workers) and scikit-learn's impute + scale + one-hot +
``MLPClassifier(64, 64)`` pipeline (accuracy on breast_cancer with categorical columns and
missing values).
"""

from __future__ import annotations

import math

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

import pipeline as pl
from pipeline.backend import to_host
from pipeline.nn import (
    ColumnSplit,
    Context,
    Dense,
    Embedding,
    EnsembleDense,
    EnsembleSequential,
    Flatten,
    Identity,
    ReLU,
    Sequential,
)
from pipeline.tabular_net import PERIODIC_FREQUENCIES, OneHot


def _central(f, x, h=1e-6):
    g = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def _views(xp, flat, shapes):
    out, start = [], 0
    for s in shapes:
        out.append(xp.reshape(flat[start:start + math.prod(s)], s))
        start += math.prod(s)
    return out


def _check_layer(layer, in_shape, x, backend, check_dx=True):
    """Backward of ``layer`` against central differences of ``sum(R * forward)`` (float64)."""
    xp = backend.xp
    shapes, out_shape = layer.build(in_shape)
    rng = np.random.default_rng(3)
    params = layer.init(rng, in_shape)
    flat = np.concatenate([p.ravel() for p in params]) if params else np.zeros(0)
    R = rng.standard_normal((x.shape[0], *out_shape))

    def objective(f, v):
        y, _ = layer.forward(_views(xp, backend.asarray(f), shapes), backend.asarray(v),
                             Context())
        return float(np.sum(R * to_host(y)))

    ctx = Context(need_input_grad=check_dx)
    P = _views(xp, backend.asarray(flat), shapes)
    y, cache = layer.forward(P, backend.asarray(x), ctx)
    assert tuple(y.shape) == (x.shape[0], *out_shape)
    grad = xp.zeros((flat.size,), dtype=xp.float64, device=backend.device)
    dx = layer.backward(P, cache, backend.asarray(R), ctx, _views(xp, grad, shapes))
    if flat.size:
        np.testing.assert_allclose(to_host(grad), _central(lambda f: objective(f, x), flat),
                                   rtol=1e-6, atol=1e-8)
    if check_dx:
        np.testing.assert_allclose(to_host(dx), _central(lambda v: objective(flat, v), x),
                                   rtol=1e-6, atol=1e-8)
    return flat, to_host(y)


# ------------------------------------------------------------------ layers ---------------------

def test_ensemble_dense_shared_input_gradients(backend):
    x = np.random.default_rng(0).standard_normal((6, 4))
    flat, y = _check_layer(EnsembleDense(3, 5), (4,), x, backend)
    W, b = flat[:60].reshape(3, 4, 5), flat[60:].reshape(3, 5)
    for i in range(3):  # member i is x @ W_i + b_i
        np.testing.assert_allclose(y[:, i], x @ W[i] + b[i], rtol=1e-12)


def test_ensemble_dense_per_member_gradients(backend):
    x = np.random.default_rng(1).standard_normal((6, 3, 4))
    flat, y = _check_layer(EnsembleDense(3, 2), (3, 4), x, backend)
    W, b = flat[:24].reshape(3, 4, 2), flat[24:].reshape(3, 2)
    for i in range(3):
        np.testing.assert_allclose(y[:, i], x[:, i] @ W[i] + b[i], rtol=1e-12)


def test_one_hot_forward_and_zero_input_gradient(backend):
    codes = np.array([[0, 2], [1, 0], [1, 1], [0, 2]], dtype=np.float64)
    _, y = _check_layer(OneHot((2, 3)), (2,), codes, backend)
    expected = np.concatenate([np.eye(2)[codes[:, 0].astype(int)],
                               np.eye(3)[codes[:, 1].astype(int)]], axis=1)
    np.testing.assert_array_equal(y, expected)


def _small_ensemble(k, loss, n_out):
    encode = ColumnSplit([((0, 1, 2), Identity()), ((3,), Embedding((4,), (2,)))])
    return EnsembleSequential([encode, EnsembleDense(k, 6), ReLU(), EnsembleDense(k, 5), ReLU(),
                               EnsembleDense(k, n_out), Flatten()],
                              members=k, loss=loss, in_shape=(4,))


def _tab_data(rng, n):
    return np.concatenate([rng.standard_normal((n, 3)), rng.integers(0, 4, (n, 1))], axis=1)


@pytest.mark.parametrize("loss,n_out", [("binary_log_loss", 1), ("log_loss", 3),
                                        ("squared_error", 1)])
def test_ensemble_loss_gradient_with_row_weights(backend, loss, n_out):
    rng = np.random.default_rng(2)
    model = _small_ensemble(3, loss, n_out)
    X = _tab_data(rng, 7)
    Y = (np.eye(n_out)[rng.integers(0, n_out, 7)] if loss == "log_loss"
         else rng.integers(0, 2, (7, 1)).astype(float) if loss == "binary_log_loss"
         else rng.standard_normal((7, 1)))
    w = rng.uniform(0.2, 2.0, 7)
    Yw = np.concatenate([Y, w[:, None]], axis=1)
    flat = model.init_params(0, dtype=np.float64)
    Xb, Ywb = backend.asarray(X), backend.asarray(Yw)
    loss_value, grad = model.loss_and_grad(backend.asarray(flat), Xb, Ywb)
    fd = _central(lambda f: model.loss_and_grad(backend.asarray(f), Xb, Ywb)[0], flat)
    np.testing.assert_allclose(to_host(grad), fd, rtol=1e-5, atol=1e-7)
    # the weight column is sample_weight
    l2, g2 = model.loss_and_grad(backend.asarray(flat), Xb, backend.asarray(Y),
                                 sample_weight=backend.asarray(w))
    assert l2 == pytest.approx(loss_value, rel=1e-12)
    np.testing.assert_allclose(to_host(g2), to_host(grad), rtol=1e-12)


@pytest.mark.parametrize("loss,n_out", [("binary_log_loss", 1), ("log_loss", 3)])
def test_independent_members_forward_is_the_mean_of_whole_networks(backend, loss, n_out):
    """k whole networks in one buffer: the forward pass is the mean of each network's output
    activation on its own slice (NumPy's mean written out), in any array namespace; the raw
    outputs sit side by side."""
    from pipeline.nn import IndependentMembers

    rng = np.random.default_rng(5)
    net = _small_ensemble(1, loss, n_out)
    members = IndependentMembers(net, 3)
    flat = np.concatenate([net.init_params(s, dtype=np.float64) for s in (0, 1, 2)])
    assert members.n_params == flat.size == 3 * net.n_params
    X = _tab_data(rng, 8)
    each = [net.forward(flat[i * net.n_params:(i + 1) * net.n_params], X) for i in range(3)]
    out = members.forward(backend.asarray(flat), backend.asarray(X))
    np.testing.assert_allclose(to_host(out), np.mean(each, axis=0), rtol=1e-12)
    z = to_host(members.decision_function(backend.asarray(flat), backend.asarray(X)))
    assert z.shape == (8, 3 * n_out)
    np.testing.assert_allclose(z[:, n_out:2 * n_out], net.decision_function(
        flat[net.n_params:2 * net.n_params], X), rtol=1e-12)
    with pytest.raises(ValueError, match="needs"):
        members.forward(flat[:-1], X)


def test_ensemble_equals_separately_computed_members():
    """k members in one buffer = k networks built and evaluated on their own."""
    k, rng = 3, np.random.default_rng(4)
    model = _small_ensemble(k, "binary_log_loss", 1)
    flat = model.init_params(0, dtype=np.float64)
    X = _tab_data(rng, 9)
    Y = rng.integers(0, 2, (9, 1)).astype(float)
    T, W1, b1, W2, b2, W3, b3 = model.unpack(flat)
    # shared input encoding, written out: numeric columns then the embedding row
    enc = np.concatenate([X[:, :3], T[X[:, 3].astype(int)]], axis=1)
    probs, member_grads, member_losses = [], [], []
    for i in range(k):
        h = np.maximum(enc @ W1[i] + b1[i], 0)
        h = np.maximum(h @ W2[i] + b2[i], 0)
        probs.append(1 / (1 + np.exp(-(h @ W3[i] + b3[i]))))
        member = Sequential([ColumnSplit([((0, 1, 2), Identity()),
                                          ((3,), Embedding((4,), (2,)))]),
                             Dense(6), ReLU(), Dense(5), ReLU(), Dense(1)],
                            loss="binary_log_loss", in_shape=(4,))
        mflat = np.concatenate([T.ravel(), W1[i].ravel(), b1[i], W2[i].ravel(), b2[i],
                                W3[i].ravel(), b3[i]])
        np.testing.assert_allclose(member.forward(mflat, X), probs[-1], rtol=1e-12)
        loss_i, g = member.loss_and_grad(mflat, X, Y)
        member_losses.append(loss_i)
        member_grads.append(member.unpack(g))
    np.testing.assert_allclose(model.forward(flat, X), np.mean(probs, axis=0), rtol=1e-12)
    loss, grad = model.loss_and_grad(flat, X, Y)
    assert loss == pytest.approx(np.mean(member_losses), rel=1e-12)
    G = model.unpack(grad)
    np.testing.assert_allclose(G[0], sum(g[0] for g in member_grads) / k, rtol=1e-10)
    for j in range(1, 7):  # member i's slice of each layer = its own gradient / k
        for i in range(k):
            np.testing.assert_allclose(G[j][i], member_grads[i][j] / k, rtol=1e-10,
                                       atol=1e-14)


# ------------------------------------------------------------------ estimators -----------------

@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def _breast_cancer(seed=0, all_columns=False):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    rng = np.random.default_rng(seed)
    X = X.copy() if all_columns else X.iloc[:, :10].copy()
    # two columns made categorical (binned, as strings), missing values in two others
    X["radius_band"] = pd.cut(X.pop("mean radius"), 6, labels=False).map(lambda v: f"r{v}")
    X["texture_band"] = pd.cut(X.pop("mean texture"), 4, labels=False).map(lambda v: f"t{v}")
    for c in ("mean smoothness", "mean area"):
        X.loc[rng.random(len(X)) < 0.1, c] = np.nan
    return X, pd.Series(np.where(y == 1, "benign", "malignant"))


def _small_params(**kw):
    return {"hidden_layer_sizes": (32, 32), "n_members": 2, "max_iter": 15, "random_state": 0,
            **kw}


def test_beats_sklearn_pipeline_on_breast_cancer(client):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = _breast_cancer(all_columns=True)
    cat = ["radius_band", "texture_band"]
    num = [c for c in X.columns if c not in cat]
    ours, theirs = [], []
    for seed in range(2):
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed,
                                              stratify=y)
        sk = make_pipeline(
            ColumnTransformer([
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
                ("cat", OneHotEncoder(handle_unknown="ignore"), cat)]),
            MLPClassifier((64, 64), max_iter=1000, random_state=seed))
        theirs.append(sk.fit(Xtr, ytr).score(Xte, yte))
        clf = pl.TabularClassifier(random_state=seed).fit(Xtr, ytr)
        ours.append(clf.score(Xte, yte))
    assert np.mean(ours) >= np.mean(theirs), (ours, theirs)


def test_save_load_round_trip_identical_predictions(client, tmp_path):
    X, y = _breast_cancer()
    clf = pl.TabularClassifier(**_small_params(class_weight="balanced")).fit(X, y)
    clf.save(str(tmp_path / "clf"))
    loaded = pl.load(str(tmp_path / "clf")).model
    assert isinstance(loaded, pl.TabularClassifier)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    yr = X["mean perimeter"].fillna(0) * 2.0
    reg = pl.TabularRegressor(**_small_params()).fit(X.drop(columns="mean perimeter"), yr)
    reg.save(str(tmp_path / "reg"))
    back = pl.load(str(tmp_path / "reg")).model
    Xr = X.drop(columns="mean perimeter")
    np.testing.assert_array_equal(back.predict(Xr), reg.predict(Xr))
    # lazy on dask input, same values
    lazy = back.predict(dd.from_pandas(Xr, npartitions=3))
    np.testing.assert_allclose(lazy.compute(), reg.predict(Xr), rtol=1e-6)


def test_periodic_numeric_embeddings_train_save_and_load(client, tmp_path):
    from pipeline.nn import Periodic

    X, y = _breast_cancer()
    clf = pl.TabularClassifier(**_small_params(numeric_embedding="periodic")).fit(X, y)
    periodic = [layer for _, layer in clf.model_.network.body.layers[0].branches
                if isinstance(layer, Periodic)]
    assert len(periodic) == 1  # the numeric columns, and only they, are embedded
    assert clf.score(X, y) > 0.85
    clf.save(str(tmp_path / "clf"))
    loaded = pl.load(str(tmp_path / "clf")).model
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    with pytest.raises(ValueError, match=r"numeric_embedding='periodic'.*'ple'"):
        pl.TabularClassifier(**_small_params(numeric_embedding="periodic", numeric="ple",
                                             n_bins=4)).fit(X, y)
    with pytest.raises(ValueError, match="numeric_embedding must be"):
        pl.TabularClassifier(**_small_params(numeric_embedding="fourier")).fit(X, y)
    # "auto" (the default): periodic on one column per feature, none on PLE's bins
    auto = pl.TabularClassifier(**_small_params(max_iter=1)).fit(X, y)
    assert any(isinstance(layer, Periodic) for _, layer in auto.model_.network.body.layers[0].branches)
    ple = pl.TabularClassifier(**_small_params(max_iter=1, numeric="ple", n_bins=4)).fit(X, y)
    assert not any(isinstance(layer, Periodic)
                   for _, layer in ple.model_.network.body.layers[0].branches)


def test_periodic_order_is_fitted_saved_and_kept_for_older_models(client, tmp_path):
    """A fit records its periodic embedding's output order (``periodic_order_``); save/load
    keeps it and the predictions; a model saved before the attribute existed (each frequency
    count a layer of its own) builds the ``"groups"`` order, those layers' output side by side
    (bit for bit: ``tests/nn/test_ensemble_workspace.py``)."""
    from pipeline.nn import Periodic

    rng = np.random.default_rng(3)
    n = 600
    X = pd.DataFrame({"x": rng.normal(size=n), "five": rng.integers(0, 5, n).astype(float),
                      "three": rng.integers(0, 3, n).astype(float),
                      "city": rng.choice(list("abc"), n)})
    y = X["x"] + 0.5 * X["five"] + rng.normal(scale=0.1, size=n)
    reg = pl.TabularRegressor(**_small_params(max_iter=3)).fit(X, y)
    assert reg.periodic_order_ == "halves"
    (periodic,) = [layer for _, layer in reg.model_.network.body.layers[0].branches
                   if isinstance(layer, Periodic)]
    assert periodic.n_frequencies == (PERIODIC_FREQUENCIES, 3, 2)
    assert periodic.order == "halves"
    reg.save(str(tmp_path / "reg"))
    back = pl.load(str(tmp_path / "reg")).model
    assert back.periodic_order_ == "halves"
    np.testing.assert_array_equal(back.predict(X), reg.predict(X))
    del back.periodic_order_
    back._model = None
    (older,) = [layer for _, layer in back.model_.network.body.layers[0].branches
                if isinstance(layer, Periodic)]
    assert older.order == "groups" and older.n_frequencies == periodic.n_frequencies


def test_periodic_frequencies_follow_a_features_number_of_values():
    from pipeline.tabular_net import PERIODIC_FREQUENCIES, periodic_frequencies

    # 2k >= v sines and cosines up to the default; a feature of at most two values passes
    # through; 0 levels: not known (many)
    got = [periodic_frequencies(v) for v in (0, 1, 2, 3, 4, 5, 9, 15, 16, 17, 10_000)]
    assert got == [PERIODIC_FREQUENCIES, 0, 0, 2, 2, 3, 5, 8, 8, 8, 8]
    assert all(2 * periodic_frequencies(v) >= v for v in range(3, 2 * PERIODIC_FREQUENCIES + 1))


def test_periodic_branches_follow_the_layouts_numeric_levels():
    """Features go through Periodic layers with as many frequencies as their values need, one
    branch per count; two-valued features pass through with the missing indicators, and a
    feature constant at fit is left out (its missing indicator kept); a layout
    that does not know the levels (an estimator fitted before) embeds every numeric feature with
    the default count, as then."""
    import dataclasses

    from pipeline.nn import Identity, Periodic
    from pipeline.tabular_net import PERIODIC_FREQUENCIES, build_network
    from pipeline.tabular_prep import TabularPreprocessor

    rng = np.random.default_rng(0)
    n = 200
    X = pd.DataFrame({"x": rng.normal(size=n), "flag": rng.integers(0, 2, n),
                      "z": rng.normal(size=n), "gap": np.where(rng.random(n) < 0.2, np.nan, 1.0),
                      "five": rng.integers(0, 5, n), "city": rng.choice(list("abcde"), n)})
    layout = TabularPreprocessor(numeric="quantile_normal").fit(X).layout_
    assert layout.numeric_levels == (n, 2, n, 1, 5)
    kw = dict(hidden_layer_sizes=(8,), dropout=0.0, layer_norm=False, n_members=2)

    def branches(lay):
        split = build_network(lay, 1, "squared_error", **kw).body.layers[0]
        return [(type(layer).__name__, getattr(layer, "n_frequencies", None), cols)
                for cols, layer in split.branches], split

    got, split = branches(layout)
    k = PERIODIC_FREQUENCIES
    assert got[:2] == [("Periodic", (k, k, 3), (0, 2, 4)),  # x and z; five values: 3
                       ("Identity", None, (1, 5))]  # flag, gap's indicator (gap: constant)
    assert layout.one_hot == (False,)  # city: embedded
    assert split.build((layout.n_features,))[1] == (
        2 * 2 * k + 2 * 3 + 2 + layout.embedding_dims[0],)
    assert split.branches[0][1].order == "halves"
    # a model saved when each count was a layer of its own keeps that output order
    saved = build_network(layout, 1, "squared_error", periodic_order="groups", **kw)
    assert saved.body.layers[0].branches[0][1].order == "groups"
    old, _ = branches(dataclasses.replace(layout, numeric_levels=()))
    assert old[:2] == [("Periodic", k, (0, 1, 2, 3, 4)),
                       ("Identity", None, (5,))]
    assert isinstance(split.branches[1][1], Identity)
    assert isinstance(split.branches[0][1], Periodic)
    # every feature constant at fit: they still enter the network (which learns the mean)
    flat = TabularPreprocessor().fit(pd.DataFrame({"c": np.full(n, 3.0), "d": np.ones(n)}))
    assert branches(flat.layout_)[0] == [("Identity", None, (0, 1))]


def test_regression_reports_target_units(client):
    X, _ = _breast_cancer()
    y = 1000.0 + 50.0 * X["mean perimeter"].fillna(X["mean perimeter"].median())
    Xr = X.drop(columns="mean perimeter")
    reg = pl.TabularRegressor(**_small_params()).fit(Xr, y)
    pred = reg.predict(Xr)
    assert reg.target_mean_ == pytest.approx(y.mean(), rel=1e-6)
    assert reg.target_scale_ == pytest.approx(y.std(ddof=0), rel=1e-6)
    assert abs(pred.mean() - y.mean()) < 0.2 * y.std()  # in the target's units
    assert reg.score(Xr, y) > 0.5


def test_sample_weights_normalised_and_class_weight_direction(client):
    """Weights are normalised to mean 1 (a constant weight trains the same bits as none), and
    up-weighting a class moves predicted probability towards it. (That the weight column
    weights each row's loss is checked against finite differences and ``sample_weight`` in
    test_ensemble_loss_gradient_with_row_weights.)"""
    X, y = _breast_cancer()
    plain = pl.TabularClassifier(**_small_params(max_iter=3)).fit(X, y)
    const = pl.TabularClassifier(**_small_params(max_iter=3)).fit(
        X, y, sample_weight=np.full(len(X), 2.5))
    np.testing.assert_array_equal(plain.params_, const.params_)
    heavy = pl.TabularClassifier(**_small_params(class_weight={"malignant": 4.0})).fit(X, y)
    base = pl.TabularClassifier(**_small_params()).fit(X, y)
    col = list(base.classes_).index("malignant")
    assert heavy.predict_proba(X)[:, col].mean() > base.predict_proba(X)[:, col].mean()
    balanced = pl.TabularClassifier(**_small_params(class_weight="balanced"))
    from sklearn.utils.class_weight import compute_class_weight

    np.testing.assert_allclose(
        balanced._class_weights(np.bincount(pd.factorize(y, sort=True)[0]).astype(float),
                                np.unique(y)),
        compute_class_weight("balanced", classes=np.unique(y), y=y), rtol=1e-12)


@pytest.mark.parametrize("early_stopping,ensemble", [(False, "independent"),
                                                      (True, "independent"), (True, "shared")])
def test_resume_from_a_checkpoint_is_bit_identical(client, tmp_path, monkeypatch,
                                                   early_stopping, ensemble):
    from pipeline.checkpoint import latest_checkpoint

    X, y = _breast_cancer()
    params = _small_params(max_iter=6, early_stopping=early_stopping, n_iter_no_change=100,
                           ensemble=ensemble)
    k = params["n_members"] if ensemble == "independent" else 1  # runs, one directory each
    dirs = [tmp_path / f"member-{i}" for i in range(k)] if k > 1 else [tmp_path]
    full = pl.TabularClassifier(**params).fit(X, y)

    class Killed(Exception):
        pass

    from pipeline.checkpoint import Checkpointer

    save = Checkpointer.save

    def save_then_die(self, state):  # the process dies right after epoch 3's checkpoint
        save(self, state)
        if state.epoch == 3:
            raise Killed

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    with pytest.raises(Killed):
        pl.TabularClassifier(**params).fit(X, y, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    assert [latest_checkpoint(d).name for d in dirs] == ["epoch-000003"] * k
    epochs = []

    def save_and_count(self, state):
        epochs.append(state.epoch)
        save(self, state)

    monkeypatch.setattr(Checkpointer, "save", save_and_count)
    resumed = pl.TabularClassifier(**params).fit(X, y, checkpoint_dir=tmp_path, resume=True)
    assert sorted(epochs) == sorted([4, 5, 6] * k)  # every run went on from its checkpoint
    np.testing.assert_array_equal(resumed.params_, full.params_)
    assert resumed.loss_curve_ == full.loss_curve_
    assert resumed.n_iter_ == full.n_iter_ == 6
    # another preprocessing (a column fewer) is refused, naming what differs
    from pipeline.checkpoint import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError, match="features"):
        pl.TabularClassifier(**params).fit(X.drop(columns="mean area"), y,
                                           checkpoint_dir=tmp_path, resume=True)


@pytest.mark.parametrize("sync", [{"replicas": 2}, {"sync": "gradient"}])
def test_bit_identical_fits_on_one_and_two_workers(sync):
    # local SGD over a fixed number of replicas, or exact gradients: the same bits on any
    # cluster (the default replicas="auto" is one per worker, so it follows the cluster)
    X, y = _breast_cancer()
    Xd = dd.from_pandas(X.assign(label=y.to_numpy()), npartitions=4)
    # (one network: small data would otherwise be joined into one block for independent
    # members, test_small_data_of_several_blocks_is_joined_for_independent_members)
    params = _small_params(max_iter=4, min_block_rows=100, ensemble="shared", **sync)
    fitted = []
    for n_workers in (1, 2):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=False,
                          dashboard_address=None) as cluster, Client(cluster):
            clf = pl.TabularClassifier(**params).fit(Xd.drop(columns="label"), Xd["label"])
            assert clf.train_summary_["n_blocks"] > 1  # exercises the combine
            fitted.append((clf.params_, clf.predict_proba(X)))
    np.testing.assert_array_equal(fitted[0][0], fitted[1][0])
    np.testing.assert_array_equal(fitted[0][1], fitted[1][1])


def _two_moons_frame(n, seed):
    """A nonlinear binary problem with a categorical column that matters and missing values."""
    from sklearn.datasets import make_moons

    rng = np.random.default_rng(seed)
    Z, y = make_moons(n, noise=0.3, random_state=seed)
    band = rng.integers(0, 4, n)
    y = np.where(band == 3, 1 - y, y)  # the category flips the label in a quarter of rows
    X = pd.DataFrame({"a": Z[:, 0], "b": Z[:, 1], "noise": rng.normal(size=n),
                      "band": [f"g{v}" for v in band]})
    X.loc[rng.random(n) < 0.05, "noise"] = np.nan
    return X, pd.Series(y)


def test_several_blocks_train_by_local_sgd_over_one_replica_per_worker(client):
    """The default on several blocks: local SGD over one replica per worker (``train_summary_``
    says so), the same bits as asking for it; one block keeps sequential mini-batch training in
    one task. Quality oracle: it beats scikit-learn's MLP pipeline on the same rows, as the
    one-block fit does (test_beats_sklearn_pipeline_on_breast_cancer)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = _two_moons_frame(8000, 0)
    Xte, yte = _two_moons_frame(4000, 1)
    Xd = dd.from_pandas(X.assign(label=y.to_numpy()), npartitions=4)
    Xd, yd = Xd.drop(columns="label"), Xd["label"]
    auto = pl.TabularClassifier(random_state=0, min_block_rows=1000, max_iter=20,
                                ensemble="shared").fit(Xd, yd)
    s = auto.train_summary_
    assert (s["n_blocks"], s["sync"], s["replicas"]) == (4, "average", 2)
    batch = pl.TabularClassifier()._batch_size(s["n_samples"])
    assert s["local_steps"] == -(-16_384 // batch)
    explicit = pl.TabularClassifier(random_state=0, min_block_rows=1000, max_iter=20,
                                    ensemble="shared", sync="average", replicas=2,
                                    local_steps=s["local_steps"]).fit(Xd, yd)
    np.testing.assert_array_equal(auto.params_, explicit.params_)
    sk = make_pipeline(
        ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
             ["a", "b", "noise"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["band"])]),
        MLPClassifier((64, 64), max_iter=1000, random_state=0)).fit(X, y)
    assert auto.score(Xte, yte) >= sk.score(Xte, yte) - 0.005, (auto.score(Xte, yte),
                                                                 sk.score(Xte, yte))
    one = pl.TabularClassifier(random_state=0, max_iter=3).fit(X, y)  # one block
    assert (one.train_summary_["n_blocks"], one.train_summary_["replicas"],
            one.train_summary_["local_steps"]) == (1, None, None)


def test_independent_members_are_separately_trained_networks(client):
    """One block (``ensemble="auto"``): the k members are whole networks trained apart, each
    the network a one-member estimator with the member's seed trains, and predictions are
    their mean. The oracle is k one-member fits and NumPy's mean; without early stopping
    there is no validation split, whose rows follow the estimator's own seed."""
    from pipeline.nn import IndependentMembers
    from pipeline.train.members import member_seeds

    X, y = _breast_cancer()
    params = _small_params(max_iter=5, early_stopping=False, n_members=3)
    ens = pl.TabularClassifier(**params).fit(X, y)
    assert ens.ensemble_ == "independent" and ens.train_summary_["ensemble"] == "independent"
    assert isinstance(ens.model_, IndependentMembers) and ens.model_.k == 3
    seeds = member_seeds(0, 3)
    assert seeds[0] == 0 and len(set(seeds)) == 3
    singles = [pl.TabularClassifier(**{**params, "n_members": 1, "random_state": s}).fit(X, y)
               for s in seeds]
    np.testing.assert_array_equal(ens.params_, np.concatenate([m.params_ for m in singles]))
    np.testing.assert_allclose(ens.predict_proba(X),
                               np.mean([m.predict_proba(X) for m in singles], axis=0),
                               rtol=1e-5, atol=1e-7)
    assert ens.member_n_iter_ == [5, 5, 5]
    shared = pl.TabularClassifier(**params, ensemble="shared").fit(X, y)
    assert shared.ensemble_ == "shared" and shared.params_.size < ens.params_.size


def test_independent_members_train_on_different_workers_at_once(client, tmp_path):
    """Each member's one task is asked onto its own worker (the block's holder first), so two
    members on two workers take about one member's time; so are its rounds when it goes round
    by round (checkpoints); placement changes no bits."""
    from distributed import get_task_stream

    X, y = _breast_cancer()
    params = _small_params(max_iter=4)
    with get_task_stream(client) as ts:
        ens = pl.TabularClassifier(**params).fit(X, y)
    fused = [t for t in ts.data if str(t["key"]).startswith("fused_epochs")]
    assert len(fused) == 2 and len({t["worker"] for t in fused}) == 2, fused
    with get_task_stream(client) as ts:
        again = pl.TabularClassifier(**params).fit(X, y, checkpoint_dir=tmp_path)
    steps = [t for t in ts.data if "partition_local_steps" in str(t["key"])]
    assert len(steps) == 2 * 4 and len({t["worker"] for t in steps}) == 2, steps
    np.testing.assert_array_equal(ens.params_, again.params_)


def test_small_data_of_several_blocks_is_joined_for_independent_members(client):
    """Small data in several partitions (``ensemble="auto"``): the training blocks are joined
    into one, rows in block order, and each member trains on all of them; the oracle is the
    same fit of the rows as one pandas partition, whose validation rows the same per-block
    split holds out (early stopping off here: no split, so the rows are the frame's)."""
    X, y = _breast_cancer()
    params = _small_params(max_iter=3, early_stopping=False, min_block_rows=100)
    Xd = dd.from_pandas(X.assign(label=y.to_numpy()), npartitions=4)
    parts = pl.TabularClassifier(**params).fit(Xd.drop(columns="label"), Xd["label"])
    s = parts.train_summary_
    assert (s["ensemble"], s["n_partitions"], s["n_blocks"]) == ("independent", 4, 1)
    whole = pl.TabularClassifier(**params).fit(X, y)
    np.testing.assert_array_equal(parts.params_, whole.params_)
    big = pl.TabularClassifier()
    assert big._ensemble(65_536, 20) == "independent"
    assert big._ensemble(65_537, 20) == "shared"
    assert big._ensemble(60_000, 1_000) == "shared"  # 240 MB of features: not copied
    assert pl.TabularClassifier(ensemble="independent")._ensemble(10**6, 20) == "independent"


def test_ensemble_parameter_is_checked(client):
    X, y = _breast_cancer()
    with pytest.raises(ValueError, match="ensemble must be"):
        pl.TabularClassifier(ensemble="bagged").fit(X, y)
    one = pl.TabularRegressor(**_small_params(max_iter=2, n_members=1)).fit(
        X.drop(columns="mean perimeter"), X["mean perimeter"].fillna(0))
    assert one.ensemble_ == "shared"  # one member: the one network, as before


def test_dropout_auto_off_for_independent_members_that_stop_early(client, tmp_path):
    """``dropout="auto"``: none for independent members that stop early, 0.1 where training
    runs its whole schedule (no early stopping) or the members share their encoding; the
    resolved rate is the fitted network's (and the loaded one's), and a number is taken as
    given."""
    from pipeline.nn import Dropout

    def rates(est):
        return [layer.rate for layer in est.model_.network.layers if isinstance(layer, Dropout)]

    X, y = _breast_cancer()  # 569 rows: a 10% split is under 200 rows, no early stopping
    small = pl.TabularClassifier(**_small_params(max_iter=2)).fit(X, y)
    assert (small.early_stopping_, small.dropout_, rates(small)) == (False, 0.1, [0.1, 0.1])
    Xv, yv = _breast_cancer(seed=1)
    stopped = pl.TabularClassifier(**_small_params(max_iter=2)).fit(
        X, y, validation_data=(Xv, yv))
    assert (stopped.early_stopping_, stopped.dropout_, rates(stopped)) == (True, 0.0, [])
    stopped.save(str(tmp_path / "m"))
    back = pl.load(str(tmp_path / "m")).model
    assert rates(back) == [] and back.dropout == "auto"
    np.testing.assert_array_equal(back.predict_proba(X), stopped.predict_proba(X))
    shared = pl.TabularClassifier(**_small_params(max_iter=2, ensemble="shared")).fit(
        X, y, validation_data=(Xv, yv))
    assert (shared.early_stopping_, shared.dropout_) == (True, 0.1)
    given = pl.TabularClassifier(**_small_params(max_iter=2, dropout=0.3)).fit(
        X, y, validation_data=(Xv, yv))
    assert given.dropout_ == 0.3 and rates(given) == [0.3, 0.3]
    for bad in (1.0, -0.1, "high", True):
        with pytest.raises(ValueError, match="dropout must be"):
            pl.TabularClassifier(dropout=bad).fit(X, y)


def test_pandas_input_is_cut_into_equal_power_of_two_partitions():
    """pandas frames are partitioned by their size alone: one partition under 16,384 rows;
    from there at least 2 (halves of >= 8,192 rows, the default ``min_block_rows``, so they
    stay two blocks and train on two workers) and a power of two, which splits evenly over
    1, 2, 4, ... replicas."""
    from pipeline.tabular_base import _pandas_partitions

    cases = {1: 1, 16_383: 1, 16_384: 2, 32_767: 2, 32_768: 2, 49_152: 2, 65_535: 2,
             65_536: 4, 131_072: 8, 268_800: 16}
    assert {n: _pandas_partitions(n) for n in cases} == cases
    assert pl.TabularClassifier().min_block_rows == 8_192
    for n in (16_384, 20_000, 50_000, 131_072):  # dask keeps the count, in equal parts
        parts = _pandas_partitions(n)
        lengths = dd.from_pandas(pd.DataFrame({"a": np.arange(n)}), npartitions=parts,
                                 sort=False).map_partitions(len).compute().tolist()
        assert len(lengths) == parts and max(lengths) - min(lengths) <= 1
        assert min(lengths) >= pl.TabularClassifier().min_block_rows


def test_multiclass_and_errors(client):
    X, _ = _breast_cancer()
    y = X["radius_band"].map({"r0": "a", "r1": "b"}).fillna("c")
    Xm = X.drop(columns="radius_band")
    clf = pl.TabularClassifier(**_small_params()).fit(Xm, y)
    proba = clf.predict_proba(Xm)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert clf.score(Xm, y) > 0.6
    with pytest.raises(ValueError, match="lacks the feature column"):
        clf.predict(Xm.drop(columns="mean area"))
    with pytest.raises(ValueError, match="class_weight names labels"):
        pl.TabularClassifier(**_small_params(class_weight={"zzz": 2.0})).fit(Xm, y)


@pytest.mark.slow
def test_pipeline_run_config_chooses_the_tabular_estimator(tmp_path):
    import io
    import json

    from pipeline.cli.job import run_job
    from pipeline.config import bundled_config, load_config

    cfg = load_config(bundled_config(), {
        "cluster": {"n_workers": 1, "dashboard_address": "127.0.0.1:0"},
        "data": {"generate": {"rows": 3000, "partitions": 2, "seed": 0}},
        "model": {"estimator": "tabular"},
        "train": {"max_iter": 3},
        "output": {"dir": str(tmp_path / "out"), "profile": None, "report": None}})
    results = run_job(cfg, out=io.StringIO(), progress=False)
    assert results["test_accuracy"] > 0.6
    manifest = json.loads((tmp_path / "out" / "model" / "model.json").read_text())
    assert manifest["objects"]["model"]["class"] == "TabularClassifier"
    loaded = pl.load(results["model_dir"]).model
    assert loaded.n_iter_ <= 3
