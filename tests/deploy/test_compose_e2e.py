"""compose.yaml's containers, run as OS processes on loopback: no container engine needed.

Every process runs exactly what its container would: the image's ENTRYPOINT script (from
Dockerfile.cpu's COPY) followed by the service's ``command``, with the Dockerfile's ENV and the
service's ``environment``. The only changes are where a container and a shared host differ:
host names (``scheduler``, ``localhost``, ``0.0.0.0``) become 127.0.0.1, ports 8786/8787
become free ports, /config/job.yaml and the /data volume become files under tmp_path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_specs import (
    DASHBOARD_PORT,
    JOB_CONFIG_PATH,
    SCHEDULER_PORT,
    dockerfile_instructions,
    entrypoint_script,
    load_compose,
    service_dockerfile,
    service_job_config,
)

from pipeline.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

N_ROWS = 5000


class Loopback:
    """Rewrites container command lines and configs for processes sharing this host."""

    def __init__(self, scheduler_port: int, dashboard_port: int, data_dir: Path) -> None:
        self.ports = {str(SCHEDULER_PORT): str(scheduler_port),
                      str(DASHBOARD_PORT): str(dashboard_port)}
        self.data_dir = data_dir

    def word(self, word: str) -> str:
        if word in self.ports:  # `--port 8786`
            return self.ports[word]
        # host:port with a container host name, or no host (all interfaces)
        word = re.sub(r"(?<![\w.-])(?:scheduler|localhost|0\.0\.0\.0)?:(8786|8787)\b",
                      lambda m: f"127.0.0.1:{self.ports[m[1]]}", word)
        if word == "0.0.0.0":  # `--host 0.0.0.0`: every interface of the container
            return "127.0.0.1"
        return re.sub(r"^/data(?=/|$)", str(self.data_dir), word)

    def argv(self, argv: list[str]) -> list[str]:
        return [self.word(w) for w in argv]

    def config(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.config(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.config(v) for v in value]
        return self.word(value) if isinstance(value, str) else value


def _image_env(dockerfile: Path) -> dict[str, str]:
    """ENV of the Dockerfile (``ENV K=V K2=V2`` form)."""
    env: dict[str, str] = {}
    for word, args in dockerfile_instructions(dockerfile):
        if word == "ENV":
            for pair in args.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(_image_env(service_dockerfile(service)))
    env.update({k: str(v) for k, v in service.get("environment", {}).items()})
    # The console scripts (`dask`, `pipeline`, `python`) of this interpreter come first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _container_argv(service: dict[str, Any], command: list[str] | None = None) -> list[str]:
    entry = entrypoint_script(service_dockerfile(service))
    return [str(entry), *(service["command"] if command is None else command)]


def _wait_healthy(service: dict[str, Any], loop: Loopback, procs: Any, env: dict[str, str],
                  timeout: float = 90) -> None:
    """Run the service's compose healthcheck (CMD form) until it succeeds."""
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    argv = loop.argv(test[1:])
    deadline = time.monotonic() + timeout
    while subprocess.run(argv, env=env, capture_output=True).returncode != 0:
        procs.check_running()
        assert time.monotonic() < deadline, f"{argv} never succeeded\n{procs.logs()}"
        time.sleep(0.5)


def _wait_for_workers(address: str, n: int, procs: Any, timeout: float = 90) -> list[dict]:
    from distributed import Client

    with Client(address, timeout="30s", set_as_default=False) as client:
        deadline = time.monotonic() + timeout
        while len(client.scheduler_info()["workers"]) < n:
            procs.check_running()
            assert time.monotonic() < deadline, f"fewer than {n} workers\n{procs.logs()}"
            time.sleep(0.2)
        return list(client.scheduler_info()["workers"].values())


def test_compose_cluster_runs_the_job_and_predict(tmp_path, processes, free_port):
    from analytics.dashboard import PAGE
    from pipeline.datasets import write_demo_dataset

    compose = load_compose()
    services = compose["services"]
    sched_port, dash_port = free_port(), free_port()
    loop = Loopback(sched_port, dash_port, tmp_path / "volume")
    address = f"tcp://127.0.0.1:{sched_port}"
    dashboard = f"http://127.0.0.1:{dash_port}"

    # The dataset on the shared volume, as a tiny stand-in for the generated one.
    data_path = loop.word("/data/input")
    write_demo_dataset(data_path, n_rows=N_ROWS, n_partitions=4)

    # The job's config as compose mounts it, rewritten for loopback; tiny training.
    job = services["job"]
    source = yaml.safe_load(service_job_config(compose, job).read_text())
    config = loop.config(source)
    config["data"]["path"] = data_path
    config["train"]["max_iter"] = 2
    config_path = tmp_path / "job.yaml"
    config_path.write_text(yaml.safe_dump(config))
    cfg = load_config(config_path)
    assert cfg.cluster.address == address

    # scheduler, then its healthcheck, then the workers (depends_on: service_healthy)
    scheduler = services["scheduler"]
    env = _environment(scheduler)
    processes.start("scheduler", loop.argv(_container_argv(scheduler)), env=env, cwd=tmp_path)
    _wait_healthy(scheduler, loop, processes, env)

    worker = services["worker"]
    for i in range(worker["deploy"]["replicas"]):
        processes.start(f"worker-{i}", loop.argv(_container_argv(worker)),
                        env=_environment(worker), cwd=tmp_path)
    workers = _wait_for_workers(address, worker["deploy"]["replicas"], processes)
    assert [w["resources"] for w in workers] == [{"CPU": 1}] * len(workers)
    assert all(w["host"] == "127.0.0.1" for w in workers)

    # The job container: `pipeline run /config/job.yaml`, the config mounted at that path.
    assert JOB_CONFIG_PATH in job["command"]
    argv = [str(config_path) if w == JOB_CONFIG_PATH else w
            for w in loop.argv(_container_argv(job))]
    run = subprocess.run(argv, env=_environment(job), cwd=tmp_path, capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{processes.logs()}"
    outdir = Path(cfg.output.dir)
    model_dir = outdir / cfg.output.model
    assert outdir.is_relative_to(tmp_path)
    assert model_dir.is_dir() and any(model_dir.iterdir())
    assert (outdir / cfg.output.report).is_file()
    assert (outdir / cfg.output.profile).is_file()
    assert "test accuracy" in run.stdout

    # The scheduler serves Prometheus metrics and the preloaded training page.
    with urllib.request.urlopen(f"{dashboard}/metrics", timeout=10) as r:
        assert b"dask_scheduler_workers" in r.read()
    with urllib.request.urlopen(f"{dashboard}{PAGE}", timeout=30) as r:
        assert r.status == 200

    # Scoring in the same container image: `pipeline predict MODEL DATA OUT`.
    predictions = tmp_path / "volume" / "output" / "predictions"
    argv = _container_argv(job, ["pipeline", "predict", str(model_dir), data_path,
                                 str(predictions)])
    predict = subprocess.run(argv, env=_environment(job), cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert predict.returncode == 0, f"{predict.stdout}\n{predict.stderr}"
    import pyarrow.parquet as pq

    table = pq.read_table(predictions)
    assert table.num_rows == N_ROWS
    assert table.column_names == ["prediction"]
