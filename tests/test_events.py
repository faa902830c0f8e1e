"""The training event contract (pipeline.events): emitters, and the monitor installed on first use."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from pipeline import events

# A fit on a fresh in-process cluster whose scheduler started without analytics: the page and
# /metrics must appear with no extra call (analytics is found through the entry point).
FIT_SCRIPT = textwrap.dedent("""
    import json, sys, urllib.error, urllib.request
    import numpy as np
    from distributed import Client, LocalCluster
    import pipeline as pl
    from pipeline.events import ensure_monitor

    def get(url):
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""

    if __name__ == "__main__":
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            base = f"http://127.0.0.1:{cluster.scheduler.http_server.port}"
            out = {"analytics_before": "analytics" in sys.modules,
                   "page_before": get(base + "/individual-training")[0],
                   "metrics_before": "pipeline_rounds_total" in get(base + "/metrics")[1]}
            rng = np.random.default_rng(0)
            X = rng.normal(size=(600, 3)).astype("float32")
            y = (X[:, 0] > 0).astype(int)
            model = pl.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, batch_size=200,
                                     random_state=0)
            model.fit(X, y)
            status, body = get(base + "/individual-training")
            out["page_after"] = status
            out["page_is_bokeh"] = "Bokeh.embed.embed_items" in body
            text = get(base + "/metrics")[1]
            out["rounds_metric"] = [l for l in text.splitlines()
                                    if l.startswith("pipeline_rounds_total{")]
            out["n_rounds"] = len(model.loss_curve_) * 3
            apps = len(cluster.scheduler.http_application.applications)
            out["ensure_again"] = ensure_monitor(client)
            model.fit(X, y)
            out["apps_unchanged"] = apps == len(cluster.scheduler.http_application.applications)
            print(json.dumps(out))
""")


def test_emitters_publish_the_shapes_the_monitor_reads(client):
    from analytics.monitor import TrainingMonitor

    run = f"test-{uuid.uuid4().hex[:8]}"
    events.emit_start(client, run, config={"max_iter": 2}, n_partitions=2, n_samples=100,
                      n_features=3, n_params=21, sync="gradient", estimator="MLPClassifier")
    events.emit_round(client, run, round=1, epoch=1, loss=0.5, samples=100, round_seconds=0.1,
                      samples_per_s=1000.0, partition_seconds=[0.04, 0.05],
                      partition_workers=["tcp://a:1", "tcp://b:2"])
    events.emit_retry(client, run, round=2, reason="worker lost", action="recomputed",
                      attempt=1, recovery_seconds=0.2)
    record = {"epoch": 1, "loss": 0.4, "validation_score": 0.75, "samples_per_s": 900.0,
              "seconds": 0.11, "learning_rate": 1e-3, "rounds": 1, "round_seconds_median": 0.1}
    events.emit_epoch(client, run, round=1, **record)  # how train() passes a history record
    events.emit_end(client, run, status="finished", n_iter=1, rounds=2, seconds=0.3)

    mine = []
    for _ in range(100):  # events reach the scheduler through the batched stream
        mine = [m for _, m in client.get_events(events.TOPIC) if m.get("run") == run]
        if len(mine) == 5:
            break
        time.sleep(0.05)
    assert [m["event"] for m in mine] == ["start", "round", "retry", "epoch", "end"]
    assert {m["event"] for m in mine} <= events.EVENTS
    for msg in mine:
        shape = {"start": events.StartEvent, "round": events.RoundEvent,
                 "epoch": events.EpochEvent, "retry": events.RetryEvent,
                 "end": events.EndEvent}[msg["event"]]
        assert set(msg) <= set(shape.__annotations__), msg["event"]
        assert set(msg) >= set(shape.__required_keys__), msg["event"]

    monitor = TrainingMonitor()
    for msg in mine:
        monitor.record(msg)
    summary = monitor.runs[run].summary()
    assert summary["status"] == "finished"
    assert summary["validation_score"] == record["validation_score"]
    assert summary["retries"] == 1 and summary["rounds"] == 2
    assert summary["samples_per_s"] == 1000.0


def test_emitters_never_raise():
    class Closed:
        def log_event(self, topic, msg):
            raise RuntimeError("client closed")

    events.emit_end(Closed(), "r", status="failed", n_iter=0, rounds=0, seconds=0.0,
                    error="x")
    events.emit_round(object(), "r", round=1, epoch=1, loss=1.0, samples=1, round_seconds=1.0,
                      samples_per_s=None, partition_seconds=[], partition_workers=[])


def test_the_outbox_batches_events_that_come_close_together_and_keeps_their_order():
    """Events added within ``every`` seconds of the last call (or of the outbox's making) wait
    for the next call or the flush: a burst (the epochs a mesh segment ran ahead) goes in one
    ``emit_many`` call, a few as one ``log_event`` each; each keeps the time it was added;
    nothing is lost or reordered."""

    class Recording:
        def __init__(self):
            self.calls = []

        def run_on_scheduler(self, fn, topic, msgs):
            self.calls.append([m["n"] for m in msgs])

        def log_event(self, topic, msg):
            self.calls.append(msg["n"])

    client = Recording()
    box = events.Outbox(client, every=60.0)
    before = time.time()
    for n in range(5):
        box.add({"event": "epoch", "n": n})
    assert client.calls == []  # within the minute: held
    assert all(before <= m["time"] <= time.time() for m in box.pending)
    box.flush()
    assert client.calls == [[0, 1, 2, 3, 4]]  # one call for the burst, in order
    box.add({"n": 5})
    box.add({"n": 6})
    box.flush()
    assert client.calls[1:] == [5, 6]  # two events: a log_event each
    box.flush()  # nothing pending: no call
    assert len(client.calls) == 3
    quick = events.Outbox(client, every=0.0)  # no batching: a call per event, at once
    quick.add({"n": 7})
    assert client.calls[3:] == [7]
    for n in (8, 9, 10):
        box.add({"n": n})

    class Ends(Recording):  # the end event has no "n": its status stands for it
        def run_on_scheduler(self, fn, topic, msgs):
            self.calls.append([m.get("n", m.get("status")) for m in msgs])

    ends = Ends()
    box.client = ends
    events.emit_end(ends, "r", status="finished", n_iter=3, rounds=3, seconds=0.1, outbox=box)
    assert ends.calls == [[8, 9, 10, "finished"]]  # the end after the pending ones, one call
    assert box.pending == []


def test_an_event_logged_right_after_subscribing_is_relayed(client, monkeypatch):
    # subscribe_topic travels on the batched stream and log_event on an RPC of its own; delay
    # the stream, as a loaded machine does, and the first events of a fit would be lost
    send = client._send_to_scheduler

    def late(msg):
        client.loop.add_callback(lambda: client.loop.call_later(0.5, send, msg))

    seen = []
    monkeypatch.setattr(client, "_send_to_scheduler", late)
    events.subscribe(client, lambda event: seen.append(event[1]))
    monkeypatch.undo()
    try:
        run = f"probe-{uuid.uuid4().hex}"
        events.emit_end(client, run, status="finished", n_iter=0, rounds=0, seconds=0.0,
                        error=None)
        deadline = time.monotonic() + 10
        while not any(m.get("run") == run for m in seen) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(m.get("run") == run for m in seen)
    finally:
        client.unsubscribe_topic(events.TOPIC)


def test_the_topic_has_one_owner():
    import analytics.monitor
    import pipeline.cli.progress

    assert analytics.monitor.TOPIC is events.TOPIC
    assert pipeline.cli.progress.TOPIC is events.TOPIC


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_fit_shows_on_the_dashboard_with_no_extra_call(tmp_path, monitor_entry_points,
                                                       subprocess_env):
    script = tmp_path / "fit.py"
    script.write_text(FIT_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=170, cwd=tmp_path, env=subprocess_env(monitor_entry_points))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["analytics_before"]
    assert out["page_before"] == 404 and not out["metrics_before"]  # as on today's main
    assert out["page_after"] == 200 and out["page_is_bokeh"]
    assert len(out["rounds_metric"]) == 1 and float(out["rounds_metric"][0].split()[-1]) > 0
    assert out["ensure_again"] is True and out["apps_unchanged"]
    assert "not shown on the dashboard" not in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_one_warning_when_the_scheduler_cannot_install_the_monitor(
        tmp_path, monitor_entry_points, subprocess_env, caplog):
    from distributed import Client

    # The scheduler process cannot import analytics (as on a scheduler without this package).
    shadow = tmp_path / "shadow" / "analytics"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('analytics is not installed here')\n")
    sched_file = tmp_path / "scheduler.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
        env=subprocess_env(shadow.parent), cwd=tmp_path,  # `-m` puts the cwd first on sys.path
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sys.path.insert(0, str(monitor_entry_points))
    try:
        for _ in range(600):
            if sched_file.exists():
                break
            time.sleep(0.1)
        with Client(scheduler_file=str(sched_file), timeout=60) as client:
            with caplog.at_level(logging.WARNING, logger="pipeline.events"):
                assert events.ensure_monitor(client) is False
                assert events.ensure_monitor(client) is False
        warnings = [r for r in caplog.records if r.name == "pipeline.events"]
        assert len(warnings) == 1
        assert "--preload analytics.dashboard" in warnings[0].getMessage()
    finally:
        sys.path.remove(str(monitor_entry_points))
        proc.terminate()
        proc.wait(30)
