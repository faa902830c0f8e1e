"""A fitted model (and its preprocessor) as one ONNX graph over the raw columns.

The graph follows skl2onnx's conventions, so it drops into serving code written for
scikit-learn pipelines:

- with a :class:`~pipeline.preprocessing.Preprocessor`: one input per raw feature column,
  named as the column, shape ``(N, 1)``. Numeric columns are ``tensor(double)`` with NaN for a
  missing value (double, not float: the preprocessor standardizes in float64, and a float32
  input would lose the low digits of columns with a large offset). Categorical columns are
  ``tensor(string)`` with ``""`` for a missing value (``tensor(double)`` with NaN when the
  fitted categories are numbers). The graph imputes, standardizes and one-hot encodes exactly
  as :meth:`Preprocessor.transform` does (unknown categories encode as all zeros);
- without one: a single input ``X`` of shape ``(N, n_features)``, in the model's dtype;
- outputs ``label`` ``(N,)`` (the ``classes_``' type: int64, double or string) and
  ``probabilities`` ``(N, n_classes)`` for classifiers, ``variable`` ``(N, n_outputs)`` for
  regressors, in the model's dtype (float32 by default).

The file is a plain ONNX protobuf (opset :data:`OPSET`, IR version :data:`IR_VERSION`, both
run by onnxruntime ≥ 1.17): tensors and strings only, nothing pickled. The network is written
as one ``Gemm`` per layer (onnxruntime fuses it with the activation); ``quantize="int8"`` stores
each layer's weights as int8 per output channel (see :mod:`pipeline.export.quantize`).

Example
-------
>>> report = model.export_onnx("model.onnx", preprocessor=prep)          # doctest: +SKIP
>>> import onnxruntime as ort                                            # doctest: +SKIP
>>> sess = ort.InferenceSession("model.onnx")                            # doctest: +SKIP
>>> from pipeline.export import onnx_feed                                # doctest: +SKIP
>>> label, proba = sess.run(None, onnx_feed(sess, raw_frame))            # doctest: +SKIP

This module builds the graph; :mod:`pipeline.export.writer` writes the file
(:func:`~pipeline.export.export_onnx`, :class:`~pipeline.export.ExportReport`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__

__all__ = [
    "IR_VERSION",
    "OPSET",
    "build_onnx",
    "build_preprocessor_onnx",
    "features_graph",
]

OPSET = 21
IR_VERSION = 10
# Internal tensor names carry this prefix; a raw column may not use it. Names are kept short:
# the quantizer derives several names from each, and on a small model they weigh in the size.
_PREFIX = "pl/"
OUTPUT_NAMES = ("label", "probabilities", "variable")
_ONNX_TYPE = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int64): TensorProto.INT64,
}
_ACTIVATION_OP = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "identity": None}


class _Graph:
    """Nodes, constants and inputs of one graph, with generated internal names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._consts: dict[tuple[Any, ...], str] = {}
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{_PREFIX}{hint}{self._n}"

    def const(self, value: Any, hint: str, dtype: Any = None, share: bool = True) -> str:
        """An initializer holding ``value``; equal constants (same dtype, shape and values,
        e.g. the ``""`` of every string column) are stored once, unless ``share=False`` (a
        layer's parameters: each layer owns its tensors, which the quantizer rewrites)."""
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype.kind in "OUS":
            arr = np.asarray([str(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)
        if not share:
            name = self.name(hint)
            self.initializers.append(numpy_helper.from_array(arr, name))
            return name
        key = (arr.dtype.str, arr.shape,
               tuple(arr.ravel().tolist()) if arr.dtype == object else arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.name(hint)
            self.initializers.append(numpy_helper.from_array(arr, self._consts[key]))
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], hint: str | None = None,
           output: str | None = None, **attrs: Any) -> str:
        out = output or self.name(hint or op_type.lower())
        # Nodes are left unnamed (names are optional in ONNX): on a small model, names are a
        # measurable part of the file, and of the int8 file most of all.
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def add_input(self, name: str, elem_type: int, width: int) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, [None, width]))
        return name


def _category_kind(categories: np.ndarray, column: Any) -> str:
    """``"string"`` or ``"number"``: the input type a categorical column gets."""
    values = categories.tolist()
    if all(isinstance(v, str) for v in values):
        return "string"
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        return "number"
    raise ValueError(
        f"categorical column {column!r} mixes value types "
        f"({sorted({type(v).__name__ for v in values})}); ONNX needs one input type per "
        "column: cast the column to str before fitting"
    )


def _check_column_names(names: list[str]) -> None:
    for name in names:
        if name in OUTPUT_NAMES or name.startswith(_PREFIX) or name == "X":
            raise ValueError(
                f"column {name!r} cannot be an ONNX input name (it collides with an output or "
                f"internal name: {', '.join(OUTPUT_NAMES)}, X, {_PREFIX}*); rename it"
            )


def features_graph(g: _Graph, prep: Any) -> str:
    """Add the raw-column inputs and the preprocessing of ``prep`` to ``g``; return the name of
    the float64 feature matrix ``(N, len(prep.feature_names_out_))``, equal to
    ``prep.transform(frame)`` for the same rows."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(prep)
    _check_column_names([str(c) for c in prep.feature_names_in_])
    parts: list[str] = []
    numeric = [g.add_input(str(c), TensorProto.DOUBLE, 1) for c in prep.numeric_features_]
    if numeric:
        x = g.op("Concat", numeric, "num", axis=1) if len(numeric) > 1 else numeric[0]
        fills = np.asarray(prep.statistics_, dtype=np.float64)
        if not np.isnan(fills).all():
            # NaN fills (impute=None) keep NaN where the data has NaN, as fillna(nan) would.
            x = g.op("Where", [g.op("IsNaN", [x], "nan"),
                               g.const(fills[None, :], "fill"), x], "imp")
        if prep.scale_ is not None:
            x = g.op("Sub", [x, g.const(np.asarray(prep.mean_, np.float64)[None, :], "mean")],
                     "ctr")
            x = g.op("Div", [x, g.const(np.asarray(prep.scale_, np.float64)[None, :], "scale")],
                     "std")
        parts.append(x)
    for column, cats, fill in zip(prep.categorical_features_, prep.categories_,
                                  prep.categorical_fill_, strict=True):
        kind = _category_kind(cats, column)
        name = str(column)
        if kind == "string":
            if "" in cats.tolist():
                raise ValueError(
                    f"categorical column {column!r} has the empty string as a category; ONNX "
                    "inputs use '' for a missing value: replace it before fitting"
                )
            x = g.add_input(name, TensorProto.STRING, 1)
            missing = g.op("Equal", [x, g.const("", "empty", dtype=object)], "miss")
            categories = g.const(np.asarray(cats.tolist(), dtype=object)[None, :], "cats")
        else:
            x = g.add_input(name, TensorProto.DOUBLE, 1)
            missing = g.op("IsNaN", [x], "miss")
            categories = g.const(np.asarray(cats, dtype=np.float64)[None, :], "cats")
        # Missing values take the fill category only if it is a category (transform's rule:
        # "missing" exists only when the fit data had missing values); otherwise all zeros.
        if fill is not None and fill in cats.tolist():
            fill_value = (g.const(str(fill), "fill", dtype=object) if kind == "string"
                          else g.const(float(fill), "fill", dtype=np.float64))
            x = g.op("Where", [missing, fill_value, x], "cimp")
        onehot = g.op("Equal", [x, categories], "eq")  # (N, 1) vs (1, k) -> (N, k)
        parts.append(g.op("Cast", [onehot], "oh", to=TensorProto.DOUBLE))
    return g.op("Concat", parts, "feat", axis=1) if len(parts) > 1 else parts[0]


def build_preprocessor_onnx(preprocessor: Any) -> onnx.ModelProto:
    """The preprocessing part alone: raw-column inputs, one output ``features``
    ``(N, n_features_out)`` float64 equal to ``preprocessor.transform`` (checked)."""
    g = _Graph()
    g.op("Identity", [features_graph(g, preprocessor)], output="features")
    width = len(preprocessor.feature_names_out_)
    graph = helper.make_graph(g.nodes, "Preprocessor", g.inputs,
                              [helper.make_tensor_value_info("features", TensorProto.DOUBLE,
                                                             [None, width])], g.initializers)
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                            ir_version=IR_VERSION, producer_name="dask-pipeline",
                            producer_version=__version__)
    onnx.checker.check_model(onx, full_check=True)
    return onx


def _network(g: _Graph, model: Any, x: str, dtype: np.dtype) -> str:
    """One ``Gemm`` (``x @ W + b``) (+ activation) per layer; returns the raw output ``z``.

    ``Gemm`` rather than ``MatMul`` + ``Add``: one node and one kernel per layer (onnxruntime
    fuses the activation into it), and the form :func:`pipeline.export.quantize.quantize_int8`
    rewrites (``W`` and ``b`` are the Gemm's ``B`` and ``C`` initializers).
    """
    from ..nn import unpack

    layers = unpack(model.spec_, np.asarray(model.params_))
    act = _ACTIVATION_OP[model.spec_.activation]
    for i, (W, b) in enumerate(layers):
        x = g.op("Gemm", [x, g.const(np.asarray(W, dtype=dtype), f"W{i}_", share=False),
                          g.const(np.asarray(b, dtype=dtype), f"b{i}_", share=False)], f"z{i}_")
        if i < len(layers) - 1 and act is not None:
            x = g.op(act, [x], f"h{i}_")
    return x


def _label_tensor(classes: np.ndarray) -> tuple[np.ndarray, int]:
    values = np.asarray(classes)
    if values.dtype.kind in "iu":
        return values.astype(np.int64), TensorProto.INT64
    if values.dtype.kind == "f":
        return values.astype(np.float64), TensorProto.DOUBLE
    if all(isinstance(v, str) for v in values.tolist()):
        return np.asarray(values.tolist(), dtype=object), TensorProto.STRING
    raise ValueError(
        f"classes_ of dtype {values.dtype} cannot be an ONNX label; use int or str labels"
    )


def two_column_probabilities(g: _Graph, p: str, dtype: Any) -> str:
    """``probabilities`` = ``[1 - p, p]`` from one column of positive-class probabilities, as
    a binary classifier's ``predict_proba``."""
    q = g.op("Sub", [g.const(np.ones((1, 1), dtype=dtype), "one"), p], "q")
    return g.op("Concat", [q, p], output="probabilities", axis=1)


def label_outputs(g: _Graph, proba: str, classes: np.ndarray, dtype: Any) -> list[Any]:
    """``label`` from ``probabilities`` (the first largest, as NumPy's argmax) and both
    outputs' value infos; the one classifier head every exported graph ends with."""
    labels, label_type = _label_tensor(classes)
    if label_type == TensorProto.INT64 and np.array_equal(labels, np.arange(len(labels))):
        # classes 0..k-1: the index is the label (a Gather through an identity table costs
        # as much as the ArgMax on a large batch)
        g.op("ArgMax", [proba], output="label", axis=1, keepdims=0)
    else:
        index = g.op("ArgMax", [proba], "argmax", axis=1, keepdims=0)
        g.op("Gather", [g.const(labels, "classes"), index], output="label", axis=0)
    return [helper.make_tensor_value_info("label", label_type, [None]),
            helper.make_tensor_value_info("probabilities", _ONNX_TYPE[np.dtype(dtype)],
                                          [None, len(labels)])]


def _metadata(model: Any, prep: Any) -> dict[str, str]:
    meta = {
        "pipeline.estimator": type(model).__name__,
        "pipeline.version": __version__,
        "pipeline.inputs": "raw columns" if prep is not None else "X",
    }
    if prep is not None:  # missing values are the preprocessing's business
        meta["pipeline.missing"] = "NaN (numeric), '' (string)"
    if hasattr(model, "classes_"):
        meta["pipeline.classes"] = json.dumps(np.asarray(model.classes_).tolist())
    else:
        meta["pipeline.n_outputs"] = str(int(model.n_outputs_))
    return meta


def build_onnx(model: Any, preprocessor: Any = None) -> onnx.ModelProto:
    """The checked ONNX model of a fitted ``MLPClassifier``/``MLPRegressor`` (and
    ``preprocessor``), as described in this module's docstring; of a tabular estimator (its own
    preprocessing), as :mod:`pipeline.export.onnx_tabular` describes; of an ``ImageClassifier``,
    as :mod:`pipeline.export.onnx_image` describes."""
    from .onnx_tabular import build_tabular_onnx, is_tabular  # estimators with their own prep

    if is_tabular(model):
        return build_tabular_onnx(model, preprocessor)
    if hasattr(model, "image_shape_"):  # a fitted ImageClassifier: pixels in, see onnx_image
        from .onnx_image import build_image_onnx

        return build_image_onnx(model, preprocessor=preprocessor)
    if not hasattr(model, "params_") or not hasattr(model, "spec_"):
        raise ValueError(f"{type(model).__name__} is not fitted (or not an MLP estimator of "
                         "this package): call fit first")
    dtype = np.dtype(getattr(model, "dtype", "float32"))
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"model dtype must be float32 or float64, got {dtype}")
    n_features = model.spec_.n_features
    g = _Graph()
    if preprocessor is not None:
        n_out = len(preprocessor.feature_names_out_)
        if n_out != n_features:
            raise ValueError(
                f"the preprocessor produces {n_out} features but the model expects "
                f"{n_features}: they were not fitted together"
            )
        x = g.op("Cast", [features_graph(g, preprocessor)], "x", to=_ONNX_TYPE[dtype])
    else:
        x = g.add_input("X", _ONNX_TYPE[dtype], n_features)
    z = _network(g, model, x, dtype)
    outputs = []
    out_activation = model.spec_.out_activation
    if hasattr(model, "classes_"):
        if out_activation == "logistic":  # binary: [1 - p, p], as predict_proba
            proba = two_column_probabilities(g, g.op("Sigmoid", [z], "p"), dtype)
        else:
            proba = g.op("Softmax", [z], output="probabilities", axis=1)
        outputs = label_outputs(g, proba, model.classes_, dtype)
    else:
        if out_activation != "identity":
            raise ValueError(f"unexpected output activation {out_activation!r} for a regressor")
        g.op("Identity", [z], output="variable")
        outputs = [helper.make_tensor_value_info("variable", _ONNX_TYPE[dtype],
                                                 [None, model.spec_.n_outputs])]
    doc = ("Missing values: NaN in numeric inputs, '' in string inputs. Unknown categories "
           "encode as all zeros.") if preprocessor is not None else None
    graph = helper.make_graph(g.nodes, type(model).__name__, g.inputs, outputs, g.initializers,
                              doc_string=doc)
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                            ir_version=IR_VERSION, producer_name="dask-pipeline",
                            producer_version=__version__)
    helper.set_model_props(onx, _metadata(model, preprocessor))
    onnx.checker.check_model(onx, full_check=True)
    return onx


def __getattr__(name: str) -> Any:
    # export_onnx, ExportReport and write_atomic lived here before they had a module; imported
    # on first use, since the writer imports this module.
    if name in ("ExportReport", "export_onnx", "write_atomic"):
        from . import writer

        return getattr(writer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
