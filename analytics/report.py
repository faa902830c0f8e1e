"""One self-contained HTML file describing a fitted model: training curves and test metrics.

The file embeds Bokeh's JavaScript (inline resources, ~1.3 MB), so it opens offline and can
be mailed or archived. Test-set numbers come from :mod:`analytics.metrics`, which reduces
partials on the cluster; only summaries (and a bounded sample for the regression scatter)
reach this process. The figures are drawn by :mod:`analytics.report_figures`; this module
evaluates the model, samples, and writes the page.

Example
-------
>>> from analytics.report import report
>>> report(model, X_test, y_test, "report.html")  # doctest: +SKIP
PosixPath('report.html')
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.base import is_dask_collection

from analytics import class_report, metrics
from pipeline.backend import to_host

__all__ = ["report"]

SAMPLE_ROWS = 5000  # regression scatter and residual histogram
MAX_CURVE_CLASSES = 10  # one-vs-rest ROC/PR curves drawn for at most this many classes
# BokehJS inlined (no CDN). The report uses plots only: the widgets, tables, WebGL and MathJax
# bundles would add ~2.7 MB for nothing.


def _bokeh_js() -> str:
    """BokehJS inlined in the page (bokeh is imported on first use: workers import this package)."""
    from bokeh.resources import Resources

    return Resources(mode="inline", components=["bokeh"]).render()


def report(model: Any, X_test: Any, y_test: Any, path: str | os.PathLike[str], *,
           config: Any = None) -> Path:
    """Write an offline HTML report of ``model`` evaluated on ``(X_test, y_test)``.

    Parameters
    ----------
    model : fitted MLPClassifier or MLPRegressor (or anything with the same attributes)
        Read: ``loss_curve_``, ``validation_scores_``, ``history_`` (per-epoch dicts with
        ``epoch``, ``loss``, ``validation_score``, ``samples_per_s``, ``seconds``,
        ``learning_rate``, ``round_seconds_median``), ``train_summary_`` if present,
        ``get_params()``; ``classes_`` and ``predict_proba`` make it a classifier.
    X_test, y_test : dask or in-memory collections, row-aligned
        Predictions are lazy (``model.predict_proba(X_test)`` / ``model.predict(X_test)``),
        persisted once, and reduced by :mod:`analytics.metrics`.
    path : path-like
        The HTML file to write (replaced atomically).
    config : dataclass or dict, optional
        The run's configuration (e.g. a ``pipeline.config.RunConfig``), shown next to the
        estimator parameters.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    Classifier: accuracy, log loss, confusion matrix (figure and table), precision, recall
    and F1 per class, ROC and precision-recall curves (binary: of the positive class
    ``classes_[1]``, with AUC and average precision; multi-class: one-vs-rest for up to 10
    classes). Images (``X_test`` with 3 or more dimensions): a grid of the 16 most
    confidently misclassified test images. Regressor: MSE, RMSE, MAE, R² on all rows; the
    predicted-vs-true scatter and the residual histogram use a uniform sample of at most
    5,000 rows (first output only for multi-output models). Throughput is per epoch: the model
    keeps per-epoch records, not per-round ones.
    """
    path = Path(path)
    is_classifier = hasattr(model, "classes_") and hasattr(model, "predict_proba")
    tables = ""
    if is_classifier:
        cards, figures, tables = _classifier_section(model, X_test, y_test)
    else:
        cards, figures = _regressor_section(model, X_test, y_test)
    from analytics.report_figures import training_figures
    training = training_figures(model)
    page = _page(model, cards, training, figures, config, tables)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same directory: atomic replace
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# -- evaluation ---------------------------------------------------------------------------------
def _persist(*collections: Any) -> tuple[Any, ...]:
    """Persist the dask ones together, so each metric does not recompute the predictions."""
    lazy = [i for i, c in enumerate(collections) if is_dask_collection(c)]
    if not lazy:
        return collections
    with warnings.catch_warnings():
        # y (a dask Series) and the predictions (dask Arrays) come from the same read; one
        # persist of both reads the data once, which is what dask's "mixed collections"
        # warning is about: materialising the expressions here is the point.
        warnings.filterwarnings("ignore", message="Computing mixed collections",
                                category=UserWarning)
        persisted = dask.persist(*(collections[i] for i in lazy))
    out = list(collections)
    for i, c in zip(lazy, persisted, strict=True):
        out[i] = c
    return tuple(out)


def _column(a: Any, j: int) -> Any:
    return a[:, j] if getattr(a, "ndim", 1) == 2 else a


def _classifier_section(model: Any, X: Any, y: Any) -> tuple[list[tuple[str, str]], list[Any],
                                                              str]:
    classes = np.asarray(model.classes_)
    y, proba, pred = _persist(y, model.predict_proba(X), model.predict(X))
    cm = np.asarray(metrics.confusion_matrix(y, pred, labels=classes))
    per_class, _ = class_report.per_class_table(y, pred, classes)
    tables = (f"<div class='cols'><div><h3>Per class</h3>{per_class}</div><div><h3>Confusion "
              f"matrix (counts)</h3>{class_report.confusion_table(cm, classes)}</div></div>")
    if getattr(X, "ndim", 2) >= 3:  # images: show the worst mistakes
        tables += ("<h3>Most confidently misclassified test images</h3>"
                   + class_report.misclassified_grid(X, y, proba, classes))
    cards = [
        ("test rows", f"{int(cm.sum()):,}"),
        ("accuracy", f"{metrics.accuracy_score(y, pred):.4f}"),
        ("log loss", f"{metrics.log_loss(y, proba, labels=classes):.4f}"),
    ]
    curves = []  # (label, fpr, tpr, auc, precision, recall, ap, prevalence)
    if len(classes) == 2:
        targets = [(f"class {classes[1]}", y, _column(proba, 1), classes[1])]
    else:
        targets = [(str(c), y == c, _column(proba, j), True)
                   for j, c in enumerate(classes[:MAX_CURVE_CLASSES])]
    for j, (label, y_true, score, pos) in enumerate(targets):
        fpr, tpr, _ = metrics.roc_curve(y_true, score, pos_label=pos)
        precision, recall, _ = metrics.precision_recall_curve(
            y_true, score, pos_label=pos, drop_intermediate=True
        )
        auc = float(metrics.roc_auc_score(y_true, score))
        ap = float(metrics.average_precision_score(y_true, score, pos_label=pos))
        row = len(classes) - 1 if len(classes) == 2 else j
        prevalence = cm[row].sum() / cm.sum() if cm.sum() else math.nan
        curves.append((label, fpr, tpr, auc, precision, recall, ap, prevalence))
    if len(classes) == 2:
        cards += [("ROC AUC", f"{curves[0][3]:.4f}"), ("average precision", f"{curves[0][6]:.4f}")]
    else:
        cards.append(("macro ROC AUC (OvR)", f"{np.mean([c[3] for c in curves]):.4f}"))
    from analytics.report_figures import confusion_figure, pr_figure, roc_figure
    return (cards, [confusion_figure(cm, classes), roc_figure(curves), pr_figure(curves)],
            tables)


def _blocks(a: Any) -> list[Any]:
    """One delayed piece per partition (rows), or the whole in-memory object."""
    if not is_dask_collection(a):
        return [a]
    if hasattr(a, "to_delayed") and hasattr(a, "npartitions"):
        return list(a.to_delayed())
    if a.ndim == 2:
        a = a.rechunk({1: -1})
    return list(a.to_delayed().ravel())


def _sample_rows(i: int, y: Any, p: Any, k: int, seed: int) -> tuple[np.ndarray, ...]:
    """The ``k`` rows of one partition with the smallest random keys (keys, y, prediction)."""
    y, p = to_host(y), to_host(p)
    if y.ndim == 2:
        y = y[:, 0]
    if p.ndim == 2:
        p = p[:, 0]
    if len(y) != len(p):
        raise ValueError(f"partition {i}: {len(y)} rows of y_test but {len(p)} predictions")
    keys = np.random.default_rng([seed, i]).random(len(y))
    keep = np.argsort(keys)[:k]
    return keys[keep], y[keep].astype(float), p[keep].astype(float)


def _sample(y: Any, pred: Any, k: int = SAMPLE_ROWS, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A uniform sample of at most ``k`` (y, prediction) pairs, without knowing the length:
    each row gets a random key, each partition keeps its ``k`` smallest, then the union its."""
    if is_dask_collection(y) != is_dask_collection(pred):
        # computed cuDF/CuPy refuse np.asarray: to_host is the copy to the host
        y, pred = (to_host(dask.compute(y)[0]) if is_dask_collection(y) else y,
                   to_host(dask.compute(pred)[0]) if is_dask_collection(pred) else pred)
    if (hasattr(y, "chunks") and hasattr(pred, "chunks") and is_dask_collection(y)
            and not any(math.isnan(c) for c in y.chunks[0]) and y.chunks[0] != pred.chunks[0]):
        pred = pred.rechunk({0: y.chunks[0]})
    ys, ps = _blocks(y), _blocks(pred)
    if len(ys) != len(ps):
        raise ValueError(f"y_test has {len(ys)} partitions but the predictions {len(ps)}")
    sample = dask.delayed(_sample_rows, pure=True)
    (parts,) = dask.compute([sample(i, a, b, k, seed) for i, (a, b) in enumerate(zip(ys, ps,
                                                                                    strict=True))])
    keys = np.concatenate([p[0] for p in parts])
    keep = np.argsort(keys)[:k]
    return (np.concatenate([p[1] for p in parts])[keep],
            np.concatenate([p[2] for p in parts])[keep])


def _regressor_section(model: Any, X: Any, y: Any) -> tuple[list[tuple[str, str]], list[Any]]:
    y, pred = _persist(y, model.predict(X))
    mse = float(metrics.mean_squared_error(y, pred))
    y_s, p_s = _sample(y, pred)
    cards = [
        ("MSE", f"{mse:.4g}"),
        ("RMSE", f"{math.sqrt(mse):.4g}"),
        ("MAE", f"{float(metrics.mean_absolute_error(y, pred)):.4g}"),
        ("R²", f"{float(metrics.r2_score(y, pred)):.4f}"),
    ]
    from analytics.report_figures import residual_figure, scatter_figure
    return cards, [scatter_figure(y_s, p_s), residual_figure(y_s - p_s)]


# -- page ---------------------------------------------------------------------------------------
def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        rows = []
        for k, v in value.items():
            rows += _flatten(v, f"{prefix}{k}.")
        return rows
    return [(prefix.rstrip("."), value)]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value) if isinstance(value, str) else str(value)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_show(v))}</td></tr>"
        for k, v in rows
    )
    return f"<table class='kv'>{body}</table>"


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px 32px;
       color: #222; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px 0; } h2 { font-size: 18px; margin: 28px 0 10px 0;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 14px; }
.card { border-left: 4px solid #1f77b4; background: #f6f7f9; padding: 6px 12px; min-width: 110px;
        border-radius: 3px; }
.card .k { font-size: 11px; color: #666; text-transform: uppercase; }
.card .v { font-size: 22px; font-weight: 600; }
.grid { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.note { color: #666; font-size: 13px; }
.kv { border-collapse: collapse; font-size: 13px; }
.kv th { text-align: left; font-weight: 500; color: #555; padding: 2px 18px 2px 0;
         vertical-align: top; }
.kv td { font-family: ui-monospace, Menlo, Consolas, monospace; padding: 2px 0; }
.cols { display: flex; flex-wrap: wrap; gap: 48px; }
.num { border-collapse: collapse; font-size: 13px; }
.num th, .num td { padding: 2px 10px; text-align: right; border-bottom: 1px solid #eee; }
.num td { font-family: ui-monospace, Menlo, Consolas, monospace; }
.errs { display: flex; flex-wrap: wrap; gap: 12px; }
.err { margin: 0; font-size: 12px; text-align: center; }
.err img { image-rendering: pixelated; border: 1px solid #ccc; display: block; margin: auto; }
"""


def _page(model: Any, cards: list[tuple[str, str]], training: list[Any], evaluation: list[Any],
          config: Any, tables: str = "") -> str:
    name = type(model).__name__
    summary = dict(getattr(model, "train_summary_", None) or {})
    sub = [time.strftime("%Y-%m-%d %H:%M:%S")]
    if summary.get("run_id"):
        sub.append(f"run {summary['run_id']}")
    if summary.get("n_samples") is not None:
        sub.append(f"{summary['n_samples']:,} training rows")
    if summary.get("n_partitions") is not None:
        sub.append(f"{summary['n_partitions']} partitions")
    if getattr(model, "n_iter_", None) is not None:
        sub.append(f"{model.n_iter_} epochs")
    if summary.get("rounds") is not None:
        sub.append(f"{summary['rounds']} rounds")
    if summary.get("fit_seconds") is not None:
        sub.append(f"fit {summary['fit_seconds']:.1f} s")  # the CLI's "fit wall time" too
    elif summary.get("seconds") is not None:
        sub.append(f"training {summary['seconds']:.1f} s")
    if summary.get("retries"):
        sub.append(f"{summary['retries']} retries")
    if summary.get("stopped_early"):
        sub.append("stopped early")

    from bokeh.embed import components

    script, divs = components({f"fig{i}": f for i, f in enumerate(training + evaluation)})
    train_divs = "".join(divs[f"fig{i}"] for i in range(len(training)))
    eval_divs = "".join(divs[f"fig{len(training) + i}"] for i in range(len(evaluation)))
    card_html = "".join(
        f"<div class='card'><div class='k'>{html.escape(k)}</div>"
        f"<div class='v'>{html.escape(v)}</div></div>" for k, v in cards
    )
    get_params = getattr(model, "get_params", None)
    params = sorted(get_params().items()) if get_params is not None else []
    config_html = f"<div><h3>Estimator parameters</h3>{_table(params)}</div>"
    if config is not None:
        config_html += f"<div><h3>Run configuration</h3>{_table(_flatten(config))}</div>"
    if summary:
        config_html += f"<div><h3>Training summary</h3>{_table(sorted(summary.items()))}</div>"
    training_html = train_divs or "<p class='note'>The model has no training history.</p>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(name)} report</title>
<style>{_CSS}</style>
{_bokeh_js()}
</head>
<body>
<h1>{html.escape(name)}: training and test report</h1>
<div class="sub">{html.escape(" · ".join(sub))}</div>
<h2>Test set</h2>
<div class="cards">{card_html}</div>
<div class="grid" style="margin-top:16px">{eval_divs}</div>
{tables}
<h2>Training</h2>
<div class="grid">{training_html}</div>
<h2>Configuration</h2>
<div class="cols">{config_html}</div>
{script}
</body>
</html>
"""
