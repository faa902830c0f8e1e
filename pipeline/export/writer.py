"""Writing a fitted model as an ONNX file: :func:`export_onnx` builds the graph
(:mod:`pipeline.export.onnx`), quantizes it to int8 on request behind a validation guard
(:mod:`pipeline.export.quantize`), writes it atomically and returns an :class:`ExportReport`.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any

from .onnx import OPSET, build_onnx

__all__ = ["ExportReport", "export_onnx", "write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes) -> str:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path



@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and measured. Sizes in bytes; scores as fractions
    (accuracy for classifiers, R² for regressors), ``None`` without ``validation``;
    ``drop = fp32_score - int8_score``."""

    path: str
    quantize: str | None
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fp32_bytes: int
    int8_bytes: int | None = None
    metric: str | None = None
    fp32_score: float | None = None
    int8_score: float | None = None
    drop: float | None = None

    @property
    def size_ratio(self) -> float | None:
        """fp32 size / int8 size (how many times smaller the int8 file is)."""
        return None if self.int8_bytes is None else self.fp32_bytes / self.int8_bytes

    def __str__(self) -> str:
        lines = [f"ONNX model: {self.path} (opset {self.opset}, {len(self.inputs)} inputs)",
                 f"fp32 size: {self.fp32_bytes:,} bytes"]
        if self.int8_bytes is not None:
            lines.append(f"int8 size: {self.int8_bytes:,} bytes ({self.size_ratio:.2f}x smaller)")
        if self.metric is not None:
            lines.append(f"validation {self.metric}: fp32 {self.fp32_score:.5f}")
            if self.int8_score is not None:
                lines[-1] += f", int8 {self.int8_score:.5f} (drop {self.drop:+.5f})"
        return "\n".join(lines)


def export_onnx(model: Any, path: str | os.PathLike[str], *, preprocessor: Any = None,
                quantize: str | None = None, validation: tuple[Any, Any] | None = None,
                max_accuracy_drop: float = 0.003, on_drop: str = "raise") -> ExportReport:
    """Write ``model`` (and ``preprocessor``) to ``path`` as one ONNX graph (module docstring).

    Parameters
    ----------
    quantize : {None, "int8"}
        ``"int8"`` writes the graph with int8 weights (:func:`quantize.quantize_int8`).
    validation : (X, y), optional
        Raw columns (a pandas/dask DataFrame) and labels/targets. The fp32 graph, and the int8
        graph if any, are scored on it with onnxruntime (accuracy or R²).
    max_accuracy_drop : float
        Largest allowed ``fp32_score - int8_score`` (0.003 = 0.3 accuracy points).
    on_drop : {"raise", "warn"}
        Above the threshold: raise :class:`QuantizationAccuracyError` and write nothing, or
        warn (``UserWarning``) and write the int8 graph anyway.

    Returns
    -------
    ExportReport
    """
    from .quantize import QuantizationAccuracyError, quantize_int8, validation_score

    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if on_drop not in ("raise", "warn"):
        raise ValueError(f"on_drop must be 'raise' or 'warn', got {on_drop!r}")
    fp32 = build_onnx(model, preprocessor)
    fp32_bytes = fp32.SerializeToString()
    out = fp32_bytes
    fields: dict[str, Any] = {}
    if validation is not None:
        metric, score = validation_score(fp32_bytes, *validation)
        fields.update(metric=metric, fp32_score=score)
    if quantize == "int8":
        out = quantize_int8(fp32).SerializeToString()
        fields["int8_bytes"] = len(out)
        if validation is not None:
            int8_score = validation_score(out, *validation)[1]
            drop = fields["fp32_score"] - int8_score
            fields.update(int8_score=int8_score, drop=drop)
            if drop > max_accuracy_drop:
                message = (
                    f"int8 quantization of {type(model).__name__} costs {drop:.5f} validation "
                    f"{fields['metric']} ({fields['fp32_score']:.5f} fp32 -> {int8_score:.5f} "
                    f"int8), more than max_accuracy_drop={max_accuracy_drop}"
                )
                if on_drop == "raise":
                    raise QuantizationAccuracyError(
                        message + f"; {os.fspath(path)} was not written",
                        metric=fields["metric"], fp32=fields["fp32_score"], int8=int8_score,
                        drop=drop, max_drop=max_accuracy_drop)
                warnings.warn(message, UserWarning, stacklevel=2)
    write_atomic(path, out)
    return ExportReport(
        path=os.fspath(path), quantize=quantize, opset=OPSET,
        inputs=tuple(i.name for i in fp32.graph.input),
        outputs=tuple(o.name for o in fp32.graph.output), fp32_bytes=len(fp32_bytes), **fields)
