"""fit(verbose=1): one line per epoch with loss, validation, rate, elapsed and ETA (from events)."""

from __future__ import annotations

import re
import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning

import pipeline as pl
from pipeline.progress import EpochLines, format_seconds

LINE = re.compile(
    r"^epoch (\d+)/(\d+)  loss ([0-9.]+)(?:  validation ([0-9.]+))?  ([0-9,]+) samples/s"
    r"  elapsed (\d\d:\d\d)  ETA (\d\d:\d\d)$")


def _data(rng, n):
    X = rng.normal(size=(n, 4)).astype("float32")
    return X, (X[:, 0] - X[:, 1] > 0).astype(int)


@pytest.mark.timeout(120)
def test_verbose_prints_one_line_per_epoch(client, rng, capsys):
    X, y = _data(rng, 2000)
    Xv, yv = _data(rng, 400)
    model = pl.MLPClassifier(hidden_layer_sizes=(8,), max_iter=4, batch_size=500,
                             random_state=0, verbose=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 4 epochs do not converge
        model.fit(X, y, validation_data=(Xv, yv), client=client)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch")]
    assert len(lines) == model.n_iter_ == 4
    for i, line in enumerate(lines):
        m = LINE.match(line)
        assert m, line
        assert (int(m[1]), int(m[2])) == (i + 1, 4)
        assert float(m[3]) == pytest.approx(model.loss_curve_[i], abs=1e-6)
        assert float(m[4]) == pytest.approx(model.validation_scores_[i], abs=1e-4)
        assert int(m[5].replace(",", "")) > 0
    assert lines[-1].endswith("ETA 00:00")


@pytest.mark.timeout(120)
def test_silent_by_default(client, rng, capsys):
    X, y = _data(rng, 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pl.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(
            X, y, client=client)
    assert capsys.readouterr().out == ""


def test_eta_is_remaining_epochs_at_the_mean_epoch_time():
    lines = EpochLines(client=None, estimator="MLPClassifier")
    lines.started, lines.total = 1000.0, 10
    line = lines.epoch_line({"epoch": 2, "time": 1030.0, "loss": 0.5,
                             "validation_score": None, "samples_per_s": 1234.4})
    # 30 s for 2 epochs: 8 more take 120 s
    assert line == ("epoch 2/10  loss 0.500000  1,234 samples/s  elapsed 00:30  ETA "
                    + format_seconds(30 / 2 * 8))
    assert format_seconds(30 / 2 * 8) == "02:00" and format_seconds(3725) == "1:02:05"
    assert format_seconds(float("nan")) == "--:--"
