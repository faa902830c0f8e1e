"""Live training monitor: a scheduler plugin that listens to ``pipeline.train`` events.

Training publishes what it does with ``client.log_event(TOPIC, msg)``; the topic and the
event shapes are owned by :mod:`pipeline.events`. :class:`TrainingMonitor` runs inside the
scheduler, keeps the last ``max_runs`` runs in memory, and exports them to the scheduler's
Prometheus endpoint (``/metrics``). The Bokeh page in :mod:`analytics.dashboard` draws from it.

Enable it on a running cluster with :func:`install`::

    from distributed import Client
    import analytics.monitor

    client = Client("tcp://scheduler:8786")
    analytics.monitor.install(client)   # then open http://scheduler:8787/individual-training
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from pipeline.events import EVENTS as _EVENTS
from pipeline.events import TOPIC

__all__ = ["PLUGIN_NAME", "TOPIC", "Run", "TrainingMonitor", "attach", "install"]

logger = logging.getLogger(__name__)

PLUGIN_NAME = "pipeline-training-monitor"


@dataclass
class Run:
    """What the monitor knows about one ``fit``: the event contract folded into state.

    ``rounds`` keeps the last ``max_rounds`` round records (dicts with ``round``, ``epoch``,
    ``loss``, ``samples``, ``round_seconds``, ``samples_per_s``, ``time``); ``n_round_events``
    counts every round event seen. Training may publish only some rounds (``pipeline.train``
    rate-limits them), so the number of rounds done is :attr:`rounds_done`, from the round
    numbers. ``epochs`` keeps every epoch record. ``partition_seconds`` and
    ``partition_workers`` describe the most recent round only, one entry per block.
    ``version`` grows with every event so that viewers redraw only what changed.
    """

    run: str
    started: float
    max_rounds: int = 5000
    start: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    rounds: deque[dict[str, Any]] = field(init=False)
    n_round_events: int = 0
    max_round: int = 0
    epochs: list[dict[str, Any]] = field(default_factory=list)
    partition_round: int | None = None
    partition_seconds: list[float] = field(default_factory=list)
    partition_workers: list[str] = field(default_factory=list)
    retries: int = 0
    last_retry: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    updated: float = 0.0
    version: int = 0

    def __post_init__(self) -> None:
        self.rounds = deque(maxlen=self.max_rounds)

    @property
    def estimator(self) -> str:
        return str(self.start.get("estimator") or "")

    @property
    def last_round(self) -> dict[str, Any] | None:
        return self.rounds[-1] if self.rounds else None

    @property
    def last_epoch(self) -> dict[str, Any] | None:
        return self.epochs[-1] if self.epochs else None

    @property
    def rounds_done(self) -> int:
        """Rounds completed: the highest round number reported (1-based, as training counts)."""
        return max(self.max_round, int((self.end or {}).get("rounds") or 0))

    @property
    def seconds(self) -> float:
        """Wall time of the run: the reported total once ended, else time since start."""
        if self.end is not None and self.end.get("seconds") is not None:
            return float(self.end["seconds"])
        return max(0.0, self.updated - self.started)

    def summary(self) -> dict[str, Any]:
        """The current values a person checks first (``None`` where not known yet)."""
        last_round = self.last_round or {}
        last_epoch = self.last_epoch or {}
        scores = [e["validation_score"] for e in self.epochs if e.get("validation_score") is not None]
        rounds = [r for r in (last_round.get("round"), last_epoch.get("round")) if r is not None]
        epochs = [e for e in (last_round.get("epoch"), last_epoch.get("epoch")) if e is not None]
        return {
            "run": self.run,
            "estimator": self.estimator,
            "status": self.status,
            "epoch": max(epochs) if epochs else None,
            "round": max(rounds) if rounds else None,
            "rounds": self.rounds_done,
            "loss": last_round.get("loss", last_epoch.get("loss")),
            "epoch_loss": last_epoch.get("loss"),
            "validation_score": last_epoch.get("validation_score"),
            "best_validation_score": max(scores) if scores else None,
            "samples_per_s": last_round.get("samples_per_s"),
            "round_seconds": last_round.get("round_seconds"),
            "learning_rate": last_epoch.get("learning_rate"),
            "retries": self.retries,
            "seconds": self.seconds,
            "started": self.started,
            "n_partitions": self.start.get("n_partitions"),
            "n_samples": self.start.get("n_samples"),
            "error": (self.end or {}).get("error"),
        }


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class TrainingMonitor(SchedulerPlugin):
    """Scheduler plugin keeping the last ``max_runs`` training runs and exporting metrics.

    Parameters
    ----------
    max_runs : int
        Runs kept in memory (oldest evicted first); also bounds the ``run`` label values of
        the Prometheus metrics.
    max_rounds : int
        Round records kept per run (the per-round curves show the most recent ones).

    Notes
    -----
    Registered under the name ``"pipeline-training-monitor"`` and idempotent: registering it
    again on a scheduler that already has one keeps the existing instance and its history.
    On ``start`` it replays the events the scheduler still holds for the topic, so a monitor
    installed in the middle of a run picks it up from the beginning.
    """

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self, max_runs: int = 10, max_rounds: int = 5000):
        if max_runs < 1:
            raise ValueError(f"max_runs must be >= 1, got {max_runs}")
        self.max_runs = max_runs
        self.max_rounds = max_rounds
        self.runs: OrderedDict[str, Run] = OrderedDict()
        # Process-lifetime totals of this monitor (not reset by eviction).
        self.runs_total = 0
        self.retries_total = 0
        self.failures_total = 0
        self.version = 0
        self.scheduler: Any = None

    # -- SchedulerPlugin ---------------------------------------------------------------------
    async def start(self, scheduler: Any) -> None:
        self.start_sync(scheduler)

    async def close(self) -> None:
        _COLLECTOR.detach(self)

    def log_event(self, topic: str, msg: Any) -> None:
        if topic == TOPIC:
            self.record(msg)

    def start_sync(self, scheduler: Any) -> None:
        """``start`` for callers already on the scheduler's event loop.

        Replays the events the scheduler still holds and registers the Prometheus collector.
        """
        self.scheduler = scheduler
        for _, msg in scheduler.get_events(TOPIC):
            self.record(msg)
        _COLLECTOR.attach(scheduler, self)

    # -- state ----------------------------------------------------------------------------------
    def record(self, msg: dict[str, Any]) -> None:
        """Fold one ``pipeline.train`` event into the run history.

        Unknown events and malformed messages are logged and ignored: a monitor must never
        break the training that talks to it.
        """
        try:
            self._record(msg)
        except Exception:
            logger.warning("ignoring malformed %s event: %r", TOPIC, msg, exc_info=True)

    def _record(self, msg: dict[str, Any]) -> None:
        event = msg["event"]
        if event not in _EVENTS:
            logger.debug("unknown %s event %r", TOPIC, event)
            return
        now = float(msg.get("time") or time.time())
        if event == "start":
            run = self._new_run(str(msg["run"]), now)
            run.start = {k: v for k, v in msg.items() if k not in ("event", "run", "time")}
            self.runs_total += 1
        else:
            run = self.runs.get(str(msg["run"]))
            if run is None:
                # Events of a run whose start was evicted from the scheduler's event log.
                run = self._new_run(str(msg["run"]), now)
        if event == "round":
            run.rounds.append(
                {
                    "round": int(msg["round"]),
                    "epoch": int(msg.get("epoch") or 0),
                    "loss": _float(msg.get("loss")),
                    "samples": msg.get("samples"),
                    "round_seconds": _float(msg.get("round_seconds")),
                    "samples_per_s": _float(msg.get("samples_per_s")),
                    "time": now,
                }
            )
            run.n_round_events += 1
            run.max_round = max(run.max_round, int(msg["round"]))
            run.partition_round = int(msg["round"])
            run.partition_seconds = [float(s) for s in msg.get("partition_seconds") or ()]
            run.partition_workers = [str(w) for w in msg.get("partition_workers") or ()]
        elif event == "epoch":
            run.epochs.append(
                {
                    "epoch": int(msg["epoch"]),
                    "round": None if msg.get("round") is None else int(msg["round"]),
                    "loss": _float(msg.get("loss")),
                    "validation_score": _float(msg.get("validation_score")),
                    "samples_per_s": _float(msg.get("samples_per_s")),
                    "learning_rate": _float(msg.get("learning_rate")),
                    "time": now,
                }
            )
            if run.epochs[-1]["round"] is not None:
                run.max_round = max(run.max_round, run.epochs[-1]["round"])
        elif event == "retry":
            run.retries += 1
            run.last_retry = {"round": msg.get("round"), "reason": msg.get("reason")}
            self.retries_total += 1
        elif event == "end":
            run.status = str(msg.get("status") or "finished")
            run.end = {k: v for k, v in msg.items() if k not in ("event", "run", "time")}
            if run.status == "failed":
                self.failures_total += 1
        run.updated = now
        run.version += 1
        self.version += 1

    def _new_run(self, run_id: str, now: float) -> Run:
        run = Run(run=run_id, started=now, max_rounds=self.max_rounds, updated=now)
        self.runs.pop(run_id, None)
        self.runs[run_id] = run
        while len(self.runs) > self.max_runs:
            self.runs.popitem(last=False)
        return run

    def latest(self) -> Run | None:
        """The most recently started run kept, or ``None``."""
        return next(reversed(self.runs.values()), None)


def attach(scheduler: Any, *, max_runs: int = 10) -> TrainingMonitor:
    """Return the scheduler's :class:`TrainingMonitor`, adding and starting one if absent.

    For code that already runs in the scheduler (a ``--preload`` module, the dashboard page).
    """
    monitor = scheduler.plugins.get(PLUGIN_NAME)
    if isinstance(monitor, TrainingMonitor):
        return monitor
    monitor = TrainingMonitor(max_runs=max_runs)
    monitor.start_sync(scheduler)
    scheduler.add_plugin(monitor, name=PLUGIN_NAME)
    return monitor


def install(client: Any, *, max_runs: int = 10, page: bool = True) -> None:
    """Start monitoring training on the cluster of ``client``; works on a running cluster.

    Registers a :class:`TrainingMonitor` on the scheduler (a no-op if one is already there)
    and, with ``page=True``, the Bokeh page ``/individual-training`` on the scheduler's
    dashboard if it is not served yet (see :func:`analytics.dashboard.add_page`).
    The ``analytics`` package must be importable on the scheduler.
    """
    client.register_plugin(TrainingMonitor(max_runs=max_runs))
    if page:
        # Imported here: the dashboard module imports this one.
        from .dashboard import TrainingPage

        client.register_plugin(TrainingPage())


# -- Prometheus -----------------------------------------------------------------------------
class _Collector:
    """One process-wide collector over the monitors of the schedulers in this process.

    The scheduler's ``/metrics`` serves ``prometheus_client``'s global REGISTRY, where a
    metric name may be registered once. Tests and notebooks can run several in-process
    schedulers, and a plugin overwritten by a non-idempotent re-registration is never closed,
    so monitors are kept per scheduler and the collector is registered while any is alive.
    """

    def __init__(self) -> None:
        self.monitors: dict[int, TrainingMonitor] = {}
        self.registered = False

    def attach(self, scheduler: Any, monitor: TrainingMonitor) -> None:
        self.monitors[id(scheduler)] = monitor
        if not self.registered:
            from prometheus_client import REGISTRY

            REGISTRY.register(self)
            self.registered = True

    def detach(self, monitor: TrainingMonitor) -> None:
        for key, value in list(self.monitors.items()):
            if value is monitor:
                del self.monitors[key]
        if self.registered and not self.monitors:
            from prometheus_client import REGISTRY

            REGISTRY.unregister(self)
            self.registered = False

    def describe(self) -> Iterator[Any]:
        return self._families(())

    def collect(self) -> Iterator[Any]:
        return self._families(list(self.monitors.values()))

    def _families(self, monitors: Any) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        gauges = {
            "round": ("Current round (1 round = 1 synchronous gradient step)", "round"),
            "epoch": ("Current epoch (latest reported by a round or epoch event)", "epoch"),
            "loss": ("Mean training loss of the last round", "loss"),
            "validation_score": ("Validation score of the last epoch", "validation_score"),
            "samples_per_second": ("Training throughput of the last round", "samples_per_s"),
            "round_seconds": ("Wall time of the last round in seconds", "round_seconds"),
        }
        families = {
            name: GaugeMetricFamily(f"pipeline_{name}", doc, labels=["run"])
            for name, (doc, _) in gauges.items()
        }
        rounds = CounterMetricFamily(
            "pipeline_rounds", "Rounds completed, per kept run", labels=["run"]
        )
        retries = CounterMetricFamily(
            "pipeline_retries", "Rounds retried after a failure, per kept run", labels=["run"]
        )
        runs_total = failures_total = 0
        for monitor in monitors:
            runs_total += monitor.runs_total
            failures_total += monitor.failures_total
            for run in list(monitor.runs.values()):
                summary = run.summary()
                for name, (_, key) in gauges.items():
                    if summary[key] is not None:
                        families[name].add_metric([run.run], float(summary[key]))
                rounds.add_metric([run.run], run.rounds_done)
                retries.add_metric([run.run], run.retries)
        yield from families.values()
        yield rounds
        yield retries
        yield CounterMetricFamily(
            "pipeline_runs", "Training runs started", value=runs_total
        )
        yield CounterMetricFamily(
            "pipeline_failures", "Training runs that ended with status 'failed'",
            value=failures_total,
        )


_COLLECTOR = _Collector()
