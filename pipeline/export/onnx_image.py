"""A fitted :class:`~pipeline.ImageClassifier` as one ONNX graph, from raw pixels to labels.

The graph has one input, ``image``, of shape ``(N, H, W, C)`` (the fitted ``image_shape_``,
any ``N``) and type ``uint8``: the pixels :func:`pipeline.read_images` gives for image files,
as they are. It does what :meth:`ImageClassifier.predict_proba` does to them, in the same
order and in float32:

- the model's preprocessing layers: ``Cast`` to float32, then per-channel ``(x - mean) * (1 /
  std)`` (:class:`~pipeline.nn.Normalize`) and/or ``x * scale + offset``
  (:class:`~pipeline.nn.Rescale`), on the NHWC pixels;
- one ``Transpose`` to NCHW before the first convolution or pool (ONNX's ``Conv``,
  ``MaxPool``, ``AveragePool`` and ``GlobalAveragePool`` are channels first), and one back to
  NHWC before a ``Flatten``, so the flattened features come in the order of the ``Dense``
  weights' rows;
- ``Conv`` with the kernel ``(kh, kw, in, out)`` stored as ONNX's ``(out, in, kh, kw)`` and the
  layer's own padding (``"same"``: ``total // 2`` before, the rest after, as
  :mod:`pipeline.nn.conv` computes it, so even kernels and strides pad asymmetrically exactly
  as the layer does); ``MaxPool``; ``AveragePool`` with ``count_include_pad=0`` (the layer
  does not count padding); ``GlobalAveragePool``; ``Gemm`` per ``Dense``; ``Relu``, ``Tanh``,
  ``Sigmoid``; :class:`~pipeline.nn.GroupNorm` and :class:`~pipeline.nn.LayerNorm` written out
  with ``ReduceMean``; ``Dropout`` and ``Augment`` are the identity at inference and leave no
  node;
- outputs ``label`` ``(N,)`` (``classes_``' type: int64 or string) and ``probabilities``
  ``(N, n_classes)`` float32, as :mod:`pipeline.export.onnx` writes them for the MLPs.

Float input: the ``image`` input is typed, so onnxruntime refuses a float array fed to a uint8
graph (``INVALID_ARGUMENT``: unexpected input data type); :func:`pipeline.export.onnx_feed`
refuses it first, with the model's dtype in the message. Cast integer-valued pixels to uint8
(exact). A model trained on float images (e.g. values in [0, 1] from a ``.npy``) needs
``build_image_onnx(model, input_dtype="float32")``: the same graph without the ``Cast``, which
is what the estimator does with float32 input (float64 input is computed in float64 by the
estimator, in float32 by the graph).

Example
-------
>>> report = clf.export_onnx("cnn.onnx")                                   # doctest: +SKIP
>>> sess = onnxruntime.InferenceSession("cnn.onnx")                        # doctest: +SKIP
>>> label, proba = sess.run(None, {"image": X_uint8})                      # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import __version__, nn
from .onnx import IR_VERSION, OPSET, _Graph, label_outputs, two_column_probabilities

__all__ = ["IMAGE_INPUT", "build_image_onnx"]

IMAGE_INPUT = "image"
INPUT_DTYPES = {"uint8": TensorProto.UINT8, "float32": TensorProto.FLOAT}
_F32 = np.float32
_ACTIVATIONS = {nn.ReLU: "Relu", nn.Tanh: "Tanh", nn.Logistic: "Sigmoid"}
_NO_OPS = (nn.Identity, nn.Dropout, nn.Augment)  # the identity when not training


@dataclass(frozen=True)
class _T:
    """A tensor of the graph: its name, one sample's shape in the network's own (NHWC) terms,
    whether it is laid out channels first, and whether it still holds integer pixels."""

    name: str
    shape: tuple[int, ...]
    nchw: bool = False
    pixels: bool = False


def _floats(g: _Graph, t: _T) -> _T:
    # Normalize and Rescale cast integer pixels to float32 (their dtype, checked below).
    if not t.pixels:
        return t
    return replace(t, name=g.op("Cast", [t.name], "x", to=TensorProto.FLOAT), pixels=False)


def _layout(g: _Graph, t: _T, nchw: bool) -> _T:
    if t.nchw == nchw or len(t.shape) != 3:
        return t
    perm = [0, 3, 1, 2] if nchw else [0, 2, 3, 1]
    return replace(t, name=g.op("Transpose", [t.name], "t", perm=perm), nchw=nchw)


def _per_channel(values: Any, t: _T) -> np.ndarray:
    """``values`` ``(C,)`` shaped to broadcast over ``t``'s channel axis."""
    v = np.asarray(values, dtype=_F32)
    return v.reshape(-1, 1, 1) if t.nchw else v


def _pads(layer: Any, t: _T) -> dict[str, Any]:
    """ONNX window attributes from the layer's own geometry (:class:`pipeline.nn.conv._Axis`)."""
    rows, cols, _ = layer._axes(t.shape)
    return {"kernel_shape": [rows.k, cols.k], "strides": [rows.s, cols.s],
            "pads": [rows.before, cols.before, rows.after, cols.after]}


def _norm(g: _Graph, t: _T, axes_shape: list[int], axes: list[int], eps: float,
          gamma: np.ndarray, beta: np.ndarray) -> _T:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` with the statistics over ``axes`` of
    ``x`` reshaped to ``axes_shape`` (``[]``: as it is), as LayerNorm/GroupNorm compute it."""
    x = t.name
    if axes_shape:
        x = g.op("Reshape", [x, g.const(np.asarray(axes_shape, np.int64), "shape")], "g")
    ax = g.const(np.asarray(axes, np.int64), "axes")
    mean = g.op("ReduceMean", [x, ax], "mu", keepdims=1)
    xc = g.op("Sub", [x, mean], "xc")
    var = g.op("ReduceMean", [g.op("Mul", [xc, xc], "sq"), ax], "var", keepdims=1)
    std = g.op("Sqrt", [g.op("Add", [var, g.const(np.asarray(eps, _F32), "eps")], "ve")], "sd")
    xhat = g.op("Mul", [xc, g.op("Reciprocal", [std], "rstd")], "xhat")
    if axes_shape:  # back to the tensor's own shape
        xhat = g.op("Reshape", [xhat, g.const(np.asarray([0, *_dims(t)], np.int64), "shape")],
                    "xh")
    y = g.op("Mul", [xhat, g.const(_per_channel(gamma, t), "gamma", share=False)], "gn")
    return replace(t, name=g.op("Add", [y, g.const(_per_channel(beta, t), "beta", share=False)],
                                "norm"))


def _dims(t: _T) -> list[int]:
    """One sample's dimensions in the graph's layout."""
    if t.nchw:
        h, w, c = t.shape
        return [c, h, w]
    return list(t.shape)


def _layer(g: _Graph, layer: Any, params: list[np.ndarray], t: _T) -> _T:
    """``layer`` applied to ``t``: the nodes it adds and the tensor it returns."""
    kind = type(layer)
    out_shape = tuple(layer.build(t.shape)[1])
    if isinstance(layer, _NO_OPS):
        return t
    if isinstance(layer, nn.Normalize | nn.Rescale):
        if layer.dtype != "float32":
            raise ValueError(f"{layer!r}: ONNX export computes in float32; use dtype='float32'")
        t = _floats(g, t)
        if isinstance(layer, nn.Normalize):
            inv = [1.0 / s for s in layer.std]  # as Normalize: x - mean, times 1/std, float32
            x = g.op("Sub", [t.name, g.const(_per_channel(layer.mean, t), "mean")], "ctr")
            return replace(t, name=g.op("Mul", [x, g.const(_per_channel(inv, t), "inv")], "nrm"))
        x = g.op("Mul", [t.name, g.const(np.asarray(layer.scale, _F32), "scale")], "rs")
        if layer.offset:
            x = g.op("Add", [x, g.const(np.asarray(layer.offset, _F32), "offset")], "ro")
        return replace(t, name=x)
    t = _floats(g, t)
    if kind in _ACTIVATIONS:
        return replace(t, name=g.op(_ACTIVATIONS[kind], [t.name]))
    if isinstance(layer, nn.Conv2D):
        t = _layout(g, t, nchw=True)
        W, b = params  # (kh, kw, in, out) -> ONNX's (out, in, kh, kw)
        w = g.const(np.ascontiguousarray(W.transpose(3, 2, 0, 1), dtype=_F32), "K", share=False)
        y = g.op("Conv", [t.name, w, g.const(np.asarray(b, _F32), "kb", share=False)], "conv",
                 **_pads(layer, t))
        return replace(t, name=y, shape=out_shape)
    if isinstance(layer, nn.MaxPool2D | nn.AvgPool2D):
        t = _layout(g, t, nchw=True)
        if isinstance(layer, nn.MaxPool2D):  # padding never wins, as the layer's lowest value
            y = g.op("MaxPool", [t.name], "maxp", **_pads(layer, t))
        else:
            y = g.op("AveragePool", [t.name], "avgp", count_include_pad=0, **_pads(layer, t))
        return replace(t, name=y, shape=out_shape)
    if isinstance(layer, nn.GlobalAvgPool2D):
        t = _layout(g, t, nchw=True)
        y = g.op("GlobalAveragePool", [t.name], "gap")  # (N, C, 1, 1)
        return _T(g.op("Flatten", [y], "gapf", axis=1), out_shape)
    if isinstance(layer, nn.Flatten):
        if len(t.shape) == 1:
            return t
        t = _layout(g, t, nchw=False)  # NHWC order: the order of the next Dense's rows
        return _T(g.op("Flatten", [t.name], "flat", axis=1), out_shape)
    if isinstance(layer, nn.Dense):
        W, b = params
        y = g.op("Gemm", [t.name, g.const(np.asarray(W, _F32), "W", share=False),
                          g.const(np.asarray(b, _F32), "b", share=False)], "z")
        return _T(y, out_shape)
    if isinstance(layer, nn.LayerNorm):  # over the last (channel) axis of each position
        gamma, beta = params
        return _norm(g, t, [], [1 if t.nchw else -1], layer.eps, gamma, beta)
    if isinstance(layer, nn.GroupNorm):
        gamma, beta = params
        c, groups = t.shape[-1], int(layer.groups)
        if t.nchw:  # (N, C, H, W) -> (N, G, C/G * H * W): a group's channels are contiguous
            return _norm(g, t, [0, groups, -1], [2], layer.eps, gamma, beta)
        # channels last: (N, positions, G, C/G), statistics over positions and the group
        return _norm(g, t, [0, -1, groups, c // groups], [1, 3], layer.eps, gamma, beta)
    raise ValueError(f"{layer!r} cannot be exported to ONNX (exportable: Conv2D, MaxPool2D, "
                     "AvgPool2D, GlobalAvgPool2D, Flatten, Dense, Dropout, ReLU, Tanh, "
                     "Logistic, GroupNorm, LayerNorm, Normalize, Rescale, Augment, Identity)")


def _classifier_head(g: _Graph, z: str, classes: np.ndarray, binary: bool) -> list[Any]:
    """``probabilities`` and ``label`` from the raw outputs ``z``, as ``predict_proba`` and
    ``predict`` (the head :func:`pipeline.export.onnx.build_onnx` writes)."""
    if binary:  # one logistic unit: [1 - p, p]
        proba = two_column_probabilities(g, g.op("Sigmoid", [z], "p"), _F32)
    else:
        proba = g.op("Softmax", [z], output="probabilities", axis=1)
    return label_outputs(g, proba, classes, _F32)


def build_image_onnx(model: Any, *, input_dtype: str = "uint8",
                     preprocessor: Any = None) -> onnx.ModelProto:
    """The checked ONNX model of a fitted :class:`~pipeline.ImageClassifier` (module
    docstring): input ``image`` ``(N, H, W, C)`` of ``input_dtype`` (``"uint8"``, or
    ``"float32"`` for a model trained on float images), outputs ``label`` and
    ``probabilities``. ``preprocessor`` must be None: an image model's preprocessing is part
    of its network."""
    if preprocessor is not None:
        raise ValueError(f"{type(model).__name__} takes no preprocessor: its scaling and "
                         "normalisation are part of the model and of the exported graph")
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype must be one of {sorted(INPUT_DTYPES)}, got "
                         f"{input_dtype!r}")
    if np.dtype(model.dtype) != np.float32:
        raise ValueError(f"ONNX export computes in float32; the model's dtype is {model.dtype}")
    spec = model.spec_  # raises NotFittedError for an unfitted model
    shape = tuple(int(s) for s in model.image_shape_)
    g = _Graph()
    g.inputs.append(helper.make_tensor_value_info(IMAGE_INPUT, INPUT_DTYPES[input_dtype],
                                                  [None, *shape]))
    t = _T(IMAGE_INPUT, shape, pixels=input_dtype == "uint8")
    params = [np.asarray(p) for p in spec.unpack(np.asarray(model.params_))]
    for layer in spec.layers:
        n = len(layer.build(t.shape)[0])
        t, params = _layer(g, layer, params[:n], t), params[n:]
    outputs = _classifier_head(g, t.name, model.classes_, spec.loss == "binary_log_loss")
    graph = helper.make_graph(g.nodes, type(model).__name__, g.inputs, outputs, g.initializers)
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                            ir_version=IR_VERSION, producer_name="dask-pipeline",
                            producer_version=__version__)
    helper.set_model_props(onx, {
        "pipeline.estimator": type(model).__name__,
        "pipeline.version": __version__,
        "pipeline.inputs": IMAGE_INPUT,
        "pipeline.image_shape": json.dumps(list(shape)),
        "pipeline.image_dtype": input_dtype,
        "pipeline.classes": json.dumps(np.asarray(model.classes_).tolist()),
    })
    onnx.checker.check_model(onx, full_check=True)
    return onx
