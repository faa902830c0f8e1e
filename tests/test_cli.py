"""The README's main command, end to end, as a user runs it (small size)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipeline.config import ConfigError, bundled_config, load_config


def _pipeline(*args, cwd, timeout=420):
    exe = shutil.which("pipeline")
    cmd = [exe] if exe else [sys.executable, "-m", "pipeline.cli.main"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_pipeline_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "out"
    proc = _pipeline("demo", "--rows", "20000", "--partitions", "4", "--epochs", "3",
                     "--output", str(out), "--dashboard-address", "127.0.0.1:0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for label in ("rows (train)", "partitions", "epochs", "fit wall time", "training samples/s",
                  "test accuracy", "test log loss", "training page:", "report:"):
        assert label in table, table
    acc = float(next(line for line in table.splitlines()
                     if line.startswith("test accuracy")).split()[-1])
    assert acc > 0.7  # the demo label has real signal; a majority guess gets ~0.6
    for name in ("report.html", "profile.html", "model/model.json", "model/arrays.npz"):
        assert (out / name).exists(), name
    assert "\nresults\n" in table  # the table has a title
    # one definition of the fit time: the report shows the table's figure
    fit = next(line for line in table.splitlines() if line.startswith("fit wall time"))
    assert f"fit {fit.split()[-2]} s" in (out / "report.html").read_text()
    manifest = json.loads((out / "model" / "model.json").read_text())
    assert manifest["objects"]["model"]["class"] == "MLPClassifier"
    assert "preprocessor" in manifest["objects"]
    assert "==> training" in proc.stderr  # progress is shown

    # the saved model scores new data lazily to Parquet
    pred = _pipeline("predict", str(out / "model"), str(out / "data"), str(out / "pred"),
                     "--workers", "1", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:]
    import pandas as pd

    scored = pd.read_parquet(out / "pred")
    assert len(scored) == 20000
    assert set(np.unique(scored["prediction"])) <= {0, 1}


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key train\.epochs.*max_iter"):
        load_config(bundled_config(), {"train": {"epochs": 3}})
    with pytest.raises(ConfigError, match=r"train\.sync: 'fast' is not allowed.*'gradient'"):
        load_config(bundled_config(), {"train": {"sync": "fast"}})
    with pytest.raises(ConfigError, match=r"model\.hidden_layer_sizes\[1\]: expected an integer"):
        load_config(bundled_config(), {"model": {"hidden_layer_sizes": [8, "x"]}})
    with pytest.raises(ConfigError, match=r"unknown key clustr"):
        load_config({"clustr": {}})


def test_toml_and_yaml_configs_agree(tmp_path):
    (tmp_path / "a.toml").write_text('[train]\nmax_iter = 3\nsync = "gradient"\n'
                                     '[model]\nhidden_layer_sizes = [8]\n')
    (tmp_path / "a.yaml").write_text("train: {max_iter: 3, sync: gradient}\n"
                                     "model: {hidden_layer_sizes: [8]}\n")
    assert load_config(tmp_path / "a.toml") == load_config(tmp_path / "a.yaml")


def test_run_reports_config_errors_cleanly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {max_iter: many}\n")
    proc = _pipeline("run", str(bad), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "train.max_iter: expected an integer" in proc.stderr


def test_preprocess_config_accepts_median_imputation_and_indicators():
    cfg = load_config(bundled_config(), {"preprocess": {"impute": "median", "add_indicator": True}})
    assert cfg.preprocess.impute == "median" and cfg.preprocess.add_indicator is True
    assert load_config(bundled_config()).preprocess.add_indicator is False
    with pytest.raises(ConfigError, match=r"preprocess\.impute: 'mode' is not a 'mean' \| 'median'"):
        load_config(bundled_config(), {"preprocess": {"impute": "mode"}})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_links_work_while_it_runs_and_keep_alive_stops_on_ctrl_c(tmp_path):
    import signal
    import urllib.request

    exe = shutil.which("pipeline")
    cmd = [exe] if exe else [sys.executable, "-m", "pipeline.cli.main"]
    proc = subprocess.Popen(
        [*cmd, "demo", "--rows", "6000", "--partitions", "2", "--epochs", "1", "--quiet",
         "--output", str(tmp_path / "out"), "--dashboard-address", "127.0.0.1:0",
         "--keep-alive"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:  # the first lines: the links, printed when the cluster is up
            lines.append(line)
            if line.startswith("training page:"):
                break
        assert lines and lines[0].startswith("dashboard:"), lines
        page = lines[-1].split(None, 2)[-1].strip()
        assert page.endswith("/individual-training")
        with urllib.request.urlopen(page, timeout=60) as response:  # live during the job
            assert response.status == 200
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert any(ln.startswith("results") for ln in lines), "".join(lines)
        with urllib.request.urlopen(page, timeout=60) as response:  # still up after the job
            assert response.status == 200
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert "stopping the cluster" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_block_store_is_a_checked_config_key():
    cfg = load_config(bundled_config(), {"train": {"block_store": "disk"},
                                         "cluster": {"memory_limit": "2GiB"}})
    assert cfg.train.block_store == "disk" and cfg.cluster.memory_limit == "2GiB"
    with pytest.raises(ConfigError, match=r"train\.block_store: 'ram' is not allowed"):
        load_config(bundled_config(), {"train": {"block_store": "ram"}})


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_pipeline_demo_trains_from_the_workers_disks(tmp_path):
    out = tmp_path / "out"
    proc = _pipeline("demo", "--rows", "20000", "--partitions", "4", "--epochs", "2",
                     "--block-store", "disk", "--memory-limit", "1GiB", "--output", str(out),
                     "--dashboard-address", "127.0.0.1:0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "blocks in disk" in proc.stderr
    acc = float(next(line for line in proc.stdout.splitlines()
                     if line.startswith("test accuracy")).split()[-1])
    assert acc > 0.7


def test_demo_keeps_partitions_near_a_million_rows_when_rows_grow():
    """A 50M-row demo is not 16 files of 3.1M rows (one read task's frame would not fit a few-GiB
    worker); an explicit --partitions always wins."""
    from pipeline.cli.main import _demo_overrides, build_parser

    def partitions(*argv):
        args = build_parser().parse_args(["demo", *argv])
        return _demo_overrides(args)["data"]["generate"].get("partitions")

    assert partitions() is None  # the config's default (16)
    assert partitions("--rows", "1000000") is None
    assert partitions("--rows", "16000000") is None
    assert partitions("--rows", "50000000") == 50
    assert partitions("--rows", "50000001") == 51
    assert partitions("--rows", "50000000", "--partitions", "8") == 8
