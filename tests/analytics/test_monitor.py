"""Live training monitor: plugin state, the dashboard page and Prometheus, over real HTTP."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

# Before any scheduler of this process starts: the page must be in `applications` by then.
import analytics.dashboard
from analytics.monitor import PLUGIN_NAME, TOPIC, TrainingMonitor, install

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WORKERS = ("tcp://127.0.0.1:40001", "tcp://127.0.0.1:40002")


def fake_run(
    run: str, *, epochs: int = 2, rounds_per_epoch: int = 3, n_partitions: int = 4,
    status: str | None = "finished", retry_at: int | None = None, t0: float | None = None,
) -> Iterator[dict[str, Any]]:
    """``pipeline.train`` events of a short run, per the contract in docs/architecture.md.

    Rounds count from 1, as ``pipeline.train`` numbers them. Partition 1 is a straggler (3x the
    others); ``status=None`` leaves the run running.
    """
    t = time.time() if t0 is None else t0
    yield {
        "event": "start", "run": run, "time": t, "config": {"hidden_layer_sizes": [8]},
        "n_partitions": n_partitions, "n_samples": 4000, "n_features": 5, "n_params": 57,
        "sync": True, "estimator": "MLPClassifier",
    }
    rnd = 1
    for epoch in range(epochs):
        for _ in range(rounds_per_epoch):
            if retry_at == rnd:
                yield {"event": "retry", "run": run, "time": t, "round": rnd,
                       "reason": "worker lost"}
            secs = [0.01 * (1 + 0.1 * p) for p in range(n_partitions)]
            secs[1] *= 3
            t += 0.05
            yield {
                "event": "round", "run": run, "time": t, "round": rnd, "epoch": epoch,
                "loss": 1.0 / rnd, "samples": 1000, "round_seconds": 0.05,
                "samples_per_s": 20000.0 + rnd, "partition_seconds": secs,
                "partition_workers": [WORKERS[p % 2] for p in range(n_partitions)],
            }
            rnd += 1
        yield {
            "event": "epoch", "run": run, "time": t, "epoch": epoch, "round": rnd - 1,
            "loss": 1.0 / (rnd - 1), "validation_score": 0.5 + 0.1 * epoch,
            "samples_per_s": 20000.0, "learning_rate": 1e-3,
        }
    if status is not None:
        yield {
            "event": "end", "run": run, "time": t, "status": status, "n_iter": epochs,
            "rounds": rnd - 1, "seconds": 0.05 * (rnd - 1),
            "error": "RuntimeError('boom')" if status == "failed" else None,
        }


def send(client: Any, events: Iterator[dict[str, Any]]) -> None:
    for msg in events:
        client.log_event(TOPIC, msg)


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


def metrics(base: str) -> dict[str, float]:
    """The ``pipeline_*`` samples of ``/metrics`` as ``{'name{labels}': value}``."""
    _, text = get(base + "/metrics")
    out = {}
    for line in text.splitlines():
        if line.startswith("pipeline_"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing; CI installs it with `apt-get install -y chromium`")
        pytest.skip("the browser check needs Debian's chromium (apt-get install chromium); CI has it")


# -- plugin state, no cluster -----------------------------------------------------------------
@pytest.mark.timeout(10)
def test_monitor_folds_events_and_keeps_last_runs():
    monitor = TrainingMonitor(max_runs=2)
    for i, status in enumerate(["finished", "failed", "stopped_early"]):
        for msg in fake_run(f"run-{i}", status=status, retry_at=1 if i == 2 else None):
            monitor.record(msg)
    monitor.record({"event": "round", "run": "run-2"})  # malformed: ignored, not raised
    monitor.record({"no": "event"})

    assert list(monitor.runs) == ["run-1", "run-2"]  # run-0 evicted
    assert monitor.runs_total == 3
    assert monitor.failures_total == 1
    assert monitor.retries_total == 1
    run = monitor.latest()
    assert run is not None and run.run == "run-2"
    assert run.status == "stopped_early"
    assert run.n_round_events == 6 and run.rounds_done == 6 and len(run.epochs) == 2
    assert run.partition_round == 6
    assert run.partition_workers == [WORKERS[0], WORKERS[1]] * 2
    s = run.summary()
    assert s["epoch"] == 1 and s["round"] == 6 and s["retries"] == 1
    assert s["loss"] == pytest.approx(1 / 6)
    assert s["best_validation_score"] == pytest.approx(0.6)
    assert s["estimator"] == "MLPClassifier"


@pytest.mark.timeout(10)
def test_run_keeps_a_bounded_number_of_rounds():
    monitor = TrainingMonitor(max_rounds=4)
    for msg in fake_run("r", epochs=3, rounds_per_epoch=5):
        monitor.record(msg)
    run = monitor.runs["r"]
    assert run.n_round_events == 15
    assert [r["round"] for r in run.rounds] == [12, 13, 14, 15]


@pytest.mark.timeout(10)
def test_events_without_start_still_make_a_run():
    monitor = TrainingMonitor()
    monitor.record({"event": "epoch", "run": "late", "epoch": 3, "round": 40, "loss": 0.2,
                    "validation_score": None, "samples_per_s": 1.0, "learning_rate": 0.1})
    assert monitor.runs["late"].summary()["epoch"] == 3


def test_page_is_registered_for_the_dashboard():
    # `applications` is internal to distributed; this breaks loudly if it moves.
    from distributed.dashboard.scheduler import applications

    assert applications[analytics.dashboard.PAGE] is analytics.dashboard.training_doc
    assert "individual" in analytics.dashboard.PAGE  # listed under "More..."


# -- in-process cluster, real HTTP --------------------------------------------------------------
@pytest.fixture(scope="module")
def dashboard():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                     dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
    ):
        install(client)
        yield client, f"http://127.0.0.1:{cluster.scheduler.http_server.port}"


@pytest.mark.timeout(60)
def test_page_and_metrics_follow_a_run(dashboard):
    client, base = dashboard
    status, body = get(base + analytics.dashboard.PAGE)
    assert status == 200
    assert "Bokeh.embed.embed_items" in body and "docs_json" in body
    # Linked from the dashboard's "More..." menu.
    assert 'href="individual-training"' in get(base + "/status")[1]

    before = metrics(base)
    runs_before = before.get("pipeline_runs_total", 0.0)
    events = list(fake_run("fit-live", epochs=2, rounds_per_epoch=3, status=None, retry_at=3))
    send(client, events[:3])  # start, round 1, round 2
    m = metrics(base)
    assert m["pipeline_runs_total"] == runs_before + 1
    assert m['pipeline_round{run="fit-live"}'] == 2
    assert m['pipeline_rounds_total{run="fit-live"}'] == 2
    assert m['pipeline_loss{run="fit-live"}'] == pytest.approx(0.5)
    assert m['pipeline_samples_per_second{run="fit-live"}'] == pytest.approx(20002)
    assert m['pipeline_round_seconds{run="fit-live"}'] == pytest.approx(0.05)
    assert 'pipeline_validation_score{run="fit-live"}' not in m  # no epoch yet

    send(client, events[3:])
    m = metrics(base)
    assert m['pipeline_round{run="fit-live"}'] == 6
    assert m['pipeline_epoch{run="fit-live"}'] == 1
    assert m['pipeline_rounds_total{run="fit-live"}'] == 6
    assert m['pipeline_retries_total{run="fit-live"}'] == 1
    assert m['pipeline_validation_score{run="fit-live"}'] == pytest.approx(0.6)

    failures = m["pipeline_failures_total"]
    send(client, [{"event": "end", "run": "fit-live", "time": time.time(), "status": "failed",
                   "n_iter": 2, "rounds": 6, "seconds": 0.3, "error": "boom"}])
    assert metrics(base)["pipeline_failures_total"] == failures + 1

    # The page renders a document for a run in any state.
    assert get(base + analytics.dashboard.PAGE)[0] == 200


@pytest.mark.timeout(60)
def test_run_label_cardinality_is_bounded(dashboard):
    client, base = dashboard
    monitor = client.cluster.scheduler.plugins[PLUGIN_NAME]
    for i in range(monitor.max_runs + 3):
        send(client, fake_run(f"fit-many-{i}", epochs=1, rounds_per_epoch=1))
    # /metrics serves the process-wide registry: other in-process schedulers' runs show too
    runs = {k.split('"')[1] for k in metrics(base)
            if k.startswith('pipeline_round{run="fit-many-')}
    assert len(runs) == monitor.max_runs
    assert f"fit-many-{monitor.max_runs + 2}" in runs and "fit-many-0" not in runs


@pytest.mark.timeout(60)
def test_install_is_idempotent_and_keeps_history(dashboard):
    client, _ = dashboard
    scheduler = client.cluster.scheduler
    monitor = scheduler.plugins[PLUGIN_NAME]
    n_apps = len(scheduler.http_application.applications)
    install(client)
    assert scheduler.plugins[PLUGIN_NAME] is monitor
    assert len(scheduler.http_application.applications) == n_apps  # page not added twice


def _pixel_stddev(png: bytes) -> float:
    from PIL import Image, ImageStat  # a bokeh dependency

    return max(ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L")).stddev)


@pytest.mark.timeout(90)
def test_page_draws_and_updates_in_chromium(dashboard, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    client, base = dashboard
    events = list(fake_run("fit-browser", epochs=3, rounds_per_epoch=4, status=None))
    send(client, events[:8])
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
            headless=True, viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            page.goto(base + analytics.dashboard.PAGE)
            page.wait_for_selector("canvas", state="attached", timeout=30_000)
            header = re.compile(r"fit-browser · MLPClassifier · 4 partitions")
            page.get_by_text(header).filter(visible=True).first.wait_for(timeout=30_000)
            # Live: later events reach the open page through the periodic callback.
            send(client, events[8:])
            send(client, [{"event": "end", "run": "fit-browser", "time": time.time(),
                           "status": "finished", "n_iter": 3, "rounds": 12, "seconds": 1.0,
                           "error": None}])
            finished = page.get_by_text("finished", exact=True).filter(visible=True)
            finished.first.wait_for(timeout=10_000)  # the status card
            row = page.locator("tr", has_text="fit-browser").filter(has_text="finished")
            row.first.wait_for(timeout=10_000)  # the runs table
            assert "\t12\t" in row.first.inner_text()  # rounds done
            page.wait_for_timeout(700)  # one more redraw of the plots
            png = page.screenshot(full_page=True)
        finally:
            context.close()
    assert _pixel_stddev(png) > 10, "screenshot is blank"


# -- a scheduler in another process: `dask scheduler` -------------------------------------------
def _start_scheduler(tmp_path, *extra: str) -> subprocess.Popen:
    file = tmp_path / "scheduler.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(file),
         "--no-show", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    deadline = time.monotonic() + 40
    while not file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"dask scheduler did not start: {proc.stderr.read().decode()}")
        time.sleep(0.1)
    return proc


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["preload", "install"])
def test_dask_scheduler_cli(tmp_path, how):
    """``--preload analytics.dashboard`` at start, or ``install(client)`` on a running one."""
    from distributed import Client

    extra = ("--preload", "analytics.dashboard") if how == "preload" else ()
    proc = _start_scheduler(tmp_path, *extra)
    try:
        with Client(scheduler_file=str(tmp_path / "scheduler.json"), timeout=30) as client:
            port = client.scheduler_info()["services"]["dashboard"]
            base = f"http://127.0.0.1:{port}"
            if how == "preload":
                # dask_setup started the monitor: a run logged before anyone installs anything.
                send(client, fake_run("fit-cli", epochs=1, rounds_per_epoch=2))
            else:
                with pytest.raises(urllib.error.HTTPError):
                    get(base + analytics.dashboard.PAGE)
                send(client, fake_run("fit-cli", epochs=1, rounds_per_epoch=2))
                install(client)  # replays the events the scheduler still holds
            status, body = get(base + analytics.dashboard.PAGE)
            assert status == 200 and "Bokeh.embed.embed_items" in body
            assert 'href="individual-training"' in get(base + "/status")[1]
            m = metrics(base)
            assert m['pipeline_rounds_total{run="fit-cli"}'] == 2
            assert m["pipeline_runs_total"] == 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_validation_plot_is_per_epoch():
    from analytics.dashboard import TrainingDashboard

    view = TrainingDashboard(TrainingMonitor())
    assert view.val_fig.xaxis[0].axis_label == "epoch"
    assert {r.glyph.x for r in view.val_fig.renderers} == {"epoch"}
    assert view.loss_fig.xaxis[0].axis_label == "round"
