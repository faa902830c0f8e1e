"""Fixtures for running deploy/'s command lines as OS processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a TCP port that is free on 127.0.0.1 (and not handed out twice)."""
    given: set[int] = set()

    def pick() -> int:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in given:
                given.add(port)
                return port

    return pick


class Processes:
    """Processes started by one test, each in its own session, ended by pid at teardown."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        log.close()  # the child holds its own descriptor
        self.started.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"----- {name} -----\n{self.log(name)[-4000:]}"
                         for name, _ in self.started)

    def check_running(self) -> None:
        dead = [(name, p.returncode) for name, p in self.started if p.poll() is not None]
        assert not dead, f"exited early: {dead}\n{self.logs()}"

    def wait_for_http(self, url: str, timeout: float = 60) -> None:
        """Poll ``url`` until it answers 200, failing early if a started process has died."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout} s\n{self.logs()}")
            time.sleep(0.2)

    def stop(self) -> None:
        # SIGTERM to each pid we started, newest first, waiting for each (workers leave while
        # their scheduler still answers); one still alive after 10 s gets SIGKILL, with the
        # process group it leads (a nanny's worker), ours because start_new_session made it.
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path) -> Iterator[Processes]:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    procs = Processes(logdir)
    try:
        yield procs
    finally:
        procs.stop()

