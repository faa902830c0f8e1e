"""The ``/individual-training`` page on the scheduler's own dashboard (Bokeh, live).

Importing this module adds the page to ``distributed.dashboard.scheduler.applications``, the
dict the scheduler reads when it starts, so:

- in-process: ``import analytics.dashboard`` before creating the ``LocalCluster``, then
  ``analytics.monitor.install(client)``;
- ``dask scheduler --preload analytics.dashboard`` (``dask_setup`` also starts the monitor, so
  runs are recorded before anyone opens the page);
- a cluster that already runs: ``analytics.monitor.install(client)`` registers
  :class:`TrainingPage`, which serves the page from a second Bokeh application added to the
  scheduler's HTTP server at run time.

The page lists under "More..." as "Training". ``applications`` is internal to distributed
(hence the ``<2027`` pin and ``tests/analytics/test_monitor.py``).
"""

from __future__ import annotations

import html
import logging
import math
import statistics
import time
from typing import Any

from bokeh.layouts import column, row
from bokeh.models import (
    ColumnDataSource,
    Div,
    FactorRange,
    HoverTool,
    NumeralTickFormatter,
    Range1d,
    Select,
    Span,
)
from bokeh.palettes import Category10_10
from bokeh.plotting import figure
from distributed.dashboard.components import add_periodic_callback
from distributed.dashboard.components.scheduler import BOKEH_THEME, env
from distributed.dashboard.scheduler import applications
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils import log_errors

from .monitor import Run, TrainingMonitor, attach

__all__ = ["PAGE", "TrainingDashboard", "TrainingPage", "add_page", "dask_setup", "training_doc"]

logger = logging.getLogger(__name__)

PAGE = "/individual-training"
UPDATE_MS = 500
LATEST = "__latest__"
STRAGGLER = 1.5

_STATUS_COLOURS = {
    "running": "#1f77b4",
    "finished": "#2ca02c",
    "stopped_early": "#17becf",
    "failed": "#d62728",
}


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def _fmt_rate(value: Any) -> str:
    if value is None:
        return "–"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{unit}"
    return f"{value:.3g}"


def _fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _short_worker(address: str) -> str:
    return address.split("://", 1)[-1]


def _figure(title: str, y_label: str, **kwargs: Any) -> Any:
    kwargs.setdefault("sizing_mode", "stretch_width")
    kwargs.setdefault("toolbar_location", "above")
    fig = figure(
        title=title,
        height=240,
        tools="pan,wheel_zoom,box_zoom,reset,save",
        **kwargs,
    )
    fig.yaxis.axis_label = y_label
    fig.title.text_font_size = "13px"
    fig.grid.grid_line_alpha = 0.4
    fig.min_border_bottom = 30
    return fig


class TrainingDashboard:
    """The Bokeh models of one page session, refreshed from a :class:`TrainingMonitor`.

    ``update()`` is cheap when nothing changed (it compares the monitor's and the run's
    ``version``); new rounds and epochs are streamed, not resent.
    """

    def __init__(self, monitor: TrainingMonitor):
        self.monitor = monitor
        self._monitor_version = -1
        self._run_id: str | None = None
        self._run_version = -1
        self._sent_rounds = 0
        self._sent_epochs = 0
        self._partition_round: int | None = None
        self._worker_colours: dict[str, str] = {}

        self.rounds = ColumnDataSource(
            {"round": [], "epoch": [], "loss": [], "samples_per_s": [], "round_ms": []}
        )
        self.epochs = ColumnDataSource(
            {
                "epoch": [], "round": [], "loss": [], "validation_score": [],
                "samples_per_s": [], "learning_rate": [],
            }
        )
        self.partitions = ColumnDataSource(
            {"partition": [], "ms": [], "worker": [], "colour": [], "hatch": []}
        )
        self.workers = ColumnDataSource({"worker": [], "ms": [], "n": [], "colour": []})
        self.select = Select(title="Run", value=LATEST, options=[(LATEST, "latest (follow)")],
                             width=360)
        self.header = Div(sizing_mode="stretch_width")

        x_range = Range1d(0, 1)  # shared by the per-round plots; set in update()
        self._x_range = x_range
        hover_round = HoverTool(
            tooltips=[("round", "@round"), ("epoch", "@epoch"), ("loss", "@loss{0.0000}")],
            mode="vline", renderers=[],
        )
        self.loss_fig = _figure("Training loss (line: rounds as reported, dots: epochs)", "loss",
                                x_range=x_range)
        per_round = self.loss_fig.line("round", "loss", source=self.rounds, color="#1f77b4",
                                       alpha=0.45, line_width=1.5, legend_label="round")
        self.loss_fig.line("round", "loss", source=self.epochs, color="#ff7f0e", line_width=2.5,
                           legend_label="epoch")
        self.loss_fig.scatter("round", "loss", source=self.epochs, color="#ff7f0e", size=7)
        hover_round.renderers = [per_round]
        self.loss_fig.add_tools(hover_round)
        self.loss_fig.legend.location = "top_right"
        self.loss_fig.legend.background_fill_alpha = 0.6

        self.val_fig = _figure("Validation score per epoch", "score")
        val_line = self.val_fig.line("epoch", "validation_score", source=self.epochs,
                                     color="#2ca02c", line_width=2.5)
        self.val_fig.scatter("epoch", "validation_score", source=self.epochs, color="#2ca02c",
                             size=8)
        self.val_fig.xaxis.axis_label = "epoch"
        self.val_fig.add_tools(HoverTool(
            renderers=[val_line], mode="vline",
            tooltips=[("epoch", "@epoch"), ("round", "@round"),
                      ("validation score", "@validation_score{0.0000}"),
                      ("learning rate", "@learning_rate{0.[0000]e}")],
        ))

        self.rate_fig = _figure("Throughput (samples/s)", "samples/s", x_range=x_range)
        rate_line = self.rate_fig.line("round", "samples_per_s", source=self.rounds,
                                       color="#9467bd", line_width=1.5)
        self.rate_fig.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
        self.rate_fig.add_tools(HoverTool(
            renderers=[rate_line], mode="vline",
            tooltips=[("round", "@round"), ("samples/s", "@samples_per_s{0.[0]a}")],
        ))

        self.latency_fig = _figure("Round latency (ms)", "ms", x_range=x_range)
        self.latency_fig.varea(x="round", y1=0, y2="round_ms", source=self.rounds,
                               color="#8c564b", alpha=0.25)
        latency = self.latency_fig.line("round", "round_ms", source=self.rounds,
                                        color="#8c564b", line_width=1.5)
        self.latency_fig.add_tools(HoverTool(
            renderers=[latency], mode="vline",
            tooltips=[("round", "@round"), ("latency", "@round_ms{0.0} ms")],
        ))
        # Both start at zero: a 5% wobble should look like one.
        self.rate_fig.y_range.start = 0
        self.latency_fig.y_range.start = 0
        for fig in (self.loss_fig, self.rate_fig, self.latency_fig):
            fig.xaxis.axis_label = "round"

        # Bars need no pan/zoom; without a toolbar the title has the width.
        self.part_fig = _figure("Gradient time per partition, last round", "ms",
                                x_range=FactorRange(factors=[]), toolbar_location=None)
        self.part_fig.vbar(x="partition", top="ms", source=self.partitions, width=0.85,
                           color="colour", legend_field="worker", line_color=None,
                           hatch_pattern="hatch", hatch_color="white", hatch_alpha=0.6)
        self.part_fig.add_tools(HoverTool(tooltips=[
            ("partition", "@partition"), ("worker", "@worker"), ("time", "@ms{0.0} ms"),
        ]))
        self.part_fig.xaxis.axis_label = "partition"
        self.part_fig.xgrid.grid_line_color = None
        self.part_fig.legend.title = "worker"
        self.part_fig.add_layout(self.part_fig.legend[0], "right")
        self.part_fig.y_range.start = 0
        self.median = Span(location=0, dimension="width", line_dash="dashed",
                           line_color="#444444", line_width=1.5)
        self.part_fig.add_layout(self.median)

        self.worker_fig = _figure("Busy time per worker (partitions), last round", "",
                                  y_range=FactorRange(factors=[]), width=420,
                                  sizing_mode="fixed", toolbar_location=None)
        self.worker_fig.hbar(y="worker", right="ms", source=self.workers, height=0.7,
                             color="colour", line_color=None)
        self.worker_fig.add_tools(HoverTool(tooltips=[
            ("worker", "@worker"), ("partitions", "@n"), ("gradient time", "@ms{0.0} ms"),
        ]))
        self.worker_fig.xaxis.axis_label = "ms (sum over its partitions)"
        self.worker_fig.x_range.start = 0
        self.worker_fig.ygrid.grid_line_color = None

        # A plain HTML table: Bokeh 3.9's DataTable misses same-length data replacements
        # (bokeh#15328), and ten rows need no grid widget.
        self.table = Div(sizing_mode="stretch_width")
        self.select.on_change("value", lambda attr, old, new: self.update())

        self.root = column(
            row(self.select, self.header, sizing_mode="stretch_width"),
            row(self.loss_fig, self.val_fig, sizing_mode="stretch_width"),
            row(self.rate_fig, self.latency_fig, sizing_mode="stretch_width"),
            row(self.part_fig, self.worker_fig, sizing_mode="stretch_width"),
            self.table,
            sizing_mode="stretch_width",
        )

    # -- callbacks ------------------------------------------------------------------------------
    def _selected_run(self) -> Run | None:
        if self.select.value != LATEST:
            run = self.monitor.runs.get(self.select.value)
            if run is not None:
                return run
            self.select.value = LATEST  # evicted
        return self.monitor.latest()

    @log_errors
    def update(self) -> None:
        run = self._selected_run()
        self._update_runs(run)
        if run is None:
            self.header.text = (
                "<div style='padding:14px;color:#555'>No training runs yet. Fit an estimator on "
                "this cluster: its <code>pipeline.train</code> events show up here.</div>"
            )
            return
        if run.run != self._run_id:
            self._reset(run)
        elif run.version != self._run_version:
            self._stream(run)
        self._update_partitions(run)
        self._update_header(run)

    # -- pieces ---------------------------------------------------------------------------------
    def _update_runs(self, selected: Run | None) -> None:
        runs = list(reversed(self.monitor.runs.values()))
        if self.monitor.version != self._monitor_version:
            self._monitor_version = self.monitor.version
            options = [(LATEST, "latest (follow)")] + [
                (r.run, f"{r.run} · {r.estimator or '?'} · {r.status}") for r in runs
            ]
            if options != [tuple(o) for o in self.select.options]:
                self.select.options = options
        head = ("run", "estimator", "status", "epochs", "rounds", "loss", "best validation",
                "samples/s", "duration", "started")
        rows = []
        for r in runs:
            s = r.summary()
            loss = s["epoch_loss"] if s["epoch_loss"] is not None else s["loss"]
            colour = _STATUS_COLOURS.get(r.status, "#7f7f7f")
            cells = (
                html.escape(r.run), html.escape(r.estimator),
                f"<span style='color:{colour}'>●</span> {html.escape(r.status)}",
                str(len(r.epochs)), str(r.rounds_done), _fmt(loss),
                _fmt(s["best_validation_score"]), _fmt_rate(s["samples_per_s"]),
                _fmt_seconds(self._elapsed(r)),
                time.strftime("%H:%M:%S", time.localtime(r.started)),
            )
            style = " style='background:#e8f0fb'" if r is selected else ""
            rows.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        text = (
            "<div style='font-weight:600;margin:6px 0 4px 0'>Last runs</div>"
            "<table style='border-collapse:collapse;width:100%;font-size:12px'>"
            "<tr style='text-align:left;color:#666;border-bottom:1px solid #ccc'>"
            + "".join(f"<th style='padding:3px 10px 3px 0;font-weight:500'>{h}</th>" for h in head)
            + "</tr>"
            + "".join(rows).replace("<td>", "<td style='padding:3px 10px 3px 0'>")
            + "</table>"
        )
        if text != self.table.text:
            self.table.text = text

    def _round_columns(self, records: list[dict[str, Any]]) -> dict[str, list[Any]]:
        return {
            "round": [r["round"] for r in records],
            "epoch": [r["epoch"] for r in records],
            "loss": [_nan(r["loss"]) for r in records],
            "samples_per_s": [_nan(r["samples_per_s"]) for r in records],
            "round_ms": [_nan(r["round_seconds"]) * 1e3 for r in records],
        }

    def _epoch_columns(self, run: Run, records: list[dict[str, Any]]) -> dict[str, list[Any]]:
        last_round = (run.last_round or {}).get("round", 0)
        return {
            "epoch": [e["epoch"] for e in records],
            "round": [e["round"] if e["round"] is not None else last_round for e in records],
            "loss": [_nan(e["loss"]) for e in records],
            "validation_score": [_nan(e["validation_score"]) for e in records],
            "samples_per_s": [_nan(e["samples_per_s"]) for e in records],
            "learning_rate": [_nan(e["learning_rate"]) for e in records],
        }

    def _reset(self, run: Run) -> None:
        self._run_id = run.run
        self._run_version = run.version
        self.rounds.data = self._round_columns(list(run.rounds))
        self.epochs.data = self._epoch_columns(run, run.epochs)
        self._sent_rounds = run.n_round_events
        self._sent_epochs = len(run.epochs)
        self._partition_round = None
        self._worker_colours = {}
        self._update_x_range(run)

    def _stream(self, run: Run) -> None:
        self._run_version = run.version
        new_rounds = run.n_round_events - self._sent_rounds
        if new_rounds > 0:
            records = list(run.rounds)[-new_rounds:]
            self.rounds.stream(self._round_columns(records), rollover=run.max_rounds)
            self._sent_rounds = run.n_round_events
        if len(run.epochs) > self._sent_epochs:
            self.epochs.stream(self._epoch_columns(run, run.epochs[self._sent_epochs:]))
            self._sent_epochs = len(run.epochs)
        self._update_x_range(run)

    def _update_x_range(self, run: Run) -> None:
        first = run.rounds[0]["round"] if run.rounds else 0
        last = (run.last_round or {}).get("round", 0)
        pad = max(0.5, 0.02 * (last - first))
        self._x_range.start = first - pad
        self._x_range.end = max(last, first + 1) + pad

    def _update_partitions(self, run: Run) -> None:
        if run.partition_round == self._partition_round:
            return
        self._partition_round = run.partition_round
        seconds, workers = run.partition_seconds, run.partition_workers
        if len(workers) != len(seconds):
            workers = (list(workers) + ["?"] * len(seconds))[: len(seconds)]
        for w in sorted(set(workers)):
            if w not in self._worker_colours:
                self._worker_colours[w] = Category10_10[len(self._worker_colours) % 10]
        labels = [str(i) for i in range(len(seconds))]
        median = statistics.median(seconds) if seconds else 0.0
        self.part_fig.x_range.factors = labels
        self.partitions.data = {
            "partition": labels,
            "ms": [s * 1e3 for s in seconds],
            "worker": [_short_worker(w) for w in workers],
            "colour": [self._worker_colours[w] for w in workers],
            "hatch": ["/" if median > 0 and s > STRAGGLER * median else " " for s in seconds],
        }
        self.median.location = median * 1e3
        if seconds:
            ratio = max(seconds) / median if median > 0 else math.inf
            self.part_fig.title.text = (
                f"Round {run.partition_round}: gradient time per partition · slowest = "
                f"{ratio:.1f}× median (dashed) · hatched: > {STRAGGLER:g}× median"
            )
        per_worker: dict[str, list[float]] = {}
        for s, w in zip(seconds, workers, strict=True):
            per_worker.setdefault(w, []).append(s)
        names = sorted(per_worker)
        labels = [f"{_short_worker(w)} ({len(per_worker[w])})" for w in names]
        self.worker_fig.y_range.factors = labels
        self.workers.data = {
            "worker": labels,
            "ms": [sum(per_worker[w]) * 1e3 for w in names],
            "n": [len(per_worker[w]) for w in names],
            "colour": [self._worker_colours[w] for w in names],
        }

    @staticmethod
    def _elapsed(run: Run) -> float:
        if run.status == "running":
            return max(run.seconds, time.time() - run.started)
        return run.seconds

    def _update_header(self, run: Run) -> None:
        s = run.summary()
        colour = _STATUS_COLOURS.get(run.status, "#7f7f7f")
        cards = [
            ("status", f"<span style='color:{colour}'>{html.escape(run.status)}</span>"),
            ("epoch", _fmt(s["epoch"], "d") if s["epoch"] is not None else "–"),
            ("round", _fmt(s["round"], "d") if s["round"] is not None else "–"),
            ("loss", _fmt(s["loss"])),
            ("validation", _fmt(s["validation_score"])),
            ("samples/s", _fmt_rate(s["samples_per_s"])),
            ("round latency",
             "–" if s["round_seconds"] is None else f"{s['round_seconds'] * 1e3:.0f} ms"),
            ("retries", str(s["retries"])),
            ("elapsed", _fmt_seconds(self._elapsed(run))),
        ]
        card = (
            "<div style='display:inline-block;min-width:92px;margin:0 10px 0 0;padding:6px 10px;"
            "border-left:4px solid {c};background:#f6f7f9;border-radius:3px'>"
            "<div style='font-size:11px;color:#666;text-transform:uppercase'>{k}</div>"
            "<div style='font-size:20px;font-weight:600'>{v}</div></div>"
        )
        body = "".join(card.format(c=colour, k=k, v=v) for k, v in cards)
        detail = (
            f"{html.escape(run.run)} · {html.escape(run.estimator or 'estimator ?')} · "
            f"{s['n_partitions'] if s['n_partitions'] is not None else '?'} partitions · "
            f"{_fmt_rate(s['n_samples'])} samples"
        )
        if s["error"]:
            detail += f" · <span style='color:#d62728'>{html.escape(str(s['error']))}</span>"
        elif run.last_retry:
            detail += (
                f" · last retry: round {run.last_retry.get('round')} "
                f"({html.escape(str(run.last_retry.get('reason')))})"
            )
        self.header.text = (
            f"<div style='margin-top:4px'>{body}</div>"
            f"<div style='font-size:12px;color:#555;margin-top:4px'>{detail}</div>"
        )


@log_errors
def training_doc(scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """Bokeh document function ``(scheduler, extra, doc)`` of the page."""
    view = TrainingDashboard(attach(scheduler))
    view.update()
    add_periodic_callback(doc, view, UPDATE_MS)
    doc.title = "Dask: Training"
    doc.add_root(view.root)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME


applications[PAGE] = training_doc


def dask_setup(scheduler: Any) -> None:
    """``--preload`` hook: start recording runs as soon as the scheduler starts."""
    attach(scheduler)


def add_page(scheduler: Any) -> Any:
    """Serve the page on a running scheduler's dashboard, if it is not served already.

    Returns the Bokeh application added to ``scheduler.http_application`` (stop it to remove
    the page), or ``None`` when the page is already there or the dashboard is off.
    Must run on the scheduler's event loop (a plugin's ``start``, ``run_on_scheduler``).
    """
    from distributed.dashboard.core import BokehApplication
    from distributed.dashboard.scheduler import template_variables
    from tornado.ioloop import IOLoop

    http_app = getattr(scheduler, "http_application", None)
    bokeh_apps = [a for a in getattr(http_app, "applications", ()) if hasattr(a, "app_paths")]
    if not bokeh_apps:
        logger.warning("the scheduler has no Bokeh dashboard; %s is not served", PAGE)
        return None
    if any(PAGE in app.app_paths for app in bokeh_apps):
        return None
    # template_variables is memoized per scheduler: the dict, and its "plots" list, are the ones
    # every page of this dashboard renders its navbar from, so the link shows up in "More...".
    variables = template_variables(scheduler)
    link = {"url": PAGE.strip("/"), "name": "Training"}
    if link not in variables["plots"]:
        variables["plots"].append(link)
        variables["plots"].sort(key=lambda d: d["name"])
    app = BokehApplication(
        {PAGE: training_doc}, scheduler, prefix=bokeh_apps[0].prefix,
        template_variables=variables,
    )
    http_app.add_application(app)
    app.initialize(IOLoop.current())
    app.start()
    return app


class TrainingPage(SchedulerPlugin):
    """Scheduler plugin serving :data:`PAGE` on a scheduler started without this module.

    Idempotent; does nothing when the page is already served (preload or in-process import).
    """

    name = "pipeline-training-page"
    idempotent = True

    def __init__(self) -> None:
        self._app: Any = None
        self._scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self._scheduler = scheduler
        attach(scheduler)
        self._app = add_page(scheduler)

    async def close(self) -> None:
        if self._app is None:
            return
        self._app.stop()
        apps = self._scheduler.http_application.applications
        if self._app in apps:
            apps.remove(self._app)
        self._app = None
