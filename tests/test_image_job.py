"""`pipeline run` with an image config (and the bundled `demo --images` config), on the session
cluster: read a folder of PNGs, split, train ImageClassifier, evaluate, save, report."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import sklearn.metrics as skm

import pipeline as pl
from pipeline import nn
from pipeline.cli.image_job import layers_from_config, split_images
from pipeline.cli.job import run_job
from pipeline.config import bundled_config, load_config
from pipeline.datasets import write_demo_images

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.mark.timeout(240)
def test_run_job_on_an_image_folder(client, tmp_path):
    folder = tmp_path / "digits"
    assert write_demo_images(folder, scale=1) == 1797
    layers = [{"type": "Conv2D", "filters": 8, "kernel_size": [3, 3]}, {"type": "ReLU"},
              {"type": "MaxPool2D", "pool_size": 2}, {"type": "Flatten"}]
    cfg = load_config(bundled_config("demo_images.yaml"), {
        "cluster": {"kind": "address", "address": client.scheduler.address},
        "data": {"path": str(folder)}, "model": {"layers": layers},
        "train": {"max_iter": 3}, "output": {"dir": str(tmp_path / "out")}})
    out = io.StringIO()
    results = run_job(cfg, out=out, progress=False)
    assert "test accuracy" in out.getvalue() and results["test_accuracy"] > 0.5  # 3 epochs of a tiny net; chance is 0.1

    # Oracle: the saved model's predictions on the same test split, scored by scikit-learn.
    model = pl.load(results["model_dir"]).model
    assert [type(la) for la in model.layers] == [nn.Conv2D, nn.ReLU, nn.MaxPool2D, nn.Flatten]
    X, y = pl.read_images(str(folder), random_state=cfg.split.random_state)
    parts = split_images(X, y, test_size=cfg.split.test_size, valid_size=cfg.split.valid_size,
                         random_state=cfg.split.random_state)
    X_test, y_test = (p.compute() for p in parts[-1])
    assert results["test_accuracy"] == pytest.approx(
        skm.accuracy_score(y_test, model.predict(X_test)), abs=1e-12)
    text = (tmp_path / "out" / "report.html").read_text()
    assert "id='per-class'" in text and "id='confusion'" in text
    assert len(re.findall(r"<figure class='err'", text)) == min(
        16, int(np.sum(model.predict(X_test) != y_test)))


def test_split_images_is_a_partition_of_the_rows():
    import dask.array as da

    X = da.arange(1000, chunks=300).reshape(1000, 1, 1, 1)
    y = da.arange(1000, chunks=300)
    (a, _), (b, _), (c, yc) = split_images(X, y, test_size=0.2, valid_size=0.1, random_state=3)
    rows = np.concatenate([p.compute().ravel() for p in (a, b, c)])
    assert sorted(rows.tolist()) == list(range(1000))
    np.testing.assert_array_equal(c.compute().ravel(), yc.compute())
    u = np.random.default_rng(3).random(1000)
    np.testing.assert_array_equal(c.compute().ravel(), np.flatnonzero(u < 0.2))


def test_layers_from_config_names_the_bad_entry():
    assert layers_from_config(None) is None
    got = layers_from_config([{"type": "Conv2D", "filters": 4, "stride": [2, 2]},
                              {"type": "Dropout", "rate": 0.5}])
    assert repr(got) == repr([nn.Conv2D(4, stride=(2, 2)), nn.Dropout(0.5)])
    with pytest.raises(ValueError, match=r"model.layers\[1\].type: 'Conv3D' is not a layer"):
        layers_from_config([{"type": "ReLU"}, {"type": "Conv3D"}])
    with pytest.raises(ValueError, match=r"model.layers\[0\] \(Conv2D\)"):
        layers_from_config([{"type": "Conv2D", "filters": -1}])


def test_bundled_image_demo_config_is_valid():
    cfg = load_config(bundled_config("demo_images.yaml"))
    assert cfg.data.format == "images" and cfg.model.type == "image_classifier"
