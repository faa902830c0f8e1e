"""Exporting fitted models for serving elsewhere: ONNX graphs over the raw columns (or an image
model's pixels), int8."""

from .onnx import OPSET, build_onnx, build_preprocessor_onnx
from .onnx_image import build_image_onnx
from .quantize import QuantizationAccuracyError, quantize_int8, validation_score
from .serve import OnnxModel, onnx_feed, predict_onnx, score_frame, session
from .serve_image import predict_images_onnx
from .writer import ExportReport, export_onnx

__all__ = [
    "OPSET",
    "ExportReport",
    "OnnxModel",
    "QuantizationAccuracyError",
    "build_image_onnx",
    "build_onnx",
    "build_preprocessor_onnx",
    "export_onnx",
    "onnx_feed",
    "predict_images_onnx",
    "predict_onnx",
    "quantize_int8",
    "score_frame",
    "session",
    "validation_score",
]
