"""The offline HTML report, on small fake fitted models over dask arrays."""

from __future__ import annotations

import io
import os
import re
from typing import Any

import dask.array as da
import numpy as np
import pytest
import sklearn.metrics as skm

from analytics.report import report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _history(n_epochs: int) -> list[dict[str, Any]]:
    return [
        {"epoch": e, "loss": 0.7 * 0.8**e, "validation_score": 0.6 + 0.3 * (1 - 0.7**e),
         "samples_per_s": 4e5 + 1e4 * (e % 3), "seconds": 0.5, "learning_rate": 1e-3,
         "round_seconds_median": 0.12 + 0.01 * (e % 2), "rounds": 4}
        for e in range(n_epochs)
    ]


class _FakeModel:
    """Just what `report` reads from a fitted estimator; predictions are lazy dask arrays."""

    def __init__(self, w: np.ndarray, n_epochs: int = 8):
        self.w = w
        self.history_ = _history(n_epochs)
        self.loss_curve_ = [h["loss"] for h in self.history_]
        self.validation_scores_ = [h["validation_score"] for h in self.history_]
        self.n_iter_ = n_epochs
        self.train_summary_ = {"run_id": "fit-test", "seconds": 4.2, "rounds": 32, "retries": 0,
                               "n_partitions": 4, "n_samples": 1200, "stopped_early": False}

    def get_params(self) -> dict[str, Any]:
        return {"hidden_layer_sizes": (16,), "learning_rate_init": 1e-3, "solver": "adam"}

    def _logits(self, X: Any) -> Any:
        return X @ self.w


class FakeClassifier(_FakeModel):
    def __init__(self, w: np.ndarray, classes: np.ndarray, **kwargs: Any):
        super().__init__(w, **kwargs)
        self.classes_ = classes

    def predict_proba(self, X: Any) -> Any:
        z = self._logits(X)
        if z.ndim == 1:  # binary: one logit
            p = 1 / (1 + da.exp(-z))
            return da.stack([1 - p, p], axis=1)
        e = da.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> Any:
        return da.take(self.classes_, self.predict_proba(X).argmax(axis=1))


class FakeRegressor(_FakeModel):
    def predict(self, X: Any) -> Any:
        return self._logits(X)


def _data(rng, n: int = 1200, d: int = 4, k: int = 1):
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d, k)) if k > 1 else rng.normal(size=d)
    return X, W


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing; CI installs it with `apt-get install -y chromium`")
        pytest.skip("the browser check needs Debian's chromium (apt-get install chromium); CI has it")


def _assert_self_contained(text: str) -> None:
    assert not re.search(r"<script[^>]*\ssrc\s*=", text), "external script"
    assert not re.search(r"<link[^>]*\shref\s*=\s*[\"']?(https?:)?//", text), "external css"
    assert not re.search(r"\s(src|href)\s*=\s*[\"']?https?://", text), "remote resource"


def _cards(text: str) -> dict[str, str]:
    return dict(re.findall(r"<div class='k'>([^<]+)</div><div class='v'>([^<]+)</div>", text))


@pytest.mark.timeout(60)
def test_binary_classifier_report(tmp_path, rng):
    X, w = _data(rng)
    y = (X @ w + rng.normal(scale=1.0, size=len(X)) > 0).astype(int)
    model = FakeClassifier(w, np.array([0, 1]))
    out = report(model, da.from_array(X, chunks=300), da.from_array(y, chunks=300),
                 tmp_path / "sub" / "report.html", config={"data": {"path": "x.parquet"}})
    assert out == tmp_path / "sub" / "report.html" and out.exists()
    text = out.read_text()
    _assert_self_contained(text)
    for title in ("Confusion matrix", "ROC curve", "Precision-recall curve",
                  "Training loss per epoch", "Validation score per epoch",
                  "Throughput per epoch", "Round latency per epoch"):
        assert title in text, title
    assert "hidden_layer_sizes" in text and "data.path" in text and "fit-test" in text

    # Oracle: scikit-learn on the same predictions in memory.
    p = 1 / (1 + np.exp(-(X @ w)))
    cards = _cards(text)
    assert float(cards["accuracy"]) == pytest.approx(skm.accuracy_score(y, p > 0.5), abs=1e-4)
    assert float(cards["ROC AUC"]) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-4)
    assert float(cards["average precision"]) == pytest.approx(
        skm.average_precision_score(y, p), abs=1e-4)
    assert float(cards["log loss"]) == pytest.approx(
        skm.log_loss(y, np.stack([1 - p, p], axis=1)), abs=1e-4)
    assert cards["test rows"] == "1,200"


@pytest.mark.timeout(60)
def test_multiclass_classifier_report(tmp_path, rng):
    X, W = _data(rng, k=3)
    classes = np.array(["a", "b", "c"])
    y = classes[(X @ W + rng.normal(scale=0.5, size=(len(X), 3))).argmax(axis=1)]
    model = FakeClassifier(W, classes)
    text = report(model, da.from_array(X, chunks=400), da.from_array(y, chunks=400),
                  tmp_path / "r.html").read_text()
    _assert_self_contained(text)
    assert "macro ROC AUC (OvR)" in text
    z = X @ W
    proba = np.exp(z - z.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    expected = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert float(_cards(text)["macro ROC AUC (OvR)"]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.timeout(60)
def test_regressor_report_without_history(tmp_path, rng):
    X, w = _data(rng, n=9000)
    y = X @ w + rng.normal(scale=0.3, size=len(X))
    model = FakeRegressor(w)
    del model.history_  # older models: curves from loss_curve_ / validation_scores_
    text = report(model, da.from_array(X, chunks=2000), da.from_array(y, chunks=2500),
                  tmp_path / "reg.html").read_text()
    _assert_self_contained(text)
    assert "Predicted vs true (5,000 sampled rows)" in text
    assert "Residuals" in text and "Training loss per epoch" in text
    assert "Throughput per epoch" not in text  # nothing to plot without history_
    cards = _cards(text)
    assert float(cards["R²"]) == pytest.approx(skm.r2_score(y, X @ w), abs=1e-4)
    assert float(cards["MSE"]) == pytest.approx(skm.mean_squared_error(y, X @ w), rel=1e-3)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_report_of_a_real_estimator(client, tmp_path, rng):
    from pipeline.estimators import MLPClassifier

    X = rng.normal(size=(4000, 5)).astype("float32")
    y = (X[:, 0] - X[:, 1] > 0).astype(int)
    Xd, yd = da.from_array(X, chunks=1000), da.from_array(y, chunks=1000)
    with pytest.warns(Warning):  # ConvergenceWarning: two epochs only
        model = MLPClassifier((8,), max_iter=2, batch_size=2000, random_state=0,
                              early_stopping=True).fit(Xd, yd)
    text = report(model, Xd, yd, tmp_path / "real.html").read_text()
    _assert_self_contained(text)
    expected = skm.accuracy_score(y, model.predict(Xd).compute())
    assert float(_cards(text)["accuracy"]) == pytest.approx(expected, abs=1e-4)
    assert "Validation score per epoch" in text and model.train_summary_["run_id"] in text


def test_regression_sample_is_uniform_and_aligned(rng):
    from analytics.report import _sample

    y = np.arange(20_000, dtype=float)
    ys, ps = _sample(da.from_array(y, chunks=3000), da.from_array(-y, chunks=7000), k=2000)
    assert len(ys) == 2000 and np.array_equal(ps, -ys)  # rows stay paired
    assert len(np.unique(ys)) == 2000
    # Uniform over the row range: each decile holds about a tenth.
    counts = np.histogram(ys, bins=10, range=(0, 20_000))[0]
    assert counts.min() > 140 and counts.max() < 260


def _pixel_stddev(png: bytes) -> float:
    from PIL import Image, ImageStat  # a bokeh dependency

    return max(ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L")).stddev)


@pytest.mark.timeout(90)
def test_report_renders_offline_in_chromium(tmp_path, rng):
    require_chromium()
    from playwright.sync_api import sync_playwright

    X, w = _data(rng)
    y = (X @ w > 0).astype(int)
    path = report(FakeClassifier(w, np.array([0, 1])), da.from_array(X, chunks=300),
                  da.from_array(y, chunks=300), tmp_path / "report.html")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
            headless=True, viewport={"width": 1300, "height": 900},
        )
        try:
            page = context.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_selector("canvas", state="attached", timeout=30_000)
            canvases = page.locator("canvas")  # CSS locators pierce Bokeh's shadow roots
            for _ in range(100):
                if canvases.count() >= 7:  # 4 training + 3 test-set figures
                    break
                page.wait_for_timeout(100)
            assert canvases.count() >= 7
            page.wait_for_timeout(500)
            png = page.screenshot(full_page=True)
        finally:
            context.close()
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
    assert _pixel_stddev(png) > 10, "report renders blank"


def test_sample_copies_computed_device_data_to_the_host():
    """One side lazy, the other in memory: the lazy side is computed and copied to the host.
    Computed cuDF (tests/fake_cudf.py) and device arrays (array_api_strict on "device1", which,
    like CuPy, np.asarray refuses) used to meet np.asarray there."""
    import dask
    from fake_cudf import Series

    from analytics.report import _sample

    xps = pytest.importorskip("array_api_strict")
    dev = xps.Device("device1")
    y = np.arange(50, dtype=float)
    lazy_cudf = dask.delayed(Series)(y, dev)
    lazy_device = dask.delayed(xps.asarray)(-y, device=dev)
    for ys, ps in (_sample(lazy_cudf, -y, k=50), _sample(y, lazy_device, k=50)):
        assert sorted(ys) == y.tolist()
        np.testing.assert_array_equal(ps, -ys)
