"""Per-class sections of the report: precision/recall/F1 table, confusion matrix table, and a
grid of the test images a classifier got wrong with the most confidence.

Numbers come from :mod:`analytics.metrics` (sufficient statistics reduced on the cluster, then
scikit-learn on the summary). The grid keeps, per partition, its ``k`` most confident mistakes
(a task per partition), and merges those on the client: only ``k`` images per partition travel.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
from typing import Any

import dask
import numpy as np
from dask.base import is_dask_collection

from analytics import metrics
from pipeline.backend import to_host

__all__ = ["confident_errors", "confusion_table", "misclassified_grid", "per_class_table"]

GRID_IMAGES = 16
THUMB_PX = 64  # thumbnails are scaled up (nearest neighbour) to about this size


def per_class_table(y: Any, pred: Any, classes: np.ndarray) -> tuple[str, dict[str, Any]]:
    """HTML table of precision, recall, F1 and support per class plus macro/weighted averages,
    and the numbers behind it (scikit-learn's ``classification_report(output_dict=True)``)."""
    summary = metrics.classification_summary(y, pred, labels=classes, zero_division=0)
    rows = [(str(c), summary[str(c)]) for c in classes]
    rows += [(name, summary[name]) for name in ("macro avg", "weighted avg") if name in summary]
    body = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{r['precision']:.4f}</td><td>{r['recall']:.4f}"
        f"</td><td>{r['f1-score']:.4f}</td><td>{round(r['support']):,}</td></tr>"
        for name, r in rows)
    return ("<table class='num' id='per-class'><thead><tr><th>class</th><th>precision</th>"
            f"<th>recall</th><th>F1</th><th>support</th></tr></thead><tbody>{body}</tbody>"
            "</table>"), summary


def confusion_table(cm: np.ndarray, classes: np.ndarray) -> str:
    """HTML confusion matrix: rows are true classes, columns predicted ones (counts)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in classes)
    body = "".join(
        f"<tr><th>{html.escape(str(c))}</th>"
        + "".join(f"<td>{int(v):,}</td>" for v in cm[i]) + "</tr>"
        for i, c in enumerate(classes))
    return (f"<table class='num' id='confusion'><thead><tr><th>true \\ predicted</th>{head}"
            f"</tr></thead><tbody>{body}</tbody></table>")


def _part_errors(offset: int, X: Any, y: Any, proba: Any, classes: np.ndarray,
                 k: int) -> tuple[np.ndarray, ...]:
    """This partition's ``k`` most confident mistakes: (confidence, row, image, true, pred)."""
    y, proba = to_host(y), to_host(proba)
    if len(y) != len(proba) or len(y) != X.shape[0]:
        raise ValueError(f"rows from {offset}: {X.shape[0]} images, {len(y)} labels, "
                         f"{len(proba)} predictions")
    pred_idx = proba.argmax(axis=1)
    wrong = np.flatnonzero(classes[pred_idx] != y)
    conf = proba[wrong, pred_idx[wrong]].astype(np.float64)
    keep = wrong[np.lexsort((wrong, -conf))[:k]]  # most confident first, ties by row
    return (proba[keep, pred_idx[keep]].astype(np.float64), keep + offset,
            to_host(X[keep] if len(keep) else X[:0]), y[keep], classes[pred_idx[keep]])


def _pieces(a: Any, chunks: tuple[int, ...] | None) -> list[Any]:
    if not is_dask_collection(a):
        if chunks is None:
            return [a]
        bounds = np.cumsum((0, *chunks))
        return [a[lo:hi] for lo, hi in itertools.pairwise(bounds)]
    if hasattr(a, "to_dask_array"):
        a = a.to_dask_array(lengths=True)
    if chunks is not None and a.chunks[0] != chunks:
        a = a.rechunk({0: chunks})
    if a.ndim > 1:
        a = a.rechunk({i: -1 for i in range(1, a.ndim)})
    return list(np.asarray(a.to_delayed(), dtype=object).reshape(len(a.chunks[0]), -1)[:, 0])


def confident_errors(X: Any, y: Any, proba: Any, classes: np.ndarray,
                     k: int = GRID_IMAGES) -> tuple[np.ndarray, ...]:
    """The ``k`` misclassified test rows with the highest predicted probability, most confident
    first (ties: lower row first): ``(confidence, row, images, true labels, predictions)``.
    One task per partition of ``X``; ``y`` and ``proba`` follow its row chunks."""
    chunks = tuple(X.chunks[0]) if is_dask_collection(X) else None
    if chunks is not None and any(math.isnan(c) for c in chunks):
        raise ValueError("X_test needs known partition lengths (dask Array chunks)")
    xs, ys, ps = _pieces(X, chunks), _pieces(y, chunks), _pieces(proba, chunks)
    offsets = np.cumsum((0, *(chunks or (len(y),))))[:-1]
    task = dask.delayed(_part_errors, pure=True)
    (parts,) = dask.compute([task(int(o), a, b, c, classes, k)
                             for o, a, b, c in zip(offsets, xs, ys, ps, strict=True)])
    conf = np.concatenate([p[0] for p in parts])
    rows = np.concatenate([p[1] for p in parts])
    order = np.lexsort((rows, -conf))[:k]
    images = np.concatenate([p[2] for p in parts])[order] if len(order) else np.zeros((0,))
    return (conf[order], rows[order], images, np.concatenate([p[3] for p in parts])[order],
            np.concatenate([p[4] for p in parts])[order])


def _png(image: np.ndarray) -> str:
    from PIL import Image

    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    lo, hi = float(a.min()), float(a.max())
    a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
    scale = max(1, THUMB_PX // max(a.shape[0], a.shape[1]))
    a = np.kron(a, np.ones((scale, scale) + (1,) * (a.ndim - 2))).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def misclassified_grid(X: Any, y: Any, proba: Any, classes: np.ndarray,
                       k: int = GRID_IMAGES) -> str:
    """HTML grid of :func:`confident_errors` (inline PNGs: the report stays one file)."""
    conf, rows, images, true, pred = confident_errors(X, y, proba, classes, k)
    if not len(rows):
        return "<p class='note'>No test image is misclassified.</p>"
    cells = "".join(
        f"<figure class='err' data-row='{int(r)}'><img alt='test row {int(r)}' "
        f"src='data:image/png;base64,{_png(img)}'><figcaption>row {int(r)}: "
        f"{html.escape(str(t))} → {html.escape(str(p))} ({c:.3f})</figcaption></figure>"
        for c, r, img, t, p in zip(conf, rows, images, true, pred, strict=True))
    return f"<div class='errs' id='misclassified'>{cells}</div>"
