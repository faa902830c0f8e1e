"""Checks the ONNX export tests share: labels against ``predict`` where the decision is clear,
and ``pipeline predict --onnx`` output against ``predict_proba``/``predict``."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assert_labels_equal(labels, expected, proba, min_clear=0.99):
    """Labels equal wherever the top two probabilities are more than 1e-5 apart (closer than
    that, float32 rounding in either runtime may legitimately pick the other class)."""
    top2 = np.sort(proba, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-5
    assert clear.mean() > min_clear
    np.testing.assert_array_equal(np.asarray(labels)[clear], np.asarray(expected)[clear])


def assert_cli_scores(main, capsys, onx, src, tmp_path, scheduler, classes, proba, labels):
    """``pipeline predict --onnx`` on ``src``, with and without ``--proba``, scores every row
    as ``proba``/``labels`` do."""
    for flag, out in [((), tmp_path / "pred"), (("--proba",), tmp_path / "proba")]:
        argv = ["predict", "--onnx", str(onx), str(src), str(out), *flag,
                "--scheduler", scheduler]
        assert main(argv) == 0, capsys.readouterr().err
        scored = pd.read_parquet(out)
        assert len(scored) == len(proba)
        if flag:
            assert list(scored.columns) == [f"proba_{c}" for c in classes]
            np.testing.assert_allclose(scored.to_numpy(), proba, rtol=1e-5, atol=1e-5)
        else:
            assert_labels_equal(scored["prediction"].to_numpy(), labels, proba)
