"""Real multi-process Dask clusters for the reliability tests and the fault matrix.

The scheduler and every worker are separate processes started with the ``dask`` command-line
entry points, each in its own session (process group), so a fault is a real ``SIGKILL`` of a real
process and teardown kills every group by pid, never by name. Every wait is bounded.

Also here: a throw-away certificate authority for TLS clusters, fault injectors that make one
worker kill itself at a chosen point of the algorithm, and the training data the tests share.
Used by ``tests/reliability/conftest.py`` and ``benchmarks/fault_matrix.py``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.events import TOPIC

# A SIGKILLed worker is noticed at once (its connection closes); a hung one only after the TTL.
SCHEDULER_ENV = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "5s"}
# One BLAS thread per worker process (see TECH_NOTES: Costs).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
START_TIMEOUT = 60.0  # seconds; a cold start of a dask process is ~2 s on the 2-core VM


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str,
              interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
    """Send ``sig`` to ``proc``'s process group (it leads its own session) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@dataclass
class TLSFiles:
    """PEM files of a throw-away CA and one certificate/key pair signed by it."""

    ca_file: Path
    cert: Path
    key: Path

    def cli_flags(self) -> list[str]:
        return ["--tls-ca-file", str(self.ca_file), "--tls-cert", str(self.cert),
                "--tls-key", str(self.key)]

    def security(self) -> Any:
        from distributed import Security

        return Security(tls_ca_file=str(self.ca_file), tls_client_cert=str(self.cert),
                        tls_client_key=str(self.key), require_encryption=True)


def make_tls_files(directory: Path, name: str = "node") -> TLSFiles:
    """A fresh CA and a node certificate for 127.0.0.1/localhost (server and client use)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(directory / f"{name}-ca.pem", directory / f"{name}.pem",
                     directory / f"{name}.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


@dataclass
class ProcCluster:
    """A scheduler and workers, each a ``dask`` CLI process in its own process group.

    Parameters
    ----------
    workdir : Path
        Scheduler file, worker directories and every process's log go here.
    tls : TLSFiles, optional
        Start everything with ``--protocol tls`` and these files.
    scheduler_env : dict
        Extra environment of the scheduler process (``DASK_...`` config).
    """

    workdir: Path
    tls: TLSFiles | None = None
    scheduler_env: dict[str, str] = field(default_factory=dict)
    scheduler: subprocess.Popen | None = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    address: str = ""
    _count: int = 0

    def _spawn(self, argv: list[str], name: str, env: dict[str, str]) -> subprocess.Popen:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"{name}.log", "ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", *argv], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._env(env),
                start_new_session=True, cwd=self.workdir,
            )
        finally:
            log.close()

    @staticmethod
    def _env(extra: dict[str, str]) -> dict[str, str]:
        # Workers import this module for the fault injectors (client.run ships them by name).
        here = str(Path(__file__).resolve().parent)
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, **WORKER_ENV, "PYTHONPATH": path, **extra}

    def start_scheduler(self) -> str:
        """Start the scheduler on 127.0.0.1 (port chosen by the OS, read back from the
        scheduler file, so there is no race for a port) and return its address."""
        sched_file = self.workdir / "scheduler.json"
        sched_file.unlink(missing_ok=True)
        argv = ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                "--no-dashboard", "--scheduler-file", str(sched_file)]
        if self.tls is not None:
            argv += ["--protocol", "tls", *self.tls.cli_flags()]
        self.scheduler = self._spawn(argv, "scheduler", {**SCHEDULER_ENV, **self.scheduler_env})

        def ready() -> str | None:
            if self.scheduler is not None and self.scheduler.poll() is not None:
                raise RuntimeError(f"scheduler exited early; see {self.workdir}/scheduler.log")
            try:
                return json.loads(sched_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                return None

        self.address = _wait_for(ready, START_TIMEOUT, "the scheduler file")
        return self.address

    def add_worker(self, *, nanny: bool = False, death_timeout: float = 15.0) -> str:
        """Start one single-threaded worker; returns its name (wait for it with a client)."""
        self._count += 1
        name = f"w{self._count}"
        argv = ["distributed.cli.dask_worker", self.address, "--name", name, "--nthreads", "1",
                "--nanny" if nanny else "--no-nanny", "--death-timeout", str(death_timeout),
                "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0",
                "--local-directory", str(self.workdir / name)]
        if self.tls is not None:
            argv += ["--protocol", "tls", *self.tls.cli_flags()]
        self.workers[name] = self._spawn(argv, name, {})
        return name

    def client(self, *, n_workers: int = 0, timeout: float = START_TIMEOUT) -> Any:
        from distributed import Client

        security = self.tls.security() if self.tls is not None else None
        c = Client(self.address, security=security, timeout=f"{timeout}s")
        if n_workers:
            c.wait_for_workers(n_workers, timeout=timeout)
        return c

    def kill_worker(self, name: str) -> float:
        """SIGKILL the worker's process group (nanny and worker); returns the time of the kill."""
        t = time.time()
        kill_group(self.workers.pop(name))
        return t

    def wait_for_log(self, process: str, pattern: str, timeout: float = 15.0) -> str:
        """The first line of ``process``'s log (``"scheduler"``, ``"w1"``...) that matches the
        regular expression ``pattern``."""
        import re

        log = self.workdir / f"{process}.log"

        def find() -> str | None:
            text = log.read_text(errors="replace") if log.exists() else ""
            return next((ln for ln in text.splitlines() if re.search(pattern, ln)), None)

        return _wait_for(find, timeout, f"{pattern!r} in {log}")

    def close(self) -> None:
        for name in list(self.workers):
            kill_group(self.workers.pop(name))
        if self.scheduler is not None:
            kill_group(self.scheduler)
            self.scheduler = None


def worker_pids(client: Any) -> dict[str, int]:
    """Worker address -> pid of the process running the tasks (the nanny's child, if any)."""
    return client.run(os.getpid)


def kill_pid(pid: int) -> float:
    t = time.time()
    os.kill(pid, signal.SIGKILL)
    return t


# ------------------------------------------------------------------ fault injection -----------


_ARMED: dict[tuple[str, str], Any] = {}  # in a worker process: (module, name) -> original


def _claim(marker: str) -> bool:
    """True for the first caller on this machine only (an exclusive create of ``marker``)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    from distributed import get_worker

    os.write(fd, str(get_worker().address).encode())
    os.close(fd)
    return True


def _die_on_call(module: str, name: str, after: int, marker: str) -> None:
    """Runs on the workers (``client.run``): from now on, the first worker to reach its
    ``after``-th call of ``module.name`` writes its address to ``marker`` and SIGKILLs itself
    before the call returns.

    Graph tasks refer to library functions by module and name, so the workers' tasks call the
    wrapper: the process dies *inside* the task, at that point of the algorithm, and only a
    worker that really runs that task (e.g. holds blocks) can be the victim.
    """
    import importlib

    mod = importlib.import_module(module)
    real = _ARMED.setdefault((module, name), getattr(mod, name))
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] >= after and _claim(marker):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(mod, name, wrapper)


def _disarm() -> None:
    import importlib

    for (module, name), real in _ARMED.items():
        setattr(importlib.import_module(module), name, real)
    _ARMED.clear()


def arm_workers(client: Any, module: str, name: str, after: int, marker: Path) -> Path:
    """Make the first worker that calls ``module.name`` for the ``after``-th time die there;
    ``marker`` then holds its address (see :func:`victim`)."""
    marker.unlink(missing_ok=True)
    client.run(_die_on_call, module, name, after, str(marker))
    return marker


def victim(marker: Path) -> str | None:
    return marker.read_text() if marker.exists() else None


def disarm_workers(client: Any) -> None:
    client.run(_disarm)


class RoundTrigger:
    """Calls ``action()`` once, from the client's event thread, when training publishes the
    ``n``-th ``round`` event; listens on the ``pipeline.train`` topic."""

    def __init__(self, client: Any, n: int, action: Callable[[], Any]):
        self.client, self.n, self.action = client, n, action
        self.fired_at: float | None = None
        self.rounds: list[int] = []
        self.events: list[dict[str, Any]] = []
        client.subscribe_topic(TOPIC, self._on_event)

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        self.events.append(msg)
        if msg.get("event") == "round":
            self.rounds.append(msg["round"])
            if self.fired_at is None and len(self.rounds) >= self.n:
                self.fired_at = time.time()
                self.action()

    def wait_for_end(self, timeout: float = 30.0) -> dict[str, Any]:
        """The run's ``end`` event (events travel through the scheduler, so they can trail the
        return of ``fit`` by a moment)."""
        return _wait_for(lambda: next((e for e in self.events if e.get("event") == "end"), None),
                         timeout, "the training's end event")

    def close(self) -> None:
        self.client.unsubscribe_topic(TOPIC)



def kill_block0_worker_at_round(client: Any, n: int) -> tuple[RoundTrigger, dict[str, Any]]:
    """A :class:`RoundTrigger` that SIGKILLs, from outside, the worker that computed block 0's
    part of the round in the ``n``-th round event; ``killed`` gets its ``worker`` and ``at``."""
    pids = worker_pids(client)
    killed: dict[str, Any] = {}

    def kill() -> None:
        last = next(e for e in reversed(trigger.events) if e.get("event") == "round")
        killed["worker"] = last["partition_workers"][0]
        killed["at"] = kill_pid(pids[killed["worker"]])

    trigger = RoundTrigger(client, n, kill)
    return trigger, killed

# ------------------------------------------------------------------ data -----------------------


def make_data(n: int = 4000, d: int = 8, seed: int = 0, npartitions: int = 4,
              classification: bool = True) -> tuple[Any, Any]:
    """Deterministic dask arrays (their values live in the graph, so lost blocks are recomputed
    bit for bit from lineage)."""
    import dask.array as da

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    logits = X @ w + 0.3 * rng.standard_normal(n)
    y = (logits > 0).astype(np.int64) if classification else logits
    chunk = -(-n // npartitions)
    return da.from_array(X, chunks=(chunk, d)), da.from_array(y, chunks=chunk)


def fit_model(client, X, y, *, estimator="classifier", **params):
    """Fit a small MLP on the given client; training budgets are fixed, so convergence warnings
    are expected and silenced."""
    import pipeline as pl

    cls = pl.MLPClassifier if estimator == "classifier" else pl.MLPRegressor
    fit_kw = {k: params.pop(k) for k in ("checkpoint_dir", "checkpoint_every", "resume")
              if k in params}
    # One block per partition (no coalescing): the tests need several blocks on each worker.
    # sync="gradient" unless a test asks otherwise: faults are injected into its tasks
    kw = {"hidden_layer_sizes": (16,), "random_state": 0, "split_every": 2,
          "min_block_rows": None, "sync": "gradient", **params}
    model = cls(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on a fixed max_iter
        model.fit(X, y, client=client, **fit_kw)
    return model


# Full-batch configurations: a lost block is rebuilt bit for bit, so the result must not change.
FULL_BATCH = {
    "sgd": {"solver": "sgd", "batch_size": None, "max_iter": 25, "learning_rate_init": 0.1},
    "lbfgs": {"solver": "lbfgs", "max_iter": 15},
    # the default strategy: local SGD over replicas (colocated runs of blocks)
    "replicas": {"sync": "average", "replicas": 2, "local_steps": 2, "batch_size": 64,
                 "max_iter": 4, "learning_rate_init": 0.01},
}


# The estimator's default sync (replica local SGD), named so fit_model does not pin "gradient"
RESUME_CONFIG = {"solver": "adam", "batch_size": 1000, "max_iter": 12, "learning_rate_init": 0.01,
                 "sync": "average"}

# A training job as its own client process: killed with SIGKILL, then run again with resume.
TRAINING_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    sys.path.insert(0, {here!r})
    from proc_cluster import make_data
    import pipeline as pl

    address, ckpt, out, resume, config = sys.argv[1:6]
    client = pl.connect(address)
    X, y = make_data()
    model = pl.MLPClassifier(hidden_layer_sizes=(16,), random_state=0, split_every=2,
                             min_block_rows=None, **json.loads(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y, checkpoint_dir=ckpt, checkpoint_every=1, resume=resume == "1")
    np.save(out, model.params_)
    client.close()
""")


def write_training_script(directory: Path) -> Path:
    script = directory / "train_script.py"
    script.write_text(TRAINING_SCRIPT.format(here=str(Path(__file__).resolve().parent)))
    return script


def start_training_process(script: Path, address: str, ckpt: Path, out: Path, resume: bool,
                           log: Any) -> subprocess.Popen:
    """``script`` fits RESUME_CONFIG on ``address`` with checkpoints in ``ckpt``; it saves the
    final parameters to ``out`` (``np.save``). Its own session, so it can be SIGKILLed."""
    argv = [sys.executable, str(script), address, str(ckpt), str(out), "1" if resume else "0",
            json.dumps(RESUME_CONFIG)]
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
