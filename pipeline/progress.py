"""Per-epoch progress lines for ``fit(verbose=1)``, read from the training events.

scikit-learn's convention: ``verbose=0`` (the default) is silent, ``verbose>0`` prints one line
per epoch to stdout. Here the lines come from the events training publishes
(:mod:`pipeline.events`), relayed by the scheduler to a client-side subscriber, so the trainer
prints nothing itself and every event listener sees the same numbers::

    epoch 3/20  loss 0.412345  validation 0.9012  412,345 samples/s  elapsed 00:12  ETA 00:51

With ``solver="lbfgs"`` (no epochs) there is one line per loss-and-gradient evaluation.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from .events import TOPIC, subscribe

__all__ = ["EpochLines", "format_seconds", "report"]

_END_WAIT = 5.0  # seconds to wait, on exit, for the run's last events to be relayed


def format_seconds(seconds: float | None) -> str:
    """``mm:ss`` (``h:mm:ss`` from one hour), ``--:--`` when unknown."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "--:--"
    m, s = divmod(round(max(seconds, 0.0)), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class EpochLines:
    """Context manager printing one line per epoch of the next run named ``estimator``.

    Subscribes to :data:`~pipeline.events.TOPIC` on ``client`` on entry and follows the first
    ``start`` event whose ``estimator`` is ``estimator`` (other runs are ignored). On exit,
    waits up to a few seconds for that run's ``end`` event, so every line is out before ``fit``
    returns, then unsubscribes. A handler already subscribed to the topic on this client (the
    CLI's progress bar) keeps receiving every event. Printing never raises into training.
    """

    def __init__(self, client: Any, estimator: str, stream: TextIO | None = None):
        self.client = client
        self.estimator = estimator
        self.stream = stream
        self.run: str | None = None
        self.started: float | None = None
        self.total: int | None = None
        self.lbfgs = False
        self.lines: list[str] = []
        self._ended = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> EpochLines:
        self._previous = getattr(self.client, "_event_handlers", {}).get(TOPIC)
        subscribe(self.client, self._on_event)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.run is not None:
            self._ended.wait(_END_WAIT)
        if self._previous is not None:
            self.client.subscribe_topic(TOPIC, self._previous)
        else:
            self.client.unsubscribe_topic(TOPIC)

    def _on_event(self, event: Any) -> None:
        if self._previous is not None:
            try:  # another subscriber's error (a stale handler) must not silence this one
                self._previous(event)
            except Exception:
                pass
        try:
            self._handle(event[1])
        except Exception:  # a malformed event must not break the client's event loop
            pass

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("event")
        if kind == "start" and self.run is None and msg.get("estimator") == self.estimator:
            self.run = msg["run"]
            self.started = float(msg["time"])
            config = msg.get("config") or {}
            self.lbfgs = config.get("solver") == "lbfgs"
            self.total = config.get("max_fun" if self.lbfgs else "max_iter")
            return
        if self.run is None or msg.get("run") != self.run:
            return
        if kind == "end":
            self._ended.set()
        elif kind == "epoch" and not self.lbfgs:
            self._print(self.epoch_line(msg))
        elif kind == "round" and self.lbfgs:
            self._print(self.epoch_line({**msg, "epoch": msg["round"], "validation_score": None},
                                        unit="evaluation"))

    def epoch_line(self, msg: dict[str, Any], unit: str = "epoch") -> str:
        """The line for one ``epoch`` event of the followed run."""
        done = int(msg["epoch"])
        elapsed = float(msg["time"]) - (self.started or float(msg["time"]))
        eta = None
        if self.total and done:
            eta = elapsed / done * max(int(self.total) - done, 0)
        parts = [f"{unit} {done}/{self.total}" if self.total else f"{unit} {done}",
                 f"loss {float(msg['loss']):.6f}"]
        if msg.get("validation_score") is not None:
            parts.append(f"validation {float(msg['validation_score']):.4f}")
        if msg.get("samples_per_s"):
            parts.append(f"{float(msg['samples_per_s']):,.0f} samples/s")
        parts += [f"elapsed {format_seconds(elapsed)}", f"ETA {format_seconds(eta)}"]
        return "  ".join(parts)

    def _print(self, line: str) -> None:
        self.lines.append(line)
        stream = self.stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()


class _Silent:
    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def report(client: Any, estimator: str, verbose: int | bool) -> EpochLines | _Silent:
    """``EpochLines(client, estimator)`` when ``verbose`` is positive, else a no-op context."""
    return EpochLines(client, estimator) if verbose and int(verbose) > 0 else _Silent()
