"""The training event contract: topic, event shapes, emitters, and the monitor hook.

Training publishes what it does as Dask events (``client.log_event(TOPIC, msg)``); listeners
(the scheduler-side monitor in ``analytics``, the progress lines of :mod:`pipeline.progress`,
the CLI's bar) read them. This module is the one place that says what the events are: every
``msg`` is a JSON-able dict with ``"event"`` (one of :data:`EVENTS`), ``"run"`` (a string id
unique per ``fit``) and ``"time"`` (unix seconds), plus the fields of its shape below.

The library never imports ``analytics``. :func:`ensure_monitor` installs whatever scheduler
plugins are declared under the entry-point group :data:`MONITOR_GROUP` (``analytics`` declares
its training page and Prometheus collector there, see ``pyproject.toml``), once per scheduler.

>>> from pipeline import events
>>> events.TOPIC
'pipeline.train'
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from importlib.metadata import entry_points
from typing import Any, TypedDict

__all__ = [
    "EVENTS",
    "MONITOR_GROUP",
    "TOPIC",
    "EndEvent",
    "EpochEvent",
    "RetryEvent",
    "RoundEvent",
    "StartEvent",
    "emit_end",
    "emit_epoch",
    "emit_many",
    "emit_retry",
    "emit_round",
    "emit_start",
    "ensure_monitor",
    "epoch_message",
    "round_message",
    "subscribe",
]

logger = logging.getLogger(__name__)

TOPIC = "pipeline.train"
"""The Dask event topic every training event is logged under."""

EVENTS = frozenset({"start", "round", "epoch", "retry", "end"})

MONITOR_GROUP = "pipeline.monitors"
"""Entry-point group of zero-argument factories returning a scheduler plugin that listens."""

PRELOAD_HINT = "--preload analytics.dashboard"


# -- shapes ------------------------------------------------------------------------------------
class StartEvent(TypedDict):
    event: str  # "start"
    run: str
    time: float
    config: dict[str, Any]
    n_partitions: int
    n_samples: int
    n_features: int
    n_params: int
    sync: str
    estimator: str


class RoundEvent(TypedDict):
    event: str  # "round"
    run: str
    time: float
    round: int  # 1-based, counted over the whole fit
    epoch: int  # 1-based epoch the round belongs to
    loss: float  # mean training loss of the round's rows
    samples: int
    round_seconds: float
    samples_per_s: float | None
    partition_seconds: list[float]  # per block, sorted by block
    partition_workers: list[str]  # worker address per block


class EpochEvent(TypedDict, total=False):
    event: str  # "epoch"
    run: str
    time: float
    epoch: int  # 1-based
    round: int | None  # last round of the epoch
    loss: float
    validation_score: float | None
    samples_per_s: float | None
    seconds: float | None  # wall time of the epoch
    learning_rate: float | None
    rounds: int | None  # rounds in the epoch
    round_seconds_median: float | None
    local_steps: list[int] | None  # sync="average": local steps per block for the next round


class RetryEvent(TypedDict):
    event: str  # "retry"
    run: str
    time: float
    round: int
    reason: str
    action: str  # "recomputed" (blocks rebuilt from lineage) or "resubmitted"
    attempt: int
    recovery_seconds: float


class EndEvent(TypedDict):
    event: str  # "end"
    run: str
    time: float
    status: str  # "finished", "stopped_early" or "failed"
    n_iter: int
    rounds: int
    seconds: float
    error: str | None


# -- listening --------------------------------------------------------------------------------
_SUBSCRIBE_WAIT = 5.0  # seconds to wait for the scheduler to register a subscription


def subscribe(client: Any, handler: Any, *, wait: float = _SUBSCRIBE_WAIT) -> None:
    """Subscribe ``handler`` to :data:`TOPIC` on ``client`` and wait until the scheduler has
    registered the subscription, so that no event of a run started next is missed.

    ``Client.subscribe_topic`` travels on the client's batched stream while ``log_event`` is
    an RPC on its own connection, so an event logged right after subscribing can reach the
    scheduler first and never be relayed (on a loaded machine, a ``start`` event does). Waiting
    is best effort: on a scheduler that cannot be asked, it returns after subscribing.
    """
    client.subscribe_topic(TOPIC, handler)
    client_id = client.id

    def registered(dask_scheduler: Any) -> bool | None:
        broker = getattr(dask_scheduler, "_broker", None)
        topics = getattr(broker, "_topics", None)
        if topics is None:
            return None  # a distributed without the broker: cannot tell
        return TOPIC in topics and client_id in topics[TOPIC].subscribers

    deadline = time.monotonic() + wait
    try:
        while client.run_on_scheduler(registered) is False and time.monotonic() < deadline:
            time.sleep(0.01)
    except Exception:  # monitoring must never break training
        logger.debug("could not confirm the %s subscription", TOPIC, exc_info=True)


# -- emitters ----------------------------------------------------------------------------------
def _emit(client: Any, msg: dict[str, Any]) -> None:
    msg["time"] = time.time()
    _log(client, msg)


def _log(client: Any, msg: dict[str, Any]) -> None:
    try:
        client.log_event(TOPIC, msg)
    except Exception:  # monitoring must never break training
        logger.debug("could not log a %s event", TOPIC, exc_info=True)


def _publish(dask_scheduler: Any, topic: str, msgs: list[dict[str, Any]]) -> None:
    for msg in msgs:
        dask_scheduler.log_event(topic, msg)


def emit_many(client: Any, msgs: list[dict[str, Any]]) -> None:
    """Publish ``msgs`` (whole event dicts, e.g. a fused fit's replayed rounds and epochs), in
    order, in one scheduler round trip instead of one ``log_event`` each. Subscribers see the
    same events as from the per-event emitters. Falls back to one ``log_event`` per event
    where the scheduler cannot run the call (a scheduler without this package)."""
    if not msgs:
        return
    now = time.time()
    for msg in msgs:
        msg.setdefault("time", now)
    try:
        client.run_on_scheduler(_publish, topic=TOPIC, msgs=msgs)
        return
    except Exception:
        logger.debug("could not log %d %s events at once", len(msgs), TOPIC, exc_info=True)
    for msg in msgs:
        try:
            client.log_event(TOPIC, msg)
        except Exception:  # monitoring must never break training
            logger.debug("could not log a %s event", TOPIC, exc_info=True)


class Outbox:
    """Events published in batches: a call when ``every`` seconds have passed since the last
    one (or since the outbox was made), and on :meth:`flush`; each event keeps the time it was
    added. The epochs a mesh segment ran ahead of the client reach the dashboard in one call
    instead of one or two each; a slow epoch's events go out as they come, as before. A few
    events go as ``log_event`` calls (~1 ms each here), more in one :func:`emit_many` (~5 ms:
    a ``run_on_scheduler``)."""

    BATCH_FROM = 4  # events: fewer go one call each

    def __init__(self, client: Any, every: float = 0.25) -> None:
        self.client, self.every = client, every
        self.pending: list[dict[str, Any]] = []
        self.sent = time.monotonic()  # of the last call

    def add(self, msg: dict[str, Any]) -> None:
        msg.setdefault("time", time.time())
        self.pending.append(msg)
        if time.monotonic() - self.sent >= self.every:
            self.flush()

    def flush(self) -> None:
        msgs, self.pending = self.pending, []
        if len(msgs) >= self.BATCH_FROM:
            emit_many(self.client, msgs)
        else:
            for msg in msgs:
                _log(self.client, msg)
        self.sent = time.monotonic()


def round_message(run: str, **fields: Any) -> dict[str, Any]:
    """The ``round`` event :func:`emit_round` publishes, as a dict (for :func:`emit_many`)."""
    return {"event": "round", "run": run, **fields,
            "partition_seconds": list(fields["partition_seconds"]),
            "partition_workers": list(fields["partition_workers"])}


def epoch_message(run: str, *, epoch: int, round: int | None, loss: float,
                  validation_score: float | None = None, samples_per_s: float | None = None,
                  seconds: float | None = None, learning_rate: float | None = None,
                  rounds: int | None = None, round_seconds_median: float | None = None,
                  local_steps: list[int] | None = None) -> dict[str, Any]:
    """The ``epoch`` event :func:`emit_epoch` publishes, as a dict (for :func:`emit_many`)."""
    msg: dict[str, Any] = {
        "event": "epoch", "run": run, "round": round, "epoch": epoch, "loss": loss,
        "validation_score": validation_score, "samples_per_s": samples_per_s,
        "seconds": seconds, "learning_rate": learning_rate, "rounds": rounds,
        "round_seconds_median": round_seconds_median,
    }
    if local_steps is not None:
        msg["local_steps"] = list(local_steps)
    return msg


def emit_start(client: Any, run: str, *, config: dict[str, Any], n_partitions: int,
               n_samples: int, n_features: int, n_params: int, sync: str,
               estimator: str) -> None:
    """Publish that run ``run`` starts (``config`` is the training config as a dict)."""
    _emit(client, {"event": "start", "run": run, "config": config,
                   "n_partitions": n_partitions, "n_samples": n_samples,
                   "n_features": n_features, "n_params": n_params, "sync": sync,
                   "estimator": estimator})


def emit_round(client: Any, run: str, *, round: int, epoch: int, loss: float, samples: int,
               round_seconds: float, samples_per_s: float | None,
               partition_seconds: list[float], partition_workers: list[str]) -> None:
    """Publish one finished round (training may publish only some rounds)."""
    _emit(client, {"event": "round", "run": run, "round": round, "epoch": epoch, "loss": loss,
                   "samples": samples, "round_seconds": round_seconds,
                   "samples_per_s": samples_per_s, "partition_seconds": list(partition_seconds),
                   "partition_workers": list(partition_workers)})


def emit_epoch(client: Any, run: str, *, epoch: int, round: int | None, loss: float,
               validation_score: float | None = None, samples_per_s: float | None = None,
               seconds: float | None = None, learning_rate: float | None = None,
               rounds: int | None = None, round_seconds_median: float | None = None,
               local_steps: list[int] | None = None) -> None:
    """Publish one finished epoch; takes a history record as keywords (``**record``)."""
    _emit(client, epoch_message(
        run, epoch=epoch, round=round, loss=loss, validation_score=validation_score,
        samples_per_s=samples_per_s, seconds=seconds, learning_rate=learning_rate,
        rounds=rounds, round_seconds_median=round_seconds_median, local_steps=local_steps))


def emit_retry(client: Any, run: str, *, round: int, reason: str, action: str, attempt: int,
               recovery_seconds: float) -> None:
    """Publish that a round was retried after a disruption."""
    _emit(client, {"event": "retry", "run": run, "round": round, "reason": reason,
                   "action": action, "attempt": attempt, "recovery_seconds": recovery_seconds})


def emit_end(client: Any, run: str, *, status: str, n_iter: int, rounds: int, seconds: float,
             error: str | None = None, outbox: Outbox | None = None) -> None:
    """Publish the end of run ``run`` (``status`` finished, stopped_early or failed); with
    ``outbox``, after its pending events and in the same call."""
    msg = {"event": "end", "run": run, "status": status, "n_iter": n_iter, "rounds": rounds,
           "seconds": seconds, "error": error}
    if outbox is None:
        _emit(client, msg)
        return
    outbox.add(msg)
    outbox.flush()


# -- the scheduler-side listener ---------------------------------------------------------------
_MAX_SCHEDULERS = 64
_installed: OrderedDict[str, bool] = OrderedDict()  # scheduler id -> installed (bounded)


def round_fields(round_no: int, epoch: int, part: Any, seconds: float,
                 loss: float) -> dict[str, Any]:
    """The ``round`` event's fields (docs/architecture.md)."""
    timings = sorted(part.timings)
    return {"round": round_no, "epoch": epoch, "loss": loss,
            "samples": int(part.n), "round_seconds": seconds,
            "samples_per_s": part.n / seconds if seconds > 0 else None,
            "partition_seconds": [t[1] for t in timings],
            "partition_workers": [t[2] for t in timings]}


def ensure_monitor(client: Any) -> bool:
    """Install the declared monitors on ``client``'s scheduler, once per scheduler.

    Loads every entry point of group :data:`MONITOR_GROUP`, calls it to get a scheduler plugin
    and registers it with ``client.register_plugin``. Plugins are idempotent, and this function
    remembers the schedulers it has handled, so calling it at every ``fit`` costs nothing after
    the first. Never raises: where no monitor can be installed (none declared, or the scheduler
    cannot import it), logs one warning saying what to add and training goes on.

    Returns
    -------
    bool
        Whether every declared monitor is installed.
    """
    try:
        info = client.scheduler_info(n_workers=0)  # identity only: one cheap round trip
        key = str(info.get("id") or info.get("address") or id(client))
    except Exception:
        logger.debug("no scheduler to install a monitor on", exc_info=True)
        return False
    if key in _installed:
        return _installed[key]
    ok = _install(client)
    _installed[key] = ok
    while len(_installed) > _MAX_SCHEDULERS:
        _installed.popitem(last=False)
    return ok


def _install(client: Any) -> bool:
    eps = {ep.value: ep for ep in entry_points(group=MONITOR_GROUP)}
    if not eps:
        logger.warning(
            "training is not monitored on the dashboard: no %r entry point is installed; "
            "reinstall dask-pipeline or start the scheduler with `%s`", MONITOR_GROUP,
            PRELOAD_HINT)
        return False
    failed = []
    for value, ep in sorted(eps.items()):
        try:
            client.register_plugin(ep.load()())
        except Exception as exc:
            failed.append(f"{value}: {type(exc).__name__}: {exc}")
    if failed:
        logger.warning(
            "training is not shown on the dashboard: the scheduler could not install its "
            "monitor (%s); start the scheduler with `%s` (with this package importable there)",
            "; ".join(failed), PRELOAD_HINT)
        return False
    return True
