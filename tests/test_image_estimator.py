"""ImageClassifier: accuracy on scikit-learn's digits, bit-identity across cluster sizes,
pickle-free save/load, checkpoints, both sync modes, lazy prediction."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

import pipeline as pl
from pipeline import nn
from pipeline.blocks import to_blocks

# A fixed number of epochs is how CNNs are trained; the sklearn-style warning that max_iter was
# reached is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = np.clip(X * 16, 0, 255).astype(np.uint8).reshape(-1, 8, 8, 1)  # 0..16 -> 0..255 pixels
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def one_worker():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster, set_as_default=False) as c:
        yield c


def _fit_digits(client, digits, **kwargs):
    X_train, _, y_train, _ = digits
    # 4 partitions: the blocks (and so the model) are a function of the data, not the workers
    X = da.from_array(X_train, chunks=(340, 8, 8, 1))
    y = da.from_array(y_train, chunks=340)
    params = dict(max_iter=6, batch_size=128, learning_rate_init=3e-3, random_state=0,
                  min_block_rows=None)
    params.update(kwargs)
    return pl.ImageClassifier(**params).fit(X, y, client=client)


@pytest.fixture(scope="module")
def fitted(client, digits):
    return _fit_digits(client, digits)


@pytest.mark.timeout(180)
def test_digits_accuracy_and_bit_identity_across_workers(fitted, one_worker, digits):
    _, X_test, _, y_test = digits
    accuracy = float(np.mean(fitted.predict(X_test) == y_test))
    assert accuracy >= 0.97, accuracy
    assert fitted.score(X_test, y_test) == pytest.approx(accuracy, abs=1e-12)
    assert fitted.train_summary_["n_partitions"] == 4
    alone = _fit_digits(one_worker, digits)
    assert alone.params_.tobytes() == fitted.params_.tobytes()
    assert alone.loss_curve_ == fitted.loss_curve_


def test_prediction_is_lazy_and_matches_in_memory(fitted, digits):
    _, X_test, _, _ = digits
    lazy = fitted.predict_proba(da.from_array(X_test, chunks=(100, 8, 8, 1)))
    assert isinstance(lazy, da.Array) and lazy.shape == (len(X_test), 10)
    eager = fitted.predict_proba(X_test)
    np.testing.assert_allclose(lazy.compute(), eager, rtol=1e-6, atol=1e-7)
    labels = fitted.predict(da.from_array(X_test[:, :, :, 0], chunks=(150, 8, 8)))  # grayscale
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(), fitted.classes_[eager.argmax(axis=1)])
    with pytest.raises(ValueError, match=r"fitted on \(8, 8, 1\)"):
        fitted.predict(np.zeros((2, 9, 9, 1), np.uint8))


def test_network_is_normalize_then_default_layers_then_output(fitted, digits):
    X_train = digits[0]
    model = fitted.spec_
    assert isinstance(model.layers[0], nn.Normalize)
    np.testing.assert_allclose(model.layers[0].mean, [X_train.astype(np.float64).mean()])
    np.testing.assert_allclose(model.layers[0].std, [X_train.astype(np.float64).std()])
    assert [type(layer) for layer in model.layers[1:-1]] == [
        type(layer) for layer in pl.image_estimator.default_layers()]
    assert isinstance(model.layers[-1], nn.Dense) and model.layers[-1].units == 10
    assert fitted.layers is None  # the parameter is untouched


def test_save_load_round_trip(fitted, digits, tmp_path):
    _, X_test, _, _ = digits
    path = pl.save(tmp_path / "cnn", fitted)
    loaded = pl.load(path).model
    assert type(loaded) is pl.ImageClassifier and loaded.get_params() == fitted.get_params()
    assert loaded.params_.tobytes() == fitted.params_.tobytes()
    np.testing.assert_array_equal(loaded.predict_proba(X_test), fitted.predict_proba(X_test))
    files = {p.name for p in tmp_path.joinpath("cnn").iterdir()}
    assert not any(name.endswith((".pkl", ".pickle")) for name in files)


CUSTOM = [nn.Augment(crop_padding=1, flip=False), nn.Conv2D(8, 3, kernel_init="he_uniform"),
          nn.GroupNorm(4), nn.ReLU(), nn.AvgPool2D(2), nn.Conv2D(8, (3, 3), padding="valid"),
          nn.Tanh(), nn.GlobalAvgPool2D(), nn.Dropout(0.1)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sync", ["gradient", "average"])
def test_custom_layers_both_sync_modes_and_round_trip(client, digits, tmp_path, sync):
    X_train, X_test, y_train, _ = digits
    clf = pl.ImageClassifier(layers=CUSTOM, max_iter=2, batch_size=64, random_state=1,
                             sync=sync, min_block_rows=None)
    clf.fit(da.from_array(X_train[:600], chunks=(200, 8, 8, 1)), y_train[:600], client=client)
    assert np.isfinite(clf.loss_curve_).all() and len(clf.loss_curve_) == 2
    assert [type(layer) for layer in clf.spec_.layers[1:-1]] == [type(la) for la in CUSTOM]
    assert clf.spec_.layers[1] is not CUSTOM[0]  # built copies, the parameter stays unbuilt
    loaded = pl.load(pl.save(tmp_path / sync, clf)).model
    assert repr(loaded.layers) == repr(CUSTOM)
    np.testing.assert_array_equal(loaded.predict_proba(X_test[:50]),
                                  clf.predict_proba(X_test[:50]))


@pytest.mark.timeout(120)
def test_checkpoint_resume_continues_exactly(client, digits, tmp_path):
    X_train, _, y_train, _ = digits
    X, y = X_train[:400], y_train[:400]
    small = [nn.Conv2D(4, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten()]
    straight = pl.ImageClassifier(layers=small, max_iter=3, random_state=2).fit(
        X, y, client=client)
    first = pl.ImageClassifier(layers=small, max_iter=2, random_state=2)
    first.fit(X, y, client=client, checkpoint_dir=tmp_path)
    resumed = pl.ImageClassifier(layers=small, max_iter=3, random_state=2)
    resumed.fit(X, y, client=client, checkpoint_dir=tmp_path, resume=True)
    assert resumed.params_.tobytes() == straight.params_.tobytes()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sync", ["gradient", "average"])
def test_partial_fit_calls_are_the_epochs_of_one_fit(client, digits, sync):
    """scikit-learn's contract: k calls of partial_fit on the same data are k epochs of fit
    (optimizer state, n_iter_ and t_ carried over; normalisation learned on the first call)."""
    X_train, _, y_train, _ = digits
    X = da.from_array(X_train[:400], chunks=(200, 8, 8, 1))
    y = da.from_array(y_train[:400], chunks=200)
    small = [nn.Conv2D(4, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten()]
    kw = dict(layers=small, batch_size=64, random_state=2, sync=sync, min_block_rows=None)
    inc = pl.ImageClassifier(**kw)
    with pytest.raises(ValueError, match="classes"):
        inc.partial_fit(X, y, client=client)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.arange(10), client=client)
    full = pl.ImageClassifier(max_iter=3, **kw).fit(X, y, client=client)
    assert inc.n_iter_ == full.n_iter_ == 3 and inc.t_ == full.t_
    assert inc.loss_curve_ == full.loss_curve_
    assert inc.params_.tobytes() == full.params_.tobytes()
    np.testing.assert_array_equal(inc.channel_mean_, full.channel_mean_)
    with pytest.raises(ValueError, match="fitted on"):
        inc.partial_fit(np.zeros((4, 6, 6, 1), np.uint8), np.zeros(4, int), client=client)


@pytest.mark.timeout(120)
def test_validation_data_and_early_stopping(client, digits):
    X_train, X_test, y_train, y_test = digits
    small = [nn.Conv2D(4, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten()]
    clf = pl.ImageClassifier(layers=small, max_iter=40, early_stopping=True, n_iter_no_change=2,
                             tol=0.5, random_state=0)
    clf.fit(X_train, y_train, validation_data=(X_test, y_test), client=client)
    assert clf.n_iter_ < 40 and clf.train_summary_["stopped_early"]
    assert len(clf.validation_scores_) == clf.n_iter_
    # the last validation score is the test accuracy of the final epoch's parameters... unless
    # the best ones were restored; either way it is an accuracy computed on all test rows
    assert 0.0 <= clf.validation_scores_[-1] <= 1.0


def test_blocks_keep_uint8_images_and_rows_are_gathered_whole(client, digits):
    from pipeline.train.order import epoch_order
    from pipeline.train.tasks import _rows, workspace_for

    X_train, _, y_train, _ = digits
    blocks = to_blocks(client, da.from_array(X_train, chunks=(500, 4, 8, 1)),
                       da.from_array(y_train, chunks=500), classification=True, keep_shape=True)
    assert blocks.n_features == 64 and blocks.rows == [500, 500, 347]
    block = blocks.futures[1].result()
    assert block.X.dtype == np.uint8 and block.X.shape == (500, 8, 8, 1)
    np.testing.assert_array_equal(block.X, X_train[500:1000])
    order = epoch_order(500, 0, 1, 0, True)  # seed 0, block 1, epoch 0
    Xb, Yb = _rows(block, 0, 1, 0, True, 10, 74, workspace_for(99, block.X))
    np.testing.assert_array_equal(Xb, X_train[500:1000][order[10:74]])
    assert Yb.dtype == np.float32 and Yb.shape == (64, 10)
    client.cancel(blocks.futures)


def test_convergence_warning_is_the_sklearn_one(client, digits):
    X_train, _, y_train, _ = digits
    small = [nn.Flatten()]
    with pytest.warns(ConvergenceWarning):
        pl.ImageClassifier(layers=small, max_iter=1, random_state=0).fit(
            X_train[:200], y_train[:200], client=client)
