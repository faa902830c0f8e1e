"""The Bokeh figures of :func:`analytics.report.report`: training curves (loss, validation
score, throughput, round latency per epoch, from the model's ``history_``), the confusion
matrix, ROC and precision-recall curves, and the regression scatter and residual histogram.
Inputs are host arrays and summaries already reduced on the cluster.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    HoverTool,
    LinearColorMapper,
    NumeralTickFormatter,
    Range1d,
)
from bokeh.palettes import Blues256, Category10_10
from bokeh.plotting import figure

__all__ = ["confusion_figure", "pr_figure", "residual_figure", "roc_figure", "scatter_figure",
           "training_figures"]

MAX_CURVE_POINTS = 2000
CURVE_SIZE = 370  # px; confusion matrix, ROC and PR side by side fit a 1300 px window


def _thin(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """At most MAX_CURVE_POINTS evenly spaced points of a curve, ends kept (for the browser)."""
    n = len(arrays[0])
    if n <= MAX_CURVE_POINTS:
        return arrays
    idx = np.unique(np.linspace(0, n - 1, MAX_CURVE_POINTS).round().astype(int))
    return tuple(a[idx] for a in arrays)


def _figure(title: str, x_label: str, y_label: str, **kwargs: Any) -> Any:
    kwargs.setdefault("width", 560)
    kwargs.setdefault("height", 340)
    fig = figure(title=title, tools="pan,wheel_zoom,box_zoom,reset,save",
                 toolbar_location="above", **kwargs)
    fig.xaxis.axis_label = x_label
    fig.yaxis.axis_label = y_label
    fig.title.text_font_size = "14px"
    fig.toolbar.logo = None
    fig.grid.grid_line_alpha = 0.4
    return fig


def _history(model: Any) -> list[dict[str, Any]]:
    history = list(getattr(model, "history_", None) or [])
    if history:
        return history
    losses = list(getattr(model, "loss_curve_", None) or [])
    scores = list(getattr(model, "validation_scores_", None) or [])
    return [{"epoch": i, "loss": loss, "validation_score": scores[i] if i < len(scores) else None}
            for i, loss in enumerate(losses)]


def _values(history: list[dict[str, Any]], key: str, scale: float = 1.0) -> list[float]:
    return [math.nan if h.get(key) is None else float(h[key]) * scale for h in history]


def training_figures(model: Any) -> list[Any]:
    history = _history(model)
    if not history:
        return []
    data = {
        "epoch": [h.get("epoch", i) for i, h in enumerate(history)],
        "loss": _values(history, "loss"),
        "validation_score": _values(history, "validation_score"),
        "samples_per_s": _values(history, "samples_per_s"),
        "round_ms": _values(history, "round_seconds_median", 1e3),
        "seconds": _values(history, "seconds"),
        "learning_rate": _values(history, "learning_rate"),
    }
    source = ColumnDataSource(data)
    figs = []

    loss = _figure("Training loss per epoch", "epoch", "loss")
    line = loss.line("epoch", "loss", source=source, line_width=2.5, color="#ff7f0e")
    loss.scatter("epoch", "loss", source=source, size=6, color="#ff7f0e")
    loss.add_tools(HoverTool(renderers=[line], mode="vline", tooltips=[
        ("epoch", "@epoch"), ("loss", "@loss{0.00000}"), ("learning rate", "@learning_rate"),
    ]))
    figs.append(loss)

    if any(math.isfinite(v) for v in data["validation_score"]):
        val = _figure("Validation score per epoch", "epoch", "score", x_range=loss.x_range)
        line = val.line("epoch", "validation_score", source=source, line_width=2.5,
                        color="#2ca02c")
        val.scatter("epoch", "validation_score", source=source, size=6, color="#2ca02c")
        val.add_tools(HoverTool(renderers=[line], mode="vline", tooltips=[
            ("epoch", "@epoch"), ("validation score", "@validation_score{0.0000}"),
        ]))
        figs.append(val)

    if any(math.isfinite(v) for v in data["samples_per_s"]):
        rate = _figure("Throughput per epoch", "epoch", "samples/s", x_range=loss.x_range)
        bars = rate.vbar(x="epoch", top="samples_per_s", source=source, width=0.8,
                         color="#9467bd", alpha=0.8)
        rate.y_range.start = 0
        rate.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
        rate.add_tools(HoverTool(renderers=[bars], tooltips=[
            ("epoch", "@epoch"), ("samples/s", "@samples_per_s{0,0}"),
            ("epoch time", "@seconds{0.00} s"),
        ]))
        figs.append(rate)
    if any(math.isfinite(v) for v in data["round_ms"]):
        lat = _figure("Round latency per epoch (median)", "epoch", "ms", x_range=loss.x_range)
        line = lat.line("epoch", "round_ms", source=source, line_width=2.5, color="#8c564b")
        lat.scatter("epoch", "round_ms", source=source, size=6, color="#8c564b")
        lat.y_range.start = 0
        lat.add_tools(HoverTool(renderers=[line], mode="vline", tooltips=[
            ("epoch", "@epoch"), ("median round", "@round_ms{0.0} ms"),
        ]))
        figs.append(lat)
    return figs


def confusion_figure(cm: np.ndarray, classes: np.ndarray) -> Any:
    labels = [str(c) for c in classes]
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    true_l, pred_l, count, frac, text, text_colour = [], [], [], [], [], []
    for i, t in enumerate(labels):
        for j, p in enumerate(labels):
            true_l.append(t)
            pred_l.append(p)
            count.append(int(cm[i, j]))
            frac.append(float(share[i, j]))
            text.append(f"{int(cm[i, j]):,}\n{share[i, j]:.1%}")
            text_colour.append("white" if share[i, j] > 0.5 else "#222222")
    source = ColumnDataSource({"true": true_l, "pred": pred_l, "count": count, "share": frac,
                               "text": text, "text_colour": text_colour})
    size = max(CURVE_SIZE, min(560, 120 + 40 * len(labels)))
    fig = _figure("Confusion matrix (colour: share of true class)", "predicted", "true",
                  x_range=labels, y_range=list(reversed(labels)), width=size + 30, height=size)
    mapper = LinearColorMapper(palette=Blues256[::-1], low=0, high=1)
    fig.rect("pred", "true", 1, 1, source=source, line_color="white",
             fill_color={"field": "share", "transform": mapper})
    if len(labels) <= 12:
        fig.text("pred", "true", text="text", source=source, text_align="center",
                 text_baseline="middle", text_font_size="12px", text_color="text_colour")
    fig.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
    fig.add_tools(HoverTool(tooltips=[("true", "@true"), ("predicted", "@pred"),
                                      ("rows", "@count{0,0}"), ("share of true", "@share{0.0%}")]))
    fig.grid.grid_line_color = None
    fig.axis.major_tick_line_color = None
    return fig


def roc_figure(curves: list[tuple[Any, ...]]) -> Any:
    fig = _figure("ROC curve", "false positive rate", "true positive rate",
                  x_range=Range1d(-0.01, 1.01), y_range=Range1d(-0.01, 1.01),
                  width=CURVE_SIZE, height=CURVE_SIZE)
    fig.line([0, 1], [0, 1], line_dash="dashed", color="#999999")
    for k, (label, fpr, tpr, auc, *_rest) in enumerate(curves):
        fpr, tpr = _thin(np.asarray(fpr, float), np.asarray(tpr, float))
        fig.line(fpr, tpr, line_width=2.5, color=Category10_10[k % 10],
                 legend_label=f"{label}: AUC {auc:.3f}")
    fig.legend.location = "bottom_right"
    fig.legend.click_policy = "hide"
    return fig


def pr_figure(curves: list[tuple[Any, ...]]) -> Any:
    fig = _figure("Precision-recall curve", "recall", "precision",
                  x_range=Range1d(-0.01, 1.01), y_range=Range1d(-0.01, 1.01),
                  width=CURVE_SIZE, height=CURVE_SIZE)
    for k, (label, *_roc, precision, recall, ap, prevalence) in enumerate(curves):
        precision, recall = _thin(np.asarray(precision, float), np.asarray(recall, float))
        colour = Category10_10[k % 10]
        fig.step(recall, precision, mode="after", line_width=2.5, color=colour,
                 legend_label=f"{label}: AP {ap:.3f}")
        if len(curves) == 1:  # the no-skill line: precision = prevalence
            fig.line([0, 1], [prevalence, prevalence], line_dash="dashed", color="#999999")
    fig.legend.location = "bottom_left"
    fig.legend.click_policy = "hide"
    return fig


def scatter_figure(y: np.ndarray, p: np.ndarray) -> Any:
    fig = _figure(f"Predicted vs true ({len(y):,} sampled rows)", "true", "predicted",
                  width=460, height=CURVE_SIZE)
    if len(y):
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        fig.line([lo, hi], [lo, hi], line_dash="dashed", color="#999999")
    fig.scatter(y, p, size=4, alpha=0.35, color="#1f77b4")
    return fig


def residual_figure(residuals: np.ndarray) -> Any:
    fig = _figure(f"Residuals: true − predicted ({len(residuals):,} sampled rows)",
                  "residual", "rows", width=560, height=CURVE_SIZE)
    if len(residuals):
        counts, edges = np.histogram(residuals, bins=min(60, max(10, len(residuals) // 50)))
        fig.quad(left=edges[:-1], right=edges[1:], bottom=0, top=counts, color="#8c564b",
                 alpha=0.75, line_color="white")
        fig.line([0, 0], [0, counts.max()], line_dash="dashed", color="#333333")
    fig.y_range.start = 0
    return fig
