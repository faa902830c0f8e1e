"""Typed emitters of the training events (topic ``pipeline.train``; contract in
docs/architecture.md). Monitoring must never break training: emitters never raise."""

from __future__ import annotations

import contextlib
import time
from typing import Any

TOPIC = "pipeline.train"


def _log(client: Any, msg: dict[str, Any]) -> None:
    msg.setdefault("time", time.time())
    with contextlib.suppress(Exception):
        client.log_event(TOPIC, msg)


def start(client: Any, **fields: Any) -> None:
    _log(client, {"event": "start", **fields})


def round(client: Any, **fields: Any) -> None:
    _log(client, {"event": "round", **fields})


def epoch(client: Any, **fields: Any) -> None:
    _log(client, {"event": "epoch", **fields})


def retry(client: Any, **fields: Any) -> None:
    _log(client, {"event": "retry", **fields})


def end(client: Any, **fields: Any) -> None:
    _log(client, {"event": "end", **fields})


def round_fields(run_id: str, round_no: int, epoch: int, part: Any, seconds: float,
                 loss: float) -> dict[str, Any]:
    """The ``round`` event's fields (docs/architecture.md)."""
    timings = sorted(part.timings)
    return {"run": run_id, "round": round_no, "epoch": epoch, "loss": loss,
            "samples": int(part.n), "round_seconds": seconds,
            "samples_per_s": part.n / seconds if seconds > 0 else None,
            "partition_seconds": [t[1] for t in timings],
            "partition_workers": [t[2] for t in timings]}
