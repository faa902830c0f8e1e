"""The Bokeh models of one session of the training page (:mod:`analytics.dashboard`): loss,
validation score, throughput and round latency per round, gradient time per partition and busy
time per worker of the last round, refreshed from a :class:`analytics.monitor.TrainingMonitor`
(the text parts: :mod:`analytics.run_cards`).
"""

from __future__ import annotations

import math
import statistics
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
from distributed.utils import log_errors

from .monitor import Run, TrainingMonitor
from .run_cards import header_html, runs_table_html

__all__ = ["TrainingDashboard"]

LATEST = "__latest__"
STRAGGLER = 1.5


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


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
        text = runs_table_html(runs, selected)
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

    def _update_header(self, run: Run) -> None:
        self.header.text = header_html(run)

