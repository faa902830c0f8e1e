"""Scoring with onnxruntime: raw frames to graph inputs, cached sessions, partition scoring.

:func:`onnx_feed` turns a pandas frame of raw columns into the inputs of a graph written by
:func:`pipeline.export.export_onnx` (numeric columns as float64 with NaN for missing values,
string columns as str with ``""`` for missing values). :func:`predict_onnx` scores a dask
DataFrame lazily, one ``onnx_predict`` task per partition: the model's bytes are one key in the
graph (shipped once per worker, not once per task) and each worker process keeps at most
:data:`MAX_SESSIONS` sessions, keyed by the model's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = ["MAX_SESSIONS", "OnnxModel", "onnx_feed", "predict_onnx", "score_frame", "session"]

MAX_SESSIONS = 4
_sessions: OrderedDict[tuple[str, int], Any] = OrderedDict()
_lock = threading.Lock()


class OnnxModel(NamedTuple):
    """The bytes of an ONNX model and their SHA-256 (the session cache key)."""

    digest: str
    data: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> OnnxModel:
        return cls(hashlib.sha256(data).hexdigest(), bytes(data))

    @classmethod
    def from_file(cls, path: str) -> OnnxModel:
        import fsspec

        with fsspec.open(path, "rb") as f:
            return cls.from_bytes(f.read())

    def metadata(self) -> dict[str, str]:
        """The ``metadata_props`` written by the exporter (classes, estimator, ...)."""
        return dict(session(self).get_modelmeta().custom_metadata_map)


def session(model: OnnxModel, threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model`` on the CPU with ``threads`` intra-op
    threads, from this process's cache (least recently used of :data:`MAX_SESSIONS` evicted).

    One thread by default: a Dask worker process runs one task per thread, so more intra-op
    threads would oversubscribe the cores, as a second BLAS thread does.
    """
    key = (model.digest, int(threads))
    with _lock:
        sess = _sessions.get(key)
        if sess is not None:
            _sessions.move_to_end(key)
            return sess
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    # onnxruntime's defaults, pinned: the graph is a chain (nothing for parallel execution to
    # overlap), and ORT_ENABLE_ALL fuses each Gemm with its activation.
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.data, sess_options=opts,
                                providers=["CPUExecutionProvider"])
    with _lock:
        _sessions[key] = sess
        _sessions.move_to_end(key)
        while len(_sessions) > MAX_SESSIONS:
            _sessions.popitem(last=False)
    return sess


def _string_column(values: pd.Series) -> np.ndarray:
    missing = values.isna().to_numpy()
    out = np.asarray([str(v) for v in values.to_numpy(dtype=object)], dtype=object)
    out[missing] = ""
    return out.reshape(-1, 1)


def onnx_feed(sess: Any, frame: Any) -> dict[str, np.ndarray]:
    """Inputs for ``sess.run`` from a pandas frame of raw columns (extra columns are ignored),
    from a 2-D array/frame of features when the graph has the single input ``X``, or from an
    ``(N, H, W, C)`` image array for an image graph (input ``image``, see
    :func:`pipeline.export.serve_image.image_feed`)."""
    inputs = sess.get_inputs()
    if len(inputs) == 1 and len(inputs[0].shape) == 4:  # an ImageClassifier's graph
        from .serve_image import image_feed

        return {inputs[0].name: image_feed(inputs[0], frame)}
    if len(inputs) == 1 and inputs[0].name == "X":
        dtype = np.float64 if inputs[0].type == "tensor(double)" else np.float32
        X = frame.to_numpy(dtype=dtype) if hasattr(frame, "to_numpy") else np.asarray(frame)
        return {"X": np.ascontiguousarray(X, dtype=dtype)}
    missing = [i.name for i in inputs if i.name not in frame.columns]
    if missing:
        raise ValueError(f"column(s) {missing!r} needed by the ONNX model are not in the data; "
                         f"available columns: {list(map(str, frame.columns))!r}")
    feed = {}
    for i in inputs:
        col = frame[i.name]
        if i.type == "tensor(string)":
            feed[i.name] = _string_column(col)
        else:
            try:
                feed[i.name] = col.to_numpy(dtype=np.float64, na_value=np.nan).reshape(-1, 1)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"column {i.name!r} must be numeric for the ONNX model "
                                 f"(dtype {col.dtype}): {exc}") from None
    return feed


def score_frame(model: OnnxModel, frame: Any, threads: int = 1) -> dict[str, np.ndarray]:
    """All outputs of ``model`` on ``frame``, by name (``label``/``probabilities`` or
    ``variable``)."""
    sess = session(model, threads)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, onnx_feed(sess, frame)), strict=True))


def output_columns(model: OnnxModel, proba: bool) -> tuple[list[str], str]:
    """Output column names of :func:`predict_onnx` and which graph output they come from."""
    meta = model.metadata()
    if "pipeline.classes" in meta:
        classes = json.loads(meta["pipeline.classes"])
        if proba:
            return [f"proba_{c}" for c in classes], "probabilities"
        return ["prediction"], "label"
    n_outputs = int(meta.get("pipeline.n_outputs", 1))
    names = ["prediction"] if n_outputs == 1 else [f"prediction_{i}" for i in range(n_outputs)]
    return names, "variable"


def onnx_predict(part: Any, model: OnnxModel, columns: list[str], output: str) -> pd.DataFrame:
    """One partition scored: a frame with ``columns`` and the partition's index."""
    out = score_frame(model, part)[output]
    if out.ndim == 1:
        out = out[:, None]
    frame = pd.DataFrame({c: out[:, i] for i, c in enumerate(columns)}, index=part.index)
    # String labels as pandas' string dtype (object of str before pandas 3), so that the meta
    # and the partitions agree and Parquet gets a string column.
    return frame.astype(str) if out.dtype == object else frame


def predict_onnx(df: Any, model: OnnxModel | str | bytes, *, proba: bool = False) -> Any:
    """Score a dask DataFrame of raw columns with an ONNX model, lazily, partition by partition
    on the workers. Returns a dask DataFrame with the columns of :func:`output_columns`
    (``prediction``; ``proba_<class>`` with ``proba=True``; ``prediction_<i>`` for several
    regression outputs)."""
    import dask

    if isinstance(model, (bytes, bytearray)):
        model = OnnxModel.from_bytes(model)
    elif isinstance(model, str):
        model = OnnxModel.from_file(model)
    columns, output = output_columns(model, proba)
    meta = onnx_predict(df._meta, model, columns, output)  # a real run on 0 rows
    shipped = dask.delayed(model, pure=True)  # one key: each worker fetches the bytes once
    return df.map_partitions(onnx_predict, shipped, columns, output, meta=meta)
