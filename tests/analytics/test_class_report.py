"""Per-class tables and the misclassified-image grid of the report (scikit-learn as oracle)."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import dask.array as da
import numpy as np
import pytest
import sklearn.metrics as skm
from PIL import Image

from analytics.class_report import confident_errors
from analytics.report import report


class FakeImageClassifier:
    """Softmax of a fixed linear map of the flattened pixels; lazy on dask input."""

    def __init__(self, W: np.ndarray, classes: np.ndarray):
        self.W, self.classes_ = W, classes
        self.history_, self.loss_curve_, self.n_iter_ = [], [0.5, 0.4], 2

    def get_params(self) -> dict[str, Any]:
        return {"layers": None}

    def predict_proba(self, X: Any) -> Any:
        z = X.reshape(X.shape[0], -1) @ self.W
        e = da.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> Any:
        return da.take(self.classes_, self.predict_proba(X).argmax(axis=1))


def _table(text: str, table_id: str) -> list[list[str]]:
    body = re.search(rf"<table[^>]*id='{table_id}'.*?<tbody>(.*?)</tbody>", text, re.S).group(1)
    return [re.findall(r"<t[hd]>([^<]*)</t[hd]>", row) for row in body.split("</tr>") if row]


@pytest.fixture
def images(rng):
    X = rng.integers(0, 256, size=(600, 6, 5, 1)).astype(np.uint8)
    W = rng.normal(size=(30, 4)) / 100
    classes = np.array(["w", "x", "y", "z"])
    z = X.reshape(600, -1).astype(np.float64) @ W
    y = classes[(z + rng.normal(scale=z.std(), size=z.shape)).argmax(axis=1)]
    proba = np.exp(z - z.max(axis=1, keepdims=True))
    return X, y, W, classes, proba / proba.sum(axis=1, keepdims=True)


@pytest.mark.timeout(90)
def test_report_has_per_class_metrics_confusion_and_worst_images(tmp_path, images):
    X, y, W, classes, proba = images
    model = FakeImageClassifier(W, classes)
    text = report(model, da.from_array(X, chunks=(160, 6, 5, 1)), da.from_array(y, chunks=200),
                  tmp_path / "r.html").read_text()
    pred = classes[proba.argmax(axis=1)]

    oracle = skm.classification_report(y, pred, labels=classes, output_dict=True,
                                       zero_division=0)
    rows = {r[0]: r[1:] for r in _table(text, "per-class")}
    for name in [*classes, "macro avg", "weighted avg"]:
        got = [float(v.replace(",", "")) for v in rows[name]]
        want = [oracle[name][k] for k in ("precision", "recall", "f1-score", "support")]
        np.testing.assert_allclose(got, want, atol=5e-5)

    cm = skm.confusion_matrix(y, pred, labels=classes)
    got = [[int(v.replace(",", "")) for v in r[1:]] for r in _table(text, "confusion")]
    np.testing.assert_array_equal(got, cm)

    # Oracle for the grid: the 16 wrong rows with the highest top probability, in NumPy.
    wrong = np.flatnonzero(pred != y)
    conf = proba[wrong].max(axis=1)
    expected = wrong[np.lexsort((wrong, -conf))][:16]
    shown = [int(r) for r in re.findall(r"<figure class='err' data-row='(\d+)'>", text)]
    assert shown == expected.tolist()
    first = re.search(r"src='data:image/png;base64,([^']+)'", text).group(1)
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(first))))
    assert thumb.shape == (6 * 10, 5 * 10)  # 64 px // 6 rows = 10x nearest-neighbour
    a = X[expected[0], :, :, 0].astype(float)
    np.testing.assert_array_equal(
        thumb[::10, ::10], np.round((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8))


def test_confident_errors_do_not_depend_on_partitioning(images):
    X, y, _, classes, proba = images
    whole = confident_errors(X, y, proba, classes, k=7)
    split = confident_errors(da.from_array(X, chunks=(97, 6, 5, 1)), da.from_array(y, chunks=50),
                             da.from_array(proba, chunks=(300, 4)), classes, k=7)
    for a, b in zip(whole, split, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (classes[proba[whole[1]].argmax(axis=1)] != y[whole[1]]).all()


def test_tabular_report_gets_tables_but_no_image_grid(tmp_path, rng):
    X = rng.normal(size=(300, 3))
    W = rng.normal(size=(3, 3))
    classes = np.array([0, 1, 2])
    y = (X @ W).argmax(axis=1)
    text = report(FakeImageClassifier(W, classes), da.from_array(X, chunks=100),
                  da.from_array(y, chunks=100), tmp_path / "t.html").read_text()
    assert "id='per-class'" in text and "id='confusion'" in text
    assert "misclassified" not in text
