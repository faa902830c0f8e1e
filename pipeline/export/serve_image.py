"""Scoring images with an exported :class:`~pipeline.ImageClassifier` graph (onnxruntime).

:func:`image_feed` checks and shapes an image array for the graph's ``image`` input (what
:func:`pipeline.export.onnx_feed` uses for image graphs, so :func:`validation_score` and the
int8 guard take ``(images, labels)``). :func:`predict_images_onnx` scores a dask array of
images lazily, one ``onnx_predict_images`` task per partition, with the session cache of
:mod:`pipeline.export.serve`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .serve import OnnxModel, output_columns, session

__all__ = ["image_feed", "onnx_predict_images", "predict_images_onnx"]

_NUMPY = {"tensor(uint8)": np.dtype(np.uint8), "tensor(float)": np.dtype(np.float32)}


def image_feed(graph_input: Any, images: Any) -> np.ndarray:
    """``images`` (``(N, H, W, C)``, or ``(N, H, W)`` grayscale; NumPy or anything
    ``np.asarray`` takes) as the contiguous array the graph input ``graph_input`` (an
    onnxruntime ``NodeArg``) takes. The dtype must be the graph's: float pixels are not
    rounded to uint8 here (that would hide a model trained on other units)."""
    X = np.asarray(images)
    if X.ndim == 3:
        X = X[..., None]
    want = _NUMPY.get(graph_input.type)
    expected = tuple(graph_input.shape[1:])
    if X.ndim != 4 or tuple(X.shape[1:]) != expected:
        want_shape = ", ".join(map(str, expected))
        raise ValueError(f"the ONNX model takes images of shape (n, {want_shape}), got "
                         f"{X.shape}")
    if X.dtype != want:
        raise ValueError(f"the ONNX model takes {want} images, got {X.dtype}: cast integer "
                         "pixels with .astype(np.uint8), or export with input_dtype='float32' "
                         "for a model trained on float images")
    return np.ascontiguousarray(X)


def onnx_predict_images(images: np.ndarray, labels: Any, model: OnnxModel,
                        columns: list[str], output: str) -> pd.DataFrame:
    """One partition scored: ``columns`` from the graph output ``output``, then ``true_label``
    (the labels read with the images, e.g. their class folders) when ``labels`` is given."""
    sess = session(model)
    inp = sess.get_inputs()[0]
    out = sess.run([output], {inp.name: image_feed(inp, images)})[0]
    out = out[:, None] if out.ndim == 1 else out
    frame = pd.DataFrame({c: out[:, i] for i, c in enumerate(columns)})
    if out.dtype == object:  # string labels: a string column, in the meta and the partitions
        frame = frame.astype(str)
    if labels is not None:
        frame["true_label"] = np.asarray(labels)
        if frame["true_label"].dtype == object or np.asarray(labels).dtype.kind == "U":
            frame["true_label"] = frame["true_label"].astype(str)
    return frame


def predict_images_onnx(X: Any, model: OnnxModel | str | bytes, *, labels: Any = None,
                        proba: bool = False) -> Any:
    """Score the dask array of images ``X`` (``(N, H, W, C)``, chunked along ``N``, e.g. from
    :func:`pipeline.read_images`) with an exported image graph, lazily, partition by partition
    on the workers. Returns a dask DataFrame, one partition per chunk of ``X``, rows in ``X``'s
    order: ``prediction`` (``proba_<class>`` with ``proba=True``), and ``true_label`` from
    ``labels`` (a dask array chunked like ``X``) when given."""
    import dask
    import dask.dataframe as dd

    if isinstance(model, (bytes, bytearray)):
        model = OnnxModel.from_bytes(model)
    elif isinstance(model, str):
        model = OnnxModel.from_file(model)
    columns, output = output_columns(model, proba)
    if X.ndim == 3:
        X = X[..., None]
    if any(n > 1 for n in X.numblocks[1:]):
        X = X.rechunk({1: -1, 2: -1, 3: -1})
    empty = np.zeros((0, *X.shape[1:]), dtype=X.dtype)
    meta = onnx_predict_images(empty, None if labels is None else np.asarray(labels._meta),
                               model, columns, output)  # a real run on 0 images
    shipped = dask.delayed(model, pure=True)  # one key: each worker fetches the bytes once
    blocks = X.to_delayed().ravel()
    ys = [None] * len(blocks) if labels is None else labels.to_delayed().ravel()
    parts = [dask.delayed(onnx_predict_images, pure=True)(b, y, shipped, columns, output)
             for b, y in zip(blocks, ys, strict=True)]
    return dd.from_delayed(parts, meta=meta, verify_meta=False)
