"""Save/load without pickle; foreign and tampered files are refused."""

import json
import pickle

import numpy as np
import pytest

import pipeline as pl
from pipeline.persist import ModelFormatError


@pytest.fixture(scope="module")
def fitted(client):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 3))
    y = np.array(["a", "b", "c"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny budget does not converge; irrelevant here
        m = pl.MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0,
                             sync="gradient").fit(X, y)  # one global optimizer state
    return m, X


def test_round_trip_predicts_identically(fitted, tmp_path):
    m, X = fitted
    m.save(tmp_path / "m")
    saved = pl.load(tmp_path / "m")
    loaded = saved.model
    assert type(loaded) is pl.MLPClassifier
    assert loaded.get_params() == m.get_params()
    assert np.array_equal(loaded.predict_proba(X), m.predict_proba(X))
    assert list(loaded.predict(X)) == list(m.predict(X))
    assert list(loaded.classes_) == list(m.classes_)
    assert loaded.loss_curve_ == m.loss_curve_
    for a, b in zip(loaded.optimizer_state_, m.optimizer_state_, strict=True):
        assert np.array_equal(a, b)
    assert saved.preprocessor is None
    assert "numpy" in saved.metadata["versions"]


def test_no_pickle_in_the_files(fitted, tmp_path):
    m, _ = fitted
    m.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    assert manifest["format"] == "dask-pipeline"
    with np.load(tmp_path / "m" / "arrays.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_tampered_arrays_are_refused(fitted, tmp_path):
    m, _ = fitted
    m.save(tmp_path / "m")
    data = bytearray((tmp_path / "m" / "arrays.npz").read_bytes())
    data[-40] ^= 0xFF
    (tmp_path / "m" / "arrays.npz").write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="modified or corrupted"):
        pl.load(tmp_path / "m")


def test_foreign_files_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ModelFormatError, match="not written by dask-pipeline"):
        pl.load(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.json").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ModelFormatError):
        pl.load(tmp_path / "b")
    with pytest.raises(FileNotFoundError):
        pl.load(tmp_path / "missing")


def test_pickled_arrays_are_refused_even_with_a_valid_checksum(fitted, tmp_path):
    import hashlib
    import io

    m, _ = fitted
    m.save(tmp_path / "m")
    buf = io.BytesIO()
    np.savez(buf, evil=np.array([{"a": 1}], dtype=object))
    (tmp_path / "m" / "arrays.npz").write_bytes(buf.getvalue())
    manifest = json.loads((tmp_path / "m" / "model.json").read_text())
    manifest["sha256"]["arrays.npz"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (tmp_path / "m" / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match="pickle"):
        pl.load(tmp_path / "m")


def test_unknown_class_names_are_not_imported(fitted, tmp_path):
    m, _ = fitted
    m.save(tmp_path / "m")
    path = tmp_path / "m" / "model.json"
    manifest = json.loads(path.read_text())
    manifest["objects"]["model"]["class"] = "os.system"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match="unknown estimator class"):
        pl.load(tmp_path / "m")


def test_preprocessor_with_median_sketches_and_indicators_round_trips(tmp_path):
    import dask
    import dask.dataframe as dd
    import pandas as pd

    from pipeline.estimators import saveable_classes
    from pipeline.serialization import dump_objects, read_objects, write_dir

    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    x[::7] = np.nan
    pdf = pd.DataFrame({"x": x, "z": rng.normal(size=200), "y": rng.integers(0, 2, 200)})
    with dask.config.set(scheduler="sync"):
        pre = pl.Preprocessor(label="y", impute="median", add_indicator=True)
        pre.fit(dd.from_pandas(pdf, npartitions=3))
        manifest, npz = dump_objects({"preprocessor": pre}, saveable_classes())
        write_dir(tmp_path / "p", manifest, npz)
        objects, _, _ = read_objects(tmp_path / "p", saveable_classes())
        back = objects["preprocessor"]
        pd.testing.assert_frame_equal(back.transform(pdf), pre.transform(pdf))
        assert list(back.get_feature_names_out()) == ["x", "z", "missingindicator_x"]
        # The restored sketches keep merging: partial_fit after load equals it before.
        more = pdf.assign(x=pdf["x"] + 1.0)
        np.testing.assert_array_equal(
            back.partial_fit(more).statistics_, pre.partial_fit(more).statistics_
        )


@pytest.mark.parametrize("sync", ["gradient", "average"])
def test_a_loaded_model_continues_training_where_it_stopped(client, tmp_path, sync):
    """save/load keeps what partial_fit continues from (optimizer moments, local-SGD replica
    states, epoch, t_): fit(2 epochs) -> save -> load -> partial_fit is fit(3 epochs), bit for
    bit, as it is without the round trip."""
    import warnings

    import dask.array as da

    rng = np.random.default_rng(5)
    X = rng.standard_normal((600, 5))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    Xd, yd = da.from_array(X, chunks=(200, -1)), da.from_array(y, chunks=200)
    kw = dict(hidden_layer_sizes=(8,), batch_size=50, random_state=0, sync=sync,
              local_steps=2, min_block_rows=1, learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on a fixed max_iter
        two = pl.MLPClassifier(max_iter=2, **kw).fit(Xd, yd, client=client)
        three = pl.MLPClassifier(max_iter=3, **kw).fit(Xd, yd, client=client)
    loaded = pl.load(pl.save(tmp_path / "m", two)).model
    loaded.partial_fit(Xd, yd, client=client)
    two.partial_fit(Xd, yd, client=client)
    assert two.params_.tobytes() == three.params_.tobytes()  # in memory
    assert loaded.params_.tobytes() == three.params_.tobytes()  # through the files
    assert loaded.n_iter_ == 3 and loaded.t_ == three.t_
