'''int8 weight quantization of an exported graph, guarded by a validation score.

:func:`quantize_int8` stores every layer's weight matrix (the ``B`` initializer of each
``Gemm`` the exporter writes, and the kernel of each ``Conv`` of an image model) as int8,
symmetric and per output channel (one scale per column of ``W``, per filter of a kernel, zero
point 0, values in [-127, 127]), and puts a ``DequantizeLinear`` in front of the ``Gemm`` or
``Conv``. The activations stay in floating point ("weight-only" quantization): the outputs of a
row do not depend on the other rows of the batch (dynamic activation quantization picks its
scale per call, from the whole batch). onnxruntime dequantizes the weights on every call (one
multiplication per weight, nothing next to the matrix products of a batch); the int8 graph
scores at about the fp32 speed. What shrinks is the file: one byte per weight instead of four.
Convolutions are the exception: on the default ImageClassifier (8×8 digits, onnxruntime, one
thread, 2026-11) the int8 graph took about twice the fp32 time (0.29 vs 0.12 ms for one image,
45 vs 20 ms for 450), probably because a kernel computed by ``DequantizeLinear`` is not
pre-packed as a constant one is (not verified).

The small tensors next to the weights are kept small too:

- the per-channel scales are stored in float16 (and cast to float32 in the graph) when they are
  normal float16 numbers and there are at least :data:`MIN_HALF` of them (for fewer, the
  ``Cast`` node costs more bytes than float16 saves). The int8 values are rounded against the
  stored scale, so the dequantized weight is exactly ``q * scale``; float16's relative
  precision (2^-11) moves a weight by at most 127 * 2^-11 < 1/16 of a quantization step;
- a layer's biases (at least :data:`MIN_HALF` of them) are stored in float16 when that rounds
  each of them by less than half a quantization step of its channel (less than the rounding of
  any single weight), otherwise in float32 (a regressor's output bias of 1000 next to weights
  of 0.01 stays float32);
- nothing else changes: the preprocessing part of the graph (float64 and strings, equal bit for
  bit to ``Preprocessor.transform``) and the labels are as in the fp32 graph.

:func:`validation_score` scores a graph with onnxruntime on a validation set (accuracy for
classifiers, R² averaged uniformly over outputs for regressors), so the fp32 and int8 graphs are
compared by the same code path.
'''

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .onnx import _PREFIX

__all__ = ["QuantizationAccuracyError", "quantize_int8", "quantize_weights",
           "validation_score"]

QMAX = 127  # symmetric int8: -128 is never used, so q and -q are both representable
_F16 = np.finfo(np.float16)
# float16 storage needs a Cast node (~20 bytes): below this many values it saves less than that.
MIN_HALF = 16


class QuantizationAccuracyError(ValueError):
    """The int8 model loses more validation accuracy (or R²) than allowed."""

    def __init__(self, message: str, *, metric: str, fp32: float, int8: float, drop: float,
                 max_drop: float):
        super().__init__(message)
        self.metric, self.fp32, self.int8, self.drop, self.max_drop = (
            metric, fp32, int8, drop, max_drop)


def quantize_weights(W: np.ndarray, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scale)``: ``W`` (2-D) as int8 ``q`` with one scale per slice along ``axis``
    (``axis=1``: per column, i.e. per output channel of ``x @ W``), symmetric, so that
    ``q * scale`` (scale broadcast along ``axis``) is within ``scale / 2`` of ``W``.

    ``scale = max |W| / 127`` over each channel, rounded up to the nearest float16 when all
    scales are normal float16 numbers and there are at least :data:`MIN_HALF` channels
    (returned as float16), else float32; ``1`` for an all-zero channel.
    """
    W = np.asarray(W, dtype=np.float64)
    amax = np.abs(W).max(axis=1 - axis)
    scale = np.where(amax > 0, amax / QMAX, 1.0)
    half = scale.astype(np.float16)
    if half.size >= MIN_HALF and np.all((half >= _F16.smallest_normal) & np.isfinite(half)):
        # round up, so that |W| / scale <= 127 still holds after the rounding
        half = np.where(half.astype(np.float64) < scale,
                        np.nextafter(half, np.float16(np.inf)), half)
        stored: np.ndarray = half
    else:
        stored = scale.astype(np.float32)
    s = stored.astype(np.float64)
    s = s[None, :] if axis == 1 else s[:, None]
    q = np.clip(np.rint(W / s), -QMAX, QMAX).astype(np.int8)
    return q, stored


def _bias_storage(b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``b`` as float16 if it has at least :data:`MIN_HALF` values and float16 rounds each by
    less than half a weight step of its channel (``scale / 2``), else as float32."""
    half = b.astype(np.float16)
    err = np.abs(half.astype(np.float64) - b.astype(np.float64))
    if (half.size >= MIN_HALF and np.all(np.isfinite(half))
            and np.all(err < scale.astype(np.float64) / 2)):
        return half
    return b.astype(np.float32)


class _Names:
    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.used = {t.name for t in g.initializer} | {i.name for i in g.input} | {
            o for n in g.node for o in n.output}

    def new(self, base: str) -> str:
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}{i}"
        self.used.add(name)
        return name


def quantize_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose ``Gemm`` and ``Conv`` weight initializers are int8 per output
    channel (module docstring), checked by ``onnx.checker``. Other nodes and tensors are
    unchanged.

    Each quantized ``Gemm(x, W, b)`` becomes ``Gemm(x, DequantizeLinear(q, scale, axis=0), b,
    transB=1)`` with ``q`` int8 of shape ``(out, in)``; each ``Conv(x, K, b)`` (an image
    model's) becomes ``Conv(x, DequantizeLinear(q, scale, axis=0), b)`` with ``q`` int8 of
    ``K``'s shape ``(out, in, kh, kw)``, one scale per output channel (over its ``in * kh * kw``
    weights). The scale and the bias go through a ``Cast`` to float32 when they are stored in
    float16.

    Raises ``ValueError`` if the graph has no ``Gemm`` or ``Conv`` with a constant weight.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    names = _Names(out)
    nodes: list[onnx.NodeProto] = []
    drop: set[str] = set()
    added: list[onnx.TensorProto] = []
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        B = node.input[1] if node.op_type in ("Gemm", "Conv") else None
        if (B is None or B not in inits or uses[B] != 1 or attrs.get("alpha", 1.0) != 1.0
                or inits[B].data_type not in (TensorProto.FLOAT, TensorProto.DOUBLE)):
            nodes.append(node)
            continue
        W = numpy_helper.to_array(inits[B])
        conv = node.op_type == "Conv"
        # Conv kernels (out, in, kh, kw): one scale per output channel, the first axis as for
        # the Gemm's (out, in) below; quantized as (out, in * kh * kw) rows.
        # Gemm weights: stored as (out, in) with transB=1, one scale per row (output channel).
        # Not only for contiguous channels: onnxruntime (seen with 1.32, ORT_ENABLE_EXTENDED and
        # up) rewrites DequantizeLinear -> Gemm/MatMul with transB=0 into MatMulNBits, which by
        # default quantizes the activations to int8 too and moved probabilities by up to 2e-2
        # here; test_int8_weights_are_the_quantized_fp32_weights would catch such a rewrite.
        Wt = W.reshape(W.shape[0], -1) if conv else W if attrs.get("transB", 0) else W.T
        q, scale = quantize_weights(Wt, axis=0)
        q = q.reshape(W.shape) if conv else q
        elem = inits[B].data_type
        k = sum(n.op_type == "DequantizeLinear" for n in nodes)  # layer number
        qname = names.new(f"{_PREFIX}q{k}")
        added.append(numpy_helper.from_array(q, qname))
        s = names.new(f"{_PREFIX}s{k}")
        added.append(numpy_helper.from_array(scale, s))
        if scale.dtype != np.float32:
            s = _cast(nodes, names, s, TensorProto.FLOAT)
        w = names.new(f"{_PREFIX}w{k}")
        nodes.append(helper.make_node("DequantizeLinear", [qname, s], [w], axis=0))
        if elem != TensorProto.FLOAT:  # DequantizeLinear yields float32 at most
            w = _cast(nodes, names, w, elem)
        inputs = [node.input[0], w, *node.input[2:]]
        C = node.input[2] if len(node.input) > 2 else ""
        if C in inits and uses[C] == 1 and attrs.get("beta", 1.0) == 1.0:
            b = numpy_helper.to_array(inits[C])
            stored = _bias_storage(b, np.broadcast_to(scale, b.shape) if b.ndim else scale.max())
            if stored.dtype == np.float16:
                c = names.new(f"{_PREFIX}c{k}")
                added.append(numpy_helper.from_array(stored, c))
                inputs[2] = _cast(nodes, names, c, elem)
                drop.add(C)
        drop.add(B)
        nodes.append(helper.make_node(node.op_type, inputs, list(node.output),
                                      name=node.name or None,
                                      **(attrs if conv else {**attrs, "transB": 1})))
    if not any(n.op_type == "DequantizeLinear" for n in nodes):
        raise ValueError("the graph has no Gemm or Conv with a constant weight tensor to "
                         "quantize")
    keep = [t for t in g.initializer if t.name not in drop]
    del g.initializer[:]
    g.initializer.extend(keep + added)
    del g.node[:]
    g.node.extend(nodes)
    helper.set_model_props(out, {**{p.key: p.value for p in model.metadata_props},
                                 "pipeline.quantization": "int8 weights"})
    onnx.checker.check_model(out, full_check=True)
    return out


def _cast(nodes: list[onnx.NodeProto], names: _Names, x: str, to: int) -> str:
    out = names.new(x + "f")
    nodes.append(helper.make_node("Cast", [x], [out], to=to))
    return out


def _as_pandas(obj: Any) -> Any:
    if type(obj).__module__.startswith(("dask", "dask_expr")):
        return obj.compute()  # a validation set is small by nature; the client holds it anyway
    return obj


def validation_score(data: bytes, X: Any, y: Any) -> tuple[str, float]:
    """``("accuracy", a)`` or ``("r2", r)`` of the ONNX model ``data`` on ``(X, y)``, scored by
    onnxruntime (one thread). ``X``: raw columns (pandas or dask DataFrame) for a graph with a
    preprocessor, features (array or frame) for a graph with input ``X``, images
    ``(N, H, W[, C])`` (NumPy or dask array) for an image graph."""
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
