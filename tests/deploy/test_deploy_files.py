"""deploy/ without a container engine: every file parses, every job config validates, and the
compose services, Kubernetes manifests and sbatch scripts run the same commands on the same
ports with the same config path."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_specs import (
    CONFIGS,
    DASHBOARD_PORT,
    DEPLOY,
    DOCKER,
    JOB_CONFIG_PATH,
    KUBERNETES,
    ROOT,
    SCHEDULER_PORT,
    SLURM,
    configmap_job_config,
    container_args,
    copy_sources,
    dockerfile_exec,
    dockerfile_instructions,
    entrypoint_script,
    flag,
    kubernetes_document,
    kubernetes_documents,
    load_compose,
    pod_specs,
    service_dockerfile,
    service_job_config,
)

from pipeline.config import load_config

pytestmark = pytest.mark.timeout(60)

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
TOML_FILES = sorted(DEPLOY.rglob("*.toml"))
SBATCH = sorted(SLURM.glob("*.sbatch"))
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")
SCHEDULER_SERVICE = "pipeline-scheduler"  # the Service the operator makes for DaskCluster pipeline


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def _toml(path: Path) -> dict:
    tomllib = pytest.importorskip("tomllib", reason="Python < 3.11 has no tomllib")
    return tomllib.loads(path.read_text())


# --------------------------------------------------------------------------- parsing ---------

def test_deploy_tree_has_every_part():
    expected = ["docker/Dockerfile.cpu", "docker/Dockerfile.gpu", "docker/compose.yaml",
                "kubernetes/kustomization.yaml", "slurm/jobqueue.yaml",
                "slurm/pipeline-cpu.sbatch", "slurm/pipeline-gpu.sbatch", "README.md"]
    assert [p for p in expected if not (DEPLOY / p).is_file()] == []
    assert DOCKERFILES == [DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.gpu"]


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", TOML_FILES, ids=_rel)
def test_toml_parses(path):
    assert _toml(path)


# --------------------------------------------------------------------------- job configs -----

def _job_configs():
    compose = load_compose()
    found = [pytest.param(p, id=_rel(p)) for p in sorted(CONFIGS.iterdir())]
    for name, service in compose["services"].items():
        path = service_job_config(compose, service)
        if path is not None:
            found.append(pytest.param(path, id=f"compose service {name}"))
    found.append(pytest.param(configmap_job_config(), id="kubernetes ConfigMap pipeline-job"))
    return found


@pytest.mark.parametrize("source", _job_configs())
def test_job_config_validates(source):
    cfg = load_config(source)
    assert cfg.cluster.kind in ("local", "address", "kubernetes", "slurm")
    if cfg.cluster.kind == "address":
        assert cfg.cluster.address.endswith(f":{SCHEDULER_PORT}")


def test_configs_cover_every_cluster_kind_and_a_toml():
    kinds = {load_config(p).cluster.kind for p in CONFIGS.iterdir()}
    assert kinds == {"local", "address", "kubernetes", "slurm"}
    assert list(CONFIGS.glob("*.toml"))
    # The TOML twin describes the same job as its YAML file.
    assert load_config(CONFIGS / "local.toml") == load_config(CONFIGS / "local.yaml")


# --------------------------------------------------------------------------- compose ---------

def test_compose_services_run_the_entrypoint_commands():
    compose = load_compose()
    services = compose["services"]
    assert set(services) == {"scheduler", "worker", "job"}

    sched = services["scheduler"]["command"]
    assert sched[:2] == ["dask", "scheduler"]
    assert flag(sched, "--preload") == "analytics.dashboard"
    assert flag(sched, "--port") == str(SCHEDULER_PORT)
    assert flag(sched, "--dashboard-address") == f":{DASHBOARD_PORT}"
    published = {p.rsplit(":", 1)[-1] for p in services["scheduler"]["ports"]}
    assert published == {str(SCHEDULER_PORT), str(DASHBOARD_PORT)}
    health = " ".join(services["scheduler"]["healthcheck"]["test"])
    assert f":{DASHBOARD_PORT}/health" in health

    worker = services["worker"]["command"]
    assert worker[:3] == ["dask", "worker", f"tcp://scheduler:{SCHEDULER_PORT}"]
    assert flag(worker, "--nthreads") == "1"
    assert flag(worker, "--resources") == "CPU=1"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["depends_on"]["scheduler"]["condition"] == "service_healthy"

    job = services["job"]
    assert job["command"] == ["pipeline", "run", JOB_CONFIG_PATH]
    cfg = load_config(service_job_config(compose, job))
    assert cfg.cluster.kind == "address"
    assert cfg.cluster.address == f"tcp://scheduler:{SCHEDULER_PORT}"
    # Workers read what the job writes: both mount the same volume, and the outputs are on it.
    mounts = {m.split(":")[1] for m in job["volumes"]} & {
        m.split(":")[1] for m in services["worker"]["volumes"]}
    assert any(cfg.output.dir.startswith(m) for m in mounts)


def test_compose_services_build_the_cpu_image():
    compose = load_compose()
    for name, service in compose["services"].items():
        assert service_dockerfile(service) == DOCKER / "Dockerfile.cpu", name
        assert service["image"] == "dask-pipeline:cpu", name


@pytest.mark.skipif(shutil.which("check-jsonschema") is None,
                    reason="check-jsonschema (with the vendored compose-spec schema) not installed")
def test_compose_file_matches_the_compose_spec():
    out = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.compose-spec",
                          str(DOCKER / "compose.yaml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------- Dockerfiles -----

def _console_scripts() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}


def test_pipeline_console_script_is_declared():
    pyproject = _toml(ROOT / "pyproject.toml")
    assert pyproject["project"]["scripts"]["pipeline"] == "pipeline.cli:main"
    assert {"pipeline", "dask"} <= _console_scripts()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_entrypoint_and_cmd_exist(dockerfile):
    script = entrypoint_script(dockerfile)
    assert script == DOCKER / "entrypoint.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    # CMD is `job CONFIG`: the entrypoint's shortcut for `pipeline run CONFIG`.
    assert dockerfile_exec(dockerfile, "CMD") == ["job", JOB_CONFIG_PATH]
    words = dict(dockerfile_instructions(dockerfile))
    assert f"{SCHEDULER_PORT}" in words["EXPOSE"] and f"{DASHBOARD_PORT}" in words["EXPOSE"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_only_what_exists_and_is_not_ignored(dockerfile):
    sources = copy_sources(dockerfile)
    assert {"pyproject.toml", "pipeline", "analytics"} <= set(sources)
    assert [s for s in sources if not (ROOT / s).exists() and s != "README.md"] == []
    # pyproject.toml's `readme` must be in the image for `pip install .`.
    pyproject = _toml(ROOT / "pyproject.toml")
    assert pyproject["project"]["readme"] in sources
    # The per-Dockerfile ignore file (BuildKit) lets every COPY source through.
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    assert set(sources) <= allowed


def test_dockerfile_cpu_installs_the_package_on_python_slim():
    instructions = dockerfile_instructions(DOCKER / "Dockerfile.cpu")
    args = dict(instructions)
    assert args["FROM"] == "python:${PYTHON_VERSION}-slim"
    assert "ARG PYTHON_VERSION=3.11" in [f"{w} {a}" for w, a in instructions]
    assert "pip install . " in args["RUN"]


def test_dockerfile_gpu_is_rapids_without_reinstalling_the_gpu_stack():
    instructions = dockerfile_instructions(DOCKER / "Dockerfile.gpu")
    text = [f"{w} {a}" for w, a in instructions]
    assert "ARG RAPIDS_IMAGE=nvcr.io/nvidia/rapidsai/base" in text
    assert any(t.startswith("ARG RAPIDS_TAG=") and t.endswith("-py3.11") for t in text)
    run = dict(instructions)["RUN"]
    assert "pip install -c /tmp/rapids-constraints.txt . " in run
    assert "[gpu]" not in run
    # The base image's own entrypoint still runs, then ours.
    assert dockerfile_exec(DOCKER / "Dockerfile.gpu", "ENTRYPOINT") == [
        "/home/rapids/entrypoint.sh", "pipeline-entrypoint"]


@pytest.fixture
def fake_commands(tmp_path):
    """`dask` and `pipeline` stand-ins on PATH that print the argv they were given."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("dask", "pipeline"):
        exe = bindir / name
        exe.write_text(f'#!/bin/sh\necho {name} "$@"\n')
        exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize(("argv", "runs"), [
    (["scheduler", "--port", "8786"], "dask scheduler --preload analytics.dashboard --port 8786"),
    (["worker", "tcp://scheduler:8786", "--nthreads", "1"],
     "dask worker tcp://scheduler:8786 --nthreads 1"),
    (["job"], f"pipeline run {JOB_CONFIG_PATH}"),
    (["job", "/other.yaml"], "pipeline run /other.yaml"),
    (["dask", "worker", "tcp://scheduler:8786"], "dask worker tcp://scheduler:8786"),
    (["pipeline", "run", JOB_CONFIG_PATH], f"pipeline run {JOB_CONFIG_PATH}"),
    ([], "pipeline --help"),
])
def test_entrypoint_runs(fake_commands, argv, runs):
    out = subprocess.run(["/bin/sh", str(DOCKER / "entrypoint.sh"), *argv], env=fake_commands,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == runs


# --------------------------------------------------------------------------- Kubernetes ------

def test_kubernetes_scheduler_matches_compose():
    cluster = kubernetes_document("DaskCluster", "pipeline")
    args = container_args(cluster, "scheduler")
    compose_sched = load_compose()["services"]["scheduler"]["command"]
    assert args[: len(compose_sched)] == compose_sched  # the same command, then TLS flags
    assert flag(args, "--protocol") == "tls"
    ports = {p["name"]: p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"]}
    assert ports == {"tcp-comm": SCHEDULER_PORT, "http-dashboard": DASHBOARD_PORT}
    (container,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    assert {p["containerPort"] for p in container["ports"]} == {SCHEDULER_PORT, DASHBOARD_PORT}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def _worker_groups():
    return [d for d in kubernetes_documents() if d["kind"] == "DaskWorkerGroup"]


def test_kubernetes_worker_groups_cpu_and_gpu():
    groups = {d["metadata"]["name"]: d for d in _worker_groups()}
    assert set(groups) == {"pipeline-cpu", "pipeline-gpu"}
    compose_worker = load_compose()["services"]["worker"]["command"]
    for name, device in (("pipeline-cpu", "CPU"), ("pipeline-gpu", "GPU")):
        group = groups[name]
        assert group["spec"]["cluster"] == "pipeline"
        args = container_args(group, "worker")
        assert args[:3] == ["dask", "worker", f"tls://{SCHEDULER_SERVICE}:{SCHEDULER_PORT}"]
        assert flag(args, "--nthreads") == flag(compose_worker, "--nthreads")
        assert flag(args, "--resources") == f"{device}=1"
        assert flag(args, "--name") == "$(DASK_WORKER_NAME)"  # the operator maps pods by name
        assert flag(args, "--protocol") == "tls"
    (gpu,) = groups["pipeline-gpu"]["spec"]["worker"]["spec"]["containers"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["image"] == "dask-pipeline:gpu"
    (cpu,) = groups["pipeline-cpu"]["spec"]["worker"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    # The DaskCluster's default worker group is the CPU template, kept at 0 replicas.
    cluster = kubernetes_document("DaskCluster", "pipeline")
    assert cluster["spec"]["worker"]["replicas"] == 0
    assert cluster["spec"]["worker"]["spec"] == groups["pipeline-cpu"]["spec"]["worker"]["spec"]


def test_kubernetes_job_runs_the_configmap_config():
    job = kubernetes_document("Job", "pipeline-job")
    args = container_args(job, "job")
    assert args == ["pipeline", "run", JOB_CONFIG_PATH]
    [(_, pod)] = list(pod_specs(job))
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "pipeline-job"
    assert Path(mounts["config"]) / "job.yaml" == Path(JOB_CONFIG_PATH)
    cfg = load_config(configmap_job_config())
    assert cfg.cluster.address == f"tls://{SCHEDULER_SERVICE}:{SCHEDULER_PORT}"
    assert cfg.output.dir.startswith(mounts["data"])


def _tls_secret_files() -> dict[str, str]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    (generator,) = [g for g in kustomization["secretGenerator"] if g["name"] == "pipeline-tls"]
    return dict(entry.split("=", 1) for entry in generator["files"])


def test_kubernetes_tls_secret_is_mounted_where_the_flags_point():
    keys = set(_tls_secret_files())
    assert keys == {"ca.pem", "tls.crt", "tls.key"}
    cfg = load_config(configmap_job_config()).cluster
    for doc in kubernetes_documents():
        for role, pod in pod_specs(doc):
            (container,) = pod["containers"]
            (tls,) = [v for v in pod["volumes"] if v["name"] == "tls"]
            assert tls["secret"]["secretName"] == "pipeline-tls"
            (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
            files = {str(Path(mount["mountPath"]) / k) for k in keys}
            if role == "job":
                assert {cfg.tls_ca_file, cfg.tls_cert, cfg.tls_key} == files
            else:
                args = [str(a) for a in container["args"]]
                used = {flag(args, f) for f in ("--tls-ca-file", "--tls-cert", "--tls-key")}
                assert used == files, (doc["metadata"]["name"], role)


def test_kubernetes_shared_volume_reaches_job_and_workers():
    for doc in kubernetes_documents():
        for role, pod in pod_specs(doc):
            if role == "scheduler":
                continue
            (data,) = [v for v in pod["volumes"] if v["name"] == "data"]
            assert data["persistentVolumeClaim"]["claimName"] == "pipeline-data"


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    manifests = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    assert kustomization["namespace"] == "pipeline"


@pytest.fixture
def kustomize_dir(tmp_path):
    """deploy/kubernetes copied with fresh certificates from make-certs.sh."""
    target = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, target, ignore=shutil.ignore_patterns("*.pem", "*.crt", "*.key"))
    subprocess.run(["sh", str(target / "make-certs.sh")], check=True, capture_output=True)
    return target


def test_make_certs_writes_a_ca_and_a_certificate_it_signed(kustomize_dir):
    tls = kustomize_dir / "tls"
    for name in ("ca.pem", "tls.crt", "tls.key"):
        assert (tls / name).stat().st_size > 0
    assert (tls / "tls.key").stat().st_mode & 0o077 == 0  # private
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(tls / "ca.pem"),
                             str(tls / "tls.crt")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
def test_kustomize_builds(kustomize_dir):
    out = subprocess.run(["kubectl", "kustomize", str(kustomize_dir)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == sorted([
        "Namespace/pipeline", "PersistentVolumeClaim/pipeline-data", "ConfigMap/pipeline-job",
        "Secret/pipeline-tls", "DaskCluster/pipeline", "DaskWorkerGroup/pipeline-cpu",
        "DaskWorkerGroup/pipeline-gpu", "Job/pipeline-job"])
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert set(secret["data"]) == {"ca.pem", "tls.crt", "tls.key"}
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        "pipeline"}


def test_operator_custom_resources_match_the_crd_schemas():
    dask_kubernetes = pytest.importorskip(
        "dask_kubernetes", reason="needs the deploy extra: pip install -e .[deploy]")
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed")
    crds = (Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm"
            / "dask-kubernetes-operator" / "crds")
    schemas = {}
    for path in crds.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schemas[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    checked = 0
    for doc in kubernetes_documents():
        if doc["apiVersion"] == "kubernetes.dask.org/v1":
            jsonschema.validate(doc, schemas[doc["kind"]])
            checked += 1
    assert checked == 3


# --------------------------------------------------------------------------- SLURM -----------

@pytest.mark.parametrize("script", SBATCH, ids=lambda p: p.name)
def test_sbatch_script_runs_the_same_commands(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    device = "GPU" if "gpu" in script.name else "CPU"
    assert "dask scheduler --preload analytics.dashboard" in text
    assert f"--nthreads 1 --resources {device}=1" in text
    assert 'srun --ntasks="$N_WORKERS"' in text and "dask worker \"$ADDRESS\"" in text
    assert f'PIPELINE_SCHEDULER_PORT:-{SCHEDULER_PORT}' in text
    assert f'PIPELINE_DASHBOARD_PORT:-{DASHBOARD_PORT}' in text
    assert 'pipeline run "$RUN_DIR/job.yaml"' in text
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert any("--gpus-per-task=1" in d for d in directives) == (device == "GPU")
    default_config = text.split('CONFIG="${1:-', 1)[1].split("}", 1)[0]
    assert (ROOT / default_config).is_file()


def test_jobqueue_sections_named_by_the_slurm_config_exist():
    sections = yaml.safe_load((SLURM / "jobqueue.yaml").read_text())["jobqueue"]
    assert set(sections) == {"slurm-cpu", "slurm-gpu"}
    cfg = load_config(CONFIGS / "slurm.yaml")
    assert cfg.cluster.kind == "slurm"
    assert cfg.cluster.jobqueue["config_name"] in sections
    # Named sections must spell out every key: dask-jobqueue only has defaults for `slurm`.
    assert set(sections["slurm-gpu"]) == set(sections["slurm-cpu"])
    assert sections["slurm-cpu"]["worker-extra-args"] == ["--resources", "CPU=1"]
    assert sections["slurm-gpu"]["worker-extra-args"] == ["--resources", "GPU=1"]
    assert sections["slurm-cpu"]["scheduler-options"]["preload"] == ["analytics.dashboard"]
    assert sections["slurm-cpu"]["scheduler-options"]["port"] == SCHEDULER_PORT


@pytest.mark.parametrize(("section", "expected"), [
    ("slurm-cpu", ["#SBATCH -p cpu", "--nworkers 8", "--nthreads 1", "--resources CPU=1"]),
    ("slurm-gpu", ["#SBATCH -p gpu", "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=8",
                   "--nthreads 1", "--resources GPU=1"]),
])
def test_jobqueue_sections_make_slurm_job_scripts(section, expected):
    pytest.importorskip("dask_jobqueue", reason="needs the deploy extra: pip install -e .[deploy]")
    import dask
    from dask_jobqueue import SLURMCluster

    config = yaml.safe_load((SLURM / "jobqueue.yaml").read_text())
    with dask.config.set(config), SLURMCluster(
        config_name=section,
        # The job's own scheduler, but on loopback and free ports for the test.
        scheduler_options={"host": "127.0.0.1", "port": 0, "dashboard_address": ":0"},
    ) as cluster:
        script = cluster.job_script()
    for line in expected:
        assert line in script, (line, script)
    assert f"{sys.executable} -m distributed.cli.dask_worker tcp://127.0.0.1:" in script
