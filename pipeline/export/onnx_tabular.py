"""A fitted :class:`~pipeline.TabularClassifier` / :class:`~pipeline.TabularRegressor` as one
ONNX graph over the raw columns.

The conventions are those of :mod:`pipeline.export.onnx` (skl2onnx's): one input per raw
feature column, named as the column, shape ``(N, 1)``, in the order of the fit frame
(``feature_names_in_``): ``tensor(double)`` with NaN for a missing value for numeric columns,
``tensor(string)`` with ``""`` for a missing value for categorical columns (``tensor(double)``
with NaN when the column's categories are numbers). Outputs: ``label`` ``(N,)`` and
``probabilities`` ``(N, n_classes)`` (float32) for the classifier, ``variable`` ``(N, 1)``
(float32, in the target's units) for the regressor.

The graph computes what ``predict_proba``/``predict`` compute, in the same precisions:

1. the estimator's own preprocessing (:class:`~pipeline.tabular_prep.TabularPreprocessor`) in
   float64: missing indicators, median imputation, the numeric encoding
   (``quantile_normal``/``quantile_uniform``/``standard``/``ple``, see
   :mod:`pipeline.export.onnx_encoding`), categorical codes (0 unknown or rare, 1 missing when
   the fit data had missing values, then the vocabulary) by an ``ai.onnx.ml`` ``LabelEncoder``
   (a hash lookup: a ``N x vocabulary`` comparison of strings costs ~50x more at 300
   categories); the result, cast to float32, is :meth:`TabularPreprocessor.transform_array`'s
   matrix ``[numeric | indicators | codes]``;
2. the network in float32, layer by layer: periodic embeddings (``Sin``/``Cos``), one-hot
   (``Equal``), embeddings (``Gather``), each :class:`~pipeline.nn.EnsembleDense` as ``Gemm``
   nodes (the first, on the shared input, as one ``Gemm`` over the members' concatenated
   weights, ``Split`` into one stream per member; the later ones one ``Gemm`` per member),
   ``Relu``, ``LayerNormalization``; dropout is the identity at inference and absent;
3. the members' output activations (logistic, softmax or none) averaged, as
   :meth:`pipeline.nn.EnsembleSequential.forward` (independent members,
   :class:`pipeline.nn.IndependentMembers`: steps 2-3 once per member network on the same
   matrix, their means averaged); then ``[1 - p, p]`` for a binary classifier, or the target's
   scale and mean for the regressor.

Every weight matrix is a ``Gemm`` weight, so ``quantize="int8"``
(:func:`pipeline.export.quantize.quantize_int8`) stores all of them as int8; the embedding
tables, periodic frequencies and normalisation parameters stay float32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import __version__
from . import onnx_encoding
from .onnx import (
    IR_VERSION,
    OPSET,
    _category_kind,
    _check_column_names,
    _Graph,
    _metadata,
    label_outputs,
    two_column_probabilities,
)

__all__ = ["ML_OPSET", "build_tabular_onnx", "build_tabular_preprocessor_onnx", "is_tabular",
           "members_graph", "network_graph", "tabular_features_graph"]

ML_OPSET = 4  # ai.onnx.ml: LabelEncoder with float64 keys (keys_tensor) from version 4
_F32, _F64, _I64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64


def is_tabular(model: Any) -> bool:
    """Whether ``model`` is a TabularClassifier/TabularRegressor (its own preprocessing)."""
    from ..tabular import _BaseTabular

    return isinstance(model, _BaseTabular)


def _ints(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


# ---- preprocessing -------------------------------------------------------------------------

def _category_codes(g: _Graph, x: str, column: Any, vocabulary: np.ndarray,
                    has_missing: bool, kind: str) -> str:
    """Integer codes ``(N, 1)`` int64 of one categorical input, as
    :func:`pipeline.vocab.encode_categories`."""
    offset = 2 if has_missing else 1
    values = [int(i + offset) for i in range(len(vocabulary))]
    if kind == "string":
        keys = [str(v) for v in vocabulary.tolist()]
        if "" in keys:
            raise ValueError(
                f"categorical column {column!r} has the empty string as a category; ONNX "
                "inputs use '' for a missing value: replace it before fitting")
        if has_missing:
            keys, values = ["", *keys], [1, *values]
        if not keys:
            return _zeros(g, x)
        return g.op("LabelEncoder", [x], "code", domain="ai.onnx.ml", keys_strings=keys,
                    values_int64s=values, default_int64=0)
    # kind "number": a non-empty vocabulary of numbers (an empty one counts as "string")
    code = g.op("LabelEncoder", [x], "code", domain="ai.onnx.ml",
                keys_tensor=onnx.numpy_helper.from_array(
                    np.asarray(vocabulary, dtype=np.float64), "keys"),
                values_tensor=onnx.numpy_helper.from_array(_ints(*values), "values"),
                default_tensor=onnx.numpy_helper.from_array(_ints(0), "default"))
    if has_missing:  # NaN matches no key: its code is set here
        code = g.op("Where", [g.op("IsNaN", [x]), g.const(np.int64(1), "i"), code], "code")
    return code


def _zeros(g: _Graph, like: str) -> str:
    """int64 zeros of ``like``'s shape: every row's code is "unknown"."""
    return g.op("ConstantOfShape", [g.op("Shape", [like])], "code",
                value=helper.make_tensor("v", _I64, [1], [0]))


def _numeric_block(g: _Graph, prep: Any, inputs: dict[Any, str]) -> tuple[str, str | None]:
    """``(encoded numeric columns, missing indicators or None)``, both float32."""
    cols = [inputs[c] for c in prep.numeric_features_]
    x = g.op("Concat", cols, "num", axis=1) if len(cols) > 1 else cols[0]
    indicators = None
    if prep.indicator_features_:
        flags = [g.op("Cast", [g.op("IsNaN", [inputs[c]])], "ind", to=_F32)
                 for c in prep.indicator_features_]
        indicators = g.op("Concat", flags, "ind", axis=1) if len(flags) > 1 else flags[0]
    fills = np.asarray(prep.statistics_, dtype=np.float64)[None, :]
    x = g.op("Where", [g.op("IsNaN", [x]), g.const(fills, "fill"), x], "imp")
    enc = prep.numeric
    if enc == "standard":
        x = g.op("Div", [g.op("Sub", [x, g.const(np.asarray(prep.mean_, np.float64)[None, :],
                                                  "mean")]),
                         g.const(np.asarray(prep.scale_, np.float64)[None, :], "scale")], "std")
    elif enc == "ple":
        x = onnx_encoding.piecewise_linear_encode(
            g, x, np.asarray(prep.bin_edges_, np.float64),
            [int(n) for n in prep.n_bin_edges_], int(prep.n_bins))
    elif enc in ("quantile_normal", "quantile_uniform"):
        x = onnx_encoding.quantile_transform(g, x, np.asarray(prep.quantiles_, np.float64),
                                             "normal" if enc == "quantile_normal" else "uniform")
    else:
        raise ValueError(f"no ONNX form for the numeric encoding {enc!r}")
    return g.op("Cast", [x], "num", to=_F32), indicators


def tabular_features_graph(g: _Graph, prep: Any, columns: list[Any] | None = None) -> str:
    """Add the raw-column inputs (in ``columns`` order; default: numeric then categorical)
    and the preprocessing of the fitted :class:`~pipeline.tabular_prep.TabularPreprocessor`
    ``prep`` to ``g``; return the name of the float32 matrix ``(N, layout_.n_features)``,
    equal to ``prep.transform_array(frame)`` for the same rows."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(prep)
    numeric, categorical = list(prep.numeric_features_), list(prep.categorical_features_)
    columns = numeric + categorical if columns is None else list(columns)
    if sorted(map(str, columns)) != sorted(map(str, numeric + categorical)):
        raise ValueError(f"columns {columns!r} are not the preprocessor's features "
                         f"{numeric + categorical!r}")
    _check_column_names([str(c) for c in columns])
    kinds = {c: _category_kind(np.asarray(v, dtype=object), c)
             for c, v in zip(categorical, prep.vocabularies_, strict=True)}
    inputs = {c: g.add_input(str(c), TensorProto.STRING if kinds.get(c) == "string" else _F64, 1)
              for c in columns}
    parts: list[str] = []
    if numeric:
        num, indicators = _numeric_block(g, prep, inputs)
        parts += [num] if indicators is None else [num, indicators]
    codes = [_category_codes(g, inputs[c], c, np.asarray(v, dtype=object), bool(m), kinds[c])
             for c, v, m in zip(categorical, prep.vocabularies_, prep.categorical_missing_,
                                strict=True)]
    if codes:
        joined = g.op("Concat", codes, "codes", axis=1) if len(codes) > 1 else codes[0]
        parts.append(g.op("Cast", [joined], "codes", to=_F32))
    return g.op("Concat", parts, "x", axis=1) if len(parts) > 1 else parts[0]


def _finish(g: _Graph, name: str, outputs: list[onnx.ValueInfoProto], doc: str,
            uses_ml: bool, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, name, g.inputs, outputs, g.initializers, doc_string=doc)
    opsets = [helper.make_opsetid("", OPSET)]
    if uses_ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    onx = helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION,
                            producer_name="dask-pipeline", producer_version=__version__)
    if metadata:
        helper.set_model_props(onx, metadata)
    onnx.checker.check_model(onx, full_check=True)
    return onx


_DOC = ("Missing values: NaN in numeric inputs, '' in string inputs. Unknown and rare "
        "categories take the unknown code, as in the estimator.")


def build_tabular_preprocessor_onnx(prep: Any) -> onnx.ModelProto:
    """The preprocessing part alone: raw-column inputs, one output ``features``
    ``(N, n_features)`` float32 equal to ``prep.transform_array`` (checked)."""
    g = _Graph()
    g.op("Identity", [tabular_features_graph(g, prep)], output="features")
    out = helper.make_tensor_value_info("features", _F32, [None, prep.layout_.n_features])
    return _finish(g, "TabularPreprocessor", [out], _DOC, bool(prep.categorical_features_))


# ---- the network -----------------------------------------------------------------------------

def _columns(g: _Graph, x: str, cols: tuple[int, ...]) -> str:
    if cols == tuple(range(cols[0], cols[0] + len(cols))):
        return g.op("Slice", [x, g.const(_ints(cols[0]), "i"),
                              g.const(_ints(cols[0] + len(cols)), "i"), g.const(_ints(1), "i")])
    return g.op("Gather", [x, g.const(_ints(*cols), "cols")], axis=1)


def _branch(g: _Graph, layer: Any, params: list[np.ndarray], x: str) -> str:
    """One :class:`~pipeline.nn.ColumnSplit` branch on its float32 columns ``x``."""
    from ..nn import Embedding, Identity, Periodic
    from ..tabular_net import OneHot

    if isinstance(layer, Identity):
        return x
    if isinstance(layer, Periodic):
        # every feature's sines, then every feature's cosines (Periodic.forward): x repeated
        # k_j times along its features, times every frequency
        c = np.concatenate([np.asarray(p, np.float32).reshape(-1) for p in params])[None]
        counts = [p.shape[1] for p in params for _ in range(p.shape[0])]
        xs = g.op("Gather", [x, g.const(np.repeat(np.arange(len(counts)), counts)
                                        .astype(np.int64), "cols")], axis=1)
        z = g.op("Mul", [g.op("Mul", [xs, g.const(c, "freq", share=False)]),
                         g.const(np.float32(2 * math.pi), "twopi")], "z")
        y = g.op("Concat", [g.op("Sin", [z]), g.op("Cos", [z])], "periodic", axis=1)
        perm = getattr(layer, "_permutation", None)  # order="groups"
        if perm is not None:
            y = g.op("Gather", [y, g.const(perm.astype(np.int64), "cols")], "periodic", axis=1)
        return y
    if isinstance(layer, OneHot):
        pieces = []
        for j, v in enumerate(layer.vocab_sizes):
            col = g.op("Slice", [x, g.const(_ints(j), "i"), g.const(_ints(j + 1), "i"),
                                 g.const(_ints(1), "i")])
            hit = g.op("Equal", [col, g.const(np.arange(v, dtype=np.float32)[None], "ids")])
            pieces.append(g.op("Cast", [hit], "onehot", to=_F32))
        return g.op("Concat", pieces, "onehot", axis=1) if len(pieces) > 1 else pieces[0]
    if isinstance(layer, Embedding):
        codes = g.op("Cast", [x], "codes", to=_I64)
        pieces = [g.op("Gather", [g.const(np.asarray(table, np.float32), "emb", share=False),
                                  g.op("Gather", [codes, g.const(np.int64(j), "i")], axis=1)],
                       "emb", axis=0)
                  for j, table in enumerate(params)]
        return g.op("Concat", pieces, "emb", axis=1) if len(pieces) > 1 else pieces[0]
    raise ValueError(f"no ONNX form for the input layer {layer!r}")


def _ensemble_dense(g: _Graph, params: list[np.ndarray], x: str | list[str]) -> list[str]:
    """One :class:`~pipeline.nn.EnsembleDense`: the shared input ``x`` ``(N, d)``, or one
    input per member, to one output ``(N, units)`` per member."""
    W, b = (np.asarray(p, dtype=np.float32) for p in params)
    k, d, u = W.shape
    if isinstance(x, list):
        return [g.op("Gemm", [xi, g.const(W[i], "W", share=False),
                              g.const(b[i], "b", share=False)], "dense")
                for i, xi in enumerate(x)]
    # One product for all members, as EnsembleDense.forward, then one stream per member.
    Wcat = np.transpose(W, (1, 0, 2)).reshape(d, k * u)
    z = g.op("Gemm", [x, g.const(Wcat, "W", share=False),
                      g.const(b.reshape(k * u), "b", share=False)], "dense")
    if k == 1:
        return [z]
    parts = [g.name("m") for _ in range(k)]
    g.nodes.append(helper.make_node("Split", [z], parts, axis=1, num_outputs=k))
    return parts


def network_graph(g: _Graph, net: Any, flat: np.ndarray, x: str) -> str:
    """The :class:`~pipeline.nn.EnsembleSequential` ``net`` with weights ``flat`` on the float32
    matrix ``x``: the members' mean output activation ``(N, net.n_outputs)``, float32.

    The members run as separate streams from the first dense layer on (no per-layer
    ``Concat``/``Split`` of the ``(N, k * units)`` activations); each member's layers are
    ``Gemm`` (+ ``Relu``, fused by onnxruntime) (+ ``LayerNormalization``)."""
    from ..nn import ColumnSplit, Dropout, EnsembleDense, Flatten, Identity, LayerNorm, ReLU

    per_layer = net.body._split(net.unpack(np.asarray(flat, dtype=np.float32)))
    h: str | list[str] = x  # the shared input, then one tensor per member

    def each(op: str, extra: list[str], hint: str, **attrs: Any) -> str | list[str]:
        if isinstance(h, list):
            return [g.op(op, [t, *extra], hint, **attrs) for t in h]
        return g.op(op, [h, *extra], hint, **attrs)

    for layer, params in zip(net.layers, per_layer, strict=True):
        if isinstance(layer, ColumnSplit) and isinstance(h, str):
            outs = [_branch(g, part, p, _columns(g, h, cols)) for (cols, part), p in
                    zip(layer.branches, layer._split(params), strict=True)]
            h = g.op("Concat", outs, "split", axis=1) if len(outs) > 1 else outs[0]
        elif isinstance(layer, EnsembleDense):
            h = _ensemble_dense(g, params, h)
        elif isinstance(layer, ReLU):
            h = each("Relu", [], "relu")
        elif isinstance(layer, LayerNorm):  # over the last axis: per member, shared gamma, beta
            h = each("LayerNormalization", [g.const(np.asarray(p, np.float32), "ln", share=False)
                                            for p in params], "ln", axis=-1,
                     epsilon=float(layer.eps))
        elif isinstance(layer, (Dropout, Identity, Flatten)):
            continue  # the identity at inference; Flatten only joins the members' outputs
        else:
            raise ValueError(f"no ONNX form for the layer {layer!r} here")
    if not isinstance(h, list) or len(h) != net.members:
        raise ValueError(f"the network does not end in {net.members} members' outputs")
    act = {"logistic": "Sigmoid", "softmax": "Softmax", "identity": None}[
        net._loss.out_activation]
    p = h if act is None else [g.op(act, [t], "p", **({"axis": 1} if act == "Softmax" else {}))
                               for t in h]
    return _mean(g, p)  # EnsembleSequential.forward's mean over members


def _mean(g: _Graph, outs: list[str]) -> str:
    """The element-wise mean of ``outs``: their sum over their number (one: itself)."""
    if len(outs) == 1:
        return outs[0]
    return g.op("Div", [g.op("Sum", outs, "sum"), g.const(np.float32(len(outs)), "k")], "mean")


def members_graph(g: _Graph, net: Any, flat: np.ndarray, x: str) -> str:
    """:func:`network_graph` of ``net``, or, for :class:`~pipeline.nn.IndependentMembers`, of
    each member network on the same ``x``, their mean output activations averaged (as
    ``IndependentMembers.forward``)."""
    from ..nn import IndependentMembers

    if not isinstance(net, IndependentMembers):
        return network_graph(g, net, flat, x)
    flat = np.asarray(flat, dtype=np.float32)
    return _mean(g, [network_graph(g, net.network, net.member(flat, i), x)
                     for i in range(net.k)])


# ---- the whole model -------------------------------------------------------------------------

def build_tabular_onnx(model: Any, preprocessor: Any = None) -> onnx.ModelProto:
    """The checked ONNX model of a fitted TabularClassifier/TabularRegressor (module
    docstring). ``preprocessor`` must be None: these estimators carry their own."""
    if preprocessor is not None:
        raise ValueError(f"{type(model).__name__} learns its own preprocessing (its "
                         "preprocessor_ is part of the graph): export it without preprocessor=")
    if not hasattr(model, "params_"):
        raise ValueError(f"{type(model).__name__} is not fitted: call fit first")
    prep = model.preprocessor_
    g = _Graph()
    x = tabular_features_graph(g, prep, [
        c for name in model.feature_names_in_ for c in
        list(prep.numeric_features_) + list(prep.categorical_features_) if str(c) == name])
    mean = members_graph(g, model.model_, model.params_, x)
    if hasattr(model, "classes_"):
        if model.n_outputs_ == 1:  # binary: [1 - p, p], as predict_proba
            proba = two_column_probabilities(g, mean, np.float32)
        else:
            proba = g.op("Identity", [mean], output="probabilities")
        outputs = label_outputs(g, proba, model.classes_, np.float32)
    else:  # predictions in the target's units, in float32 as predict
        scaled = g.op("Mul", [mean, g.const(np.float32(model.target_scale_), "tscale")])
        g.op("Add", [scaled, g.const(np.float32(model.target_mean_), "tmean")],
             output="variable")
        outputs = [helper.make_tensor_value_info("variable", _F32, [None, model.n_outputs_])]
    return _finish(g, type(model).__name__, outputs, _DOC, bool(prep.categorical_features_),
                   _metadata(model, prep))
