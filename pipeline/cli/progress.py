"""Terminal progress: a bar with rate and ETA, fed by the training events the scheduler relays."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ..events import TOPIC, subscribe

__all__ = ["Bar", "TrainingProgress", "step"]


def _fmt_seconds(s: float) -> str:
    if s != s or s == float("inf"):
        return "--:--"
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Bar:
    """A one-line progress bar: ``label [#####.....] 5/10 epochs  1.2M rows/s  ETA 00:07``."""

    def __init__(self, label: str, total: int, unit: str, stream: TextIO | None = None,
                 width: int = 24):
        self.label, self.total, self.unit, self.width = label, max(total, 1), unit, width
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.done = 0
        self.extra = ""
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, done: int, extra: str = "") -> None:
        self.done, self.extra = min(done, self.total), extra
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        filled = int(self.width * self.done / self.total)
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{self.done}/{self.total} {self.unit}  {extra}  "
                f"elapsed {_fmt_seconds(elapsed)}  ETA {_fmt_seconds(eta)}")
        if self._tty:
            self.stream.write("\r" + line.ljust(110))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()


class TrainingProgress:
    """Subscribes to the ``pipeline.train`` topic and draws an epoch bar with samples/s."""

    def __init__(self, client: Any, total_epochs: int, stream: TextIO | None = None):
        self.client = client
        self.bar = Bar("train", total_epochs, "epochs", stream)
        self.rows_per_s: float | None = None

    def __enter__(self) -> TrainingProgress:
        subscribe(self.client, self._on_event)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.client.unsubscribe_topic(TOPIC)
        self.bar.close()

    def _on_event(self, event: Any) -> None:
        _, msg = event
        kind = msg.get("event")
        if kind == "round" and msg.get("samples_per_s"):
            self.rows_per_s = msg["samples_per_s"]
        if kind == "epoch":
            rate = msg.get("samples_per_s") or self.rows_per_s or 0.0
            val = msg.get("validation_score")
            extra = f"loss {msg['loss']:.4f}" + (f"  valid {val:.4f}" if val is not None else "")
            self.bar.update(int(msg["epoch"]), f"{extra}  {rate / 1e3:,.0f}k rows/s")


def step(message: str, stream: TextIO | None = None) -> None:
    """One line of job progress (``==> reading data``)."""
    out = stream or sys.stderr
    out.write(f"==> {message}\n")
    out.flush()
