"""The text parts of the training page (:mod:`analytics.dashboard`): the table of the last
runs and the header cards of the selected one (status, epoch, round, loss, validation score,
throughput, round latency, retries, elapsed time), as HTML strings built from
:class:`analytics.monitor.Run` records.
"""

from __future__ import annotations

import html
import math
import time
from typing import Any

from .monitor import Run

__all__ = ["elapsed", "header_html", "runs_table_html"]

STATUS_COLOURS = {
    "running": "#1f77b4",
    "finished": "#2ca02c",
    "stopped_early": "#17becf",
    "failed": "#d62728",
}


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


def elapsed(run: Run) -> float:
    """Seconds the run has taken so far (to now while it is running)."""
    if run.status == "running":
        return max(run.seconds, time.time() - run.started)
    return run.seconds


def runs_table_html(runs: list[Run], selected: Run | None) -> str:
    """The last runs, newest first, the selected one highlighted."""
    head = ("run", "estimator", "status", "epochs", "rounds", "loss", "best validation",
            "samples/s", "duration", "started")
    rows = []
    for r in runs:
        s = r.summary()
        loss = s["epoch_loss"] if s["epoch_loss"] is not None else s["loss"]
        colour = STATUS_COLOURS.get(r.status, "#7f7f7f")
        cells = (
            html.escape(r.run), html.escape(r.estimator),
            f"<span style='color:{colour}'>●</span> {html.escape(r.status)}",
            str(len(r.epochs)), str(r.rounds_done), _fmt(loss),
            _fmt(s["best_validation_score"]), _fmt_rate(s["samples_per_s"]),
            _fmt_seconds(elapsed(r)),
            time.strftime("%H:%M:%S", time.localtime(r.started)),
        )
        style = " style='background:#e8f0fb'" if r is selected else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        "<div style='font-weight:600;margin:6px 0 4px 0'>Last runs</div>"
        "<table style='border-collapse:collapse;width:100%;font-size:12px'>"
        "<tr style='text-align:left;color:#666;border-bottom:1px solid #ccc'>"
        + "".join(f"<th style='padding:3px 10px 3px 0;font-weight:500'>{h}</th>" for h in head)
        + "</tr>"
        + "".join(rows).replace("<td>", "<td style='padding:3px 10px 3px 0'>")
        + "</table>"
    )


def header_html(run: Run) -> str:
    """The status cards and the one-line detail of ``run``."""
    s = run.summary()
    colour = STATUS_COLOURS.get(run.status, "#7f7f7f")
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
        ("elapsed", _fmt_seconds(elapsed(run))),
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
    return (
        f"<div style='margin-top:4px'>{body}</div>"
        f"<div style='font-size:12px;color:#555;margin-top:4px'>{detail}</div>"
    )
