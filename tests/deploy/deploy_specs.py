"""Read the files under ``deploy/`` the way the tools that consume them do.

compose.yaml as Docker Compose reads it (YAML merge keys, ``configs`` mounted at a target path,
the image's ENTRYPOINT in front of a service's ``command``), Dockerfiles as the builder reads
them (line continuations, JSON-form ENTRYPOINT/CMD, COPY sources), the Kubernetes manifests as
``kubectl apply -k`` reads them, the sbatch scripts as lines of shell.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
KUBERNETES = DEPLOY / "kubernetes"
SLURM = DEPLOY / "slurm"
CONFIGS = DEPLOY / "configs"

# Where the job config lives inside every container, in compose and on Kubernetes.
JOB_CONFIG_PATH = "/config/job.yaml"
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787


def load_compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # a comment line inside a continuation is dropped too, as Docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def exec_form(arguments: str) -> list[str]:
    """The argv of an ENTRYPOINT/CMD: JSON (exec form) or a shell string (``sh -c``)."""
    if arguments.startswith("["):
        return list(json.loads(arguments))
    return ["/bin/sh", "-c", arguments]


def dockerfile_exec(path: Path, instruction: str) -> list[str]:
    values = [args for word, args in dockerfile_instructions(path) if word == instruction]
    assert values, f"{path.name} has no {instruction}"
    return exec_form(values[-1])  # the last one wins


def copied_files(path: Path) -> dict[str, Path]:
    """Image path -> repository path for every COPY of a single file to an absolute path."""
    out: dict[str, Path] = {}
    for word, args in dockerfile_instructions(path):
        if word != "COPY":
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        *sources, dest = parts
        if len(sources) == 1 and dest.startswith("/") and not dest.endswith("/"):
            out[dest] = ROOT / sources[0]
    return out


def copy_sources(path: Path) -> list[str]:
    """Every source path of every COPY, relative to the build context (the repository root)."""
    sources: list[str] = []
    for word, args in dockerfile_instructions(path):
        if word == "COPY":
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            sources.extend(parts[:-1])
    return sources


def entrypoint_script(path: Path, image_path_dirs: tuple[str, ...] = ("/usr/local/bin",)) -> Path:
    """The repository file that the image runs as its (own) entrypoint."""
    entry = dockerfile_exec(path, "ENTRYPOINT")
    files = copied_files(path)
    for word in entry:
        candidates = [word] if word.startswith("/") else [f"{d}/{word}" for d in image_path_dirs]
        for c in candidates:
            if c in files:
                return files[c]
    raise AssertionError(f"{path.name}: no ENTRYPOINT word is a file the Dockerfile copies")


def service_dockerfile(service: dict[str, Any]) -> Path:
    build = service["build"]
    return (DOCKER / build["context"] / build["dockerfile"]).resolve()


def service_job_config(compose: dict[str, Any], service: dict[str, Any]) -> Path | None:
    """The host file a service sees at /config/job.yaml (compose ``configs``), if any."""
    for ref in service.get("configs", []):
        if ref.get("target") == JOB_CONFIG_PATH:
            return (DOCKER / compose["configs"][ref["source"]]["file"]).resolve()
    return None


def kubernetes_documents() -> list[dict[str, Any]]:
    """Every manifest ``kustomization.yaml`` lists, in order."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d)
    return docs


def kubernetes_document(kind: str, name: str) -> dict[str, Any]:
    for doc in kubernetes_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes")


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(role, pod spec)`` of a DaskCluster (scheduler, default worker group), a
    DaskWorkerGroup or a Job."""
    spec = doc.get("spec", {})
    if doc["kind"] == "DaskCluster":
        yield "scheduler", spec["scheduler"]["spec"]
        yield "worker", spec["worker"]["spec"]
    elif doc["kind"] == "DaskWorkerGroup":
        yield "worker", spec["worker"]["spec"]
    elif doc["kind"] == "Job":
        yield "job", spec["template"]["spec"]


def container_args(doc: dict[str, Any], role: str) -> list[str]:
    for r, pod in pod_specs(doc):
        if r == role:
            (container,) = pod["containers"]
            return [str(a) for a in container["args"]]
    raise AssertionError(f"{doc['kind']} {doc['metadata']['name']} has no {role} pod")


def configmap_job_config() -> dict[str, Any]:
    cm = kubernetes_document("ConfigMap", "pipeline-job")
    return yaml.safe_load(cm["data"]["job.yaml"])


def flag(argv: list[str], name: str) -> str:
    """The value after ``name`` in an argv (``--port 8786``)."""
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]
