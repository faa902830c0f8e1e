"""The Kubernetes manifests' scheduler and worker args, with certificates from make-certs.sh,
run as OS processes on loopback: the job's ConfigMap config connects over mutual TLS, and a
client without a certificate is refused. No Kubernetes cluster needed."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_specs import (
    DASHBOARD_PORT,
    DOCKER,
    KUBERNETES,
    SCHEDULER_PORT,
    configmap_job_config,
    container_args,
    dockerfile_instructions,
    entrypoint_script,
    kubernetes_document,
)

from pipeline.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TLS_MOUNT = "/etc/dask/tls"


def _env(extra: list[dict]) -> dict[str, str]:
    env = dict(os.environ)
    for word, args in dockerfile_instructions(DOCKER / "Dockerfile.cpu"):
        if word == "ENV":
            env.update(pair.split("=", 1) for pair in args.split())
    env.update({e["name"]: str(e["value"]) for e in extra})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def test_kubernetes_args_make_a_mutual_tls_cluster(tmp_path, processes, free_port):
    from pipeline.cli.job import open_client

    certs = tmp_path / "tls"
    subprocess.run(["sh", str(KUBERNETES / "make-certs.sh"), str(certs)], check=True,
                   capture_output=True)
    sched_port, dash_port = free_port(), free_port()
    service = "pipeline-scheduler"  # the Service of DaskCluster `pipeline`

    def local(word: str, worker_name: str = "") -> str:
        """A pod's view mapped onto this host: Service and ports, mounted Secret, env."""
        word = word.replace(f"{service}:{SCHEDULER_PORT}", f"127.0.0.1:{sched_port}")
        word = word.replace(TLS_MOUNT, str(certs))
        word = word.replace("$(DASK_WORKER_NAME)", worker_name)  # set by the operator
        return {str(SCHEDULER_PORT): str(sched_port), f":{DASHBOARD_PORT}": f"127.0.0.1:{dash_port}",
                ":8788": "127.0.0.1:0", "0.0.0.0": "127.0.0.1"}.get(word, word)

    entry = str(entrypoint_script(DOCKER / "Dockerfile.cpu"))
    cluster = kubernetes_document("DaskCluster", "pipeline")
    (sched_container,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    processes.start("scheduler", [entry, *map(local, container_args(cluster, "scheduler"))],
                    env=_env(sched_container.get("env", [])), cwd=tmp_path)
    processes.wait_for_http(f"http://127.0.0.1:{dash_port}/health")  # the readinessProbe

    group = kubernetes_document("DaskWorkerGroup", "pipeline-cpu")
    names = [f"pipeline-cpu-worker-{i}" for i in range(group["spec"]["worker"]["replicas"])]
    for name in names:
        argv = [entry, *(local(a, name) for a in container_args(group, "worker"))]
        processes.start(name, argv, env=_env([]), cwd=tmp_path)

    # The Job's client: the ConfigMap's cluster section, through the CLI's own open_client.
    section = configmap_job_config()["cluster"]
    section = {k: local(v) if isinstance(v, str) else v for k, v in section.items()}
    cfg = load_config({"cluster": section}).cluster
    assert cfg.address == f"tls://127.0.0.1:{sched_port}"
    with open_client(cfg) as client:
        client.wait_for_workers(len(names), timeout=60)
        workers = client.scheduler_info()["workers"]
        assert all(addr.startswith("tls://127.0.0.1:") for addr in workers)
        assert sorted(w["name"] for w in workers.values()) == names
        assert [w["resources"] for w in workers.values()] == [{"CPU": 1}] * len(names)
        assert client.submit(sum, [1, 2], pure=False).result() == 3

    # Trusting the CA is not enough: a peer without a certificate from it is refused.
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.check_hostname = False  # as Dask's own contexts: one certificate for every pod
    with pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE"):
        with socket.create_connection(("127.0.0.1", sched_port), timeout=10) as raw:
            with context.wrap_socket(raw) as conn:
                conn.recv(1)  # TLS 1.3 sends the refusal after the handshake
