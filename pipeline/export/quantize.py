"""int8 dynamic quantization of an exported graph, guarded by a validation score.

Quantization is onnxruntime's own (``onnxruntime.quantization.quantize_dynamic``): every
``MatMul`` weight becomes int8 (symmetric, per tensor) and activations are quantized to uint8
row batch by row batch at run time (``DynamicQuantizeLinear`` + ``MatMulInteger``). The
preprocessing part of the graph (imputation, scaling, one-hot) stays in float64/string.

:func:`validation_score` scores a graph with onnxruntime on a validation set (accuracy for
classifiers, R² averaged uniformly over outputs for regressors), so the fp32 and int8 graphs are
compared by the same code path.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import numpy as np
import onnx

__all__ = ["QuantizationAccuracyError", "quantize_int8", "validation_score"]


class QuantizationAccuracyError(ValueError):
    """The int8 model loses more validation accuracy (or R²) than allowed."""

    def __init__(self, message: str, *, metric: str, fp32: float, int8: float, drop: float,
                 max_drop: float):
        super().__init__(message)
        self.metric, self.fp32, self.int8, self.drop, self.max_drop = (
            metric, fp32, int8, drop, max_drop)


def _no_preprocess_advice(record: logging.LogRecord) -> bool:
    # quantize_dynamic logs, on the root logger, advice to run onnxruntime's shape-inference
    # pre-pass first; it only matters for graphs whose shapes are unknown, ours are declared.
    return not record.getMessage().startswith("Please consider to run pre-processing")


def quantize_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its ``MatMul`` weights quantized to int8 by onnxruntime (checked).

    Only ``MatMul`` is quantized: the string ``Gather`` of the labels and the preprocessing
    constants must stay as they are.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="pipeline-quantize-") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save_model(model, src)
        root = logging.getLogger()
        root.addFilter(_no_preprocess_advice)
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"])
        finally:
            root.removeFilter(_no_preprocess_advice)
        out = onnx.load_model(dst)
    # The quantizer keeps the graph's metadata_props; say what was done to it.
    onnx.helper.set_model_props(out, {**{p.key: p.value for p in model.metadata_props},
                                      "pipeline.quantization": "int8 dynamic (onnxruntime)"})
    onnx.checker.check_model(out, full_check=True)
    return out


def _as_pandas(obj: Any) -> Any:
    if type(obj).__module__.startswith(("dask", "dask_expr")):
        return obj.compute()  # a validation set is small by nature; the client holds it anyway
    return obj


def validation_score(data: bytes, X: Any, y: Any) -> tuple[str, float]:
    """``("accuracy", a)`` or ``("r2", r)`` of the ONNX model ``data`` on ``(X, y)``, scored by
    onnxruntime (one thread). ``X``: raw columns (pandas or dask DataFrame) for a graph with a
    preprocessor, features (array or frame) for a graph with input ``X``."""
    from sklearn.metrics import accuracy_score, r2_score

    from .serve import OnnxModel, score_frame

    X, y = _as_pandas(X), np.asarray(_as_pandas(y))
    if len(y) != len(X):
        raise ValueError(f"validation X has {len(X)} rows but y has {len(y)}")
    if len(y) == 0:
        raise ValueError("the validation set is empty")
    out = score_frame(OnnxModel.from_bytes(data), X)
    if "label" in out:
        return "accuracy", float(accuracy_score(y, out["label"]))
    pred = out["variable"]
    y = y.reshape(pred.shape) if y.ndim == 1 else y
    return "r2", float(r2_score(y, pred))
