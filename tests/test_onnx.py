"""ONNX export: onnxruntime on the exported graph against the package's own NumPy predictions.

Oracles: ``Preprocessor.transform`` for the preprocessing part (float64, same operations, so
equal bit for bit); ``predict_proba``/``predict`` of the fitted estimators (NumPy, in process)
for whole models; the quantizer's dequantized weights against the fp32 weights; scikit-learn's
``accuracy_score``/``r2_score`` computed here on the outputs of onnxruntime for the int8 guard.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx_checks import assert_cli_scores, assert_labels_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score

import pipeline as pl
from pipeline.datasets import make_chunk
from pipeline.export import (
    OnnxModel,
    QuantizationAccuracyError,
    build_onnx,
    build_preprocessor_onnx,
    export_onnx,
    onnx_feed,
    quantize_int8,
    score_frame,
    session,
)
from pipeline.export import serve as serve_module
from pipeline.export.quantize import MIN_HALF, quantize_weights

onnxruntime = pytest.importorskip("onnxruntime")

N_TEST = 10_000
CATEGORICAL = ["city", "segment"]


def _raw(index: int, n: int) -> pd.DataFrame:
    """Demo rows with missing numeric values (2%, from the generator), missing categories and
    categories never seen in training, plus a 3-class string label and two regression targets."""
    df = make_chunk(index, n)
    rng = np.random.default_rng(index)
    for col, unseen in (("city", "Atlantis"), ("segment", "government")):
        u = rng.random(n)
        df.loc[u < 0.03, col] = None
        if index > 0:  # only the scoring data has unseen categories
            df.loc[u > 0.97, col] = unseen
    x00 = np.nan_to_num(df["x00"].to_numpy())
    df["tier"] = np.asarray(["bronze", "gold", "silver"], dtype=object)[
        df["y"].to_numpy() + (x00 > np.median(x00))]
    df["t1"] = 2.0 * df["y"] + 0.5 * x00 + 0.1 * rng.standard_normal(n)
    df["t2"] = np.nan_to_num(df["x03"].to_numpy()) - df["y"]
    return df


FEATURES = [f"x{i:02d}" for i in range(16)] + CATEGORICAL


def _prep(train: pd.DataFrame, label: str, **kwargs) -> pl.Preprocessor:
    return pl.Preprocessor(label=label, categorical=CATEGORICAL, numeric=FEATURES[:16],
                           **kwargs).fit(train[[*FEATURES, label]])


@pytest.fixture(scope="module")
def data():
    return _raw(0, 4_000), _raw(1, N_TEST)


@pytest.fixture(scope="module")
def fitted(client, data):
    """name -> (model, preprocessor, label column(s)), each trained for a few epochs."""
    train, _ = data
    out = {}
    kw = {"max_iter": 3, "random_state": 0, "batch_size": 256}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few epochs are enough here
        for name, label, est in [
            ("binary", "y", pl.MLPClassifier((16,), **kw)),
            ("multiclass_str", "tier", pl.MLPClassifier((16, 8), activation="tanh", **kw)),
            ("regressor", "t1", pl.MLPRegressor((16,), activation="logistic", **kw)),
        ]:
            prep = _prep(train, label)
            est.fit(*prep.transform_xy(train))
            out[name] = (est, prep, label)
        prep = _prep(train, "t1", impute="constant", categorical_impute="constant")
        est = pl.MLPRegressor((12,), **kw).fit(prep.transform(train), train[["t1", "t2"]])
        out["regressor_2out"] = (est, prep, ["t1", "t2"])
    return out


def _run(model_bytes: bytes, frame) -> dict[str, np.ndarray]:
    return score_frame(OnnxModel.from_bytes(model_bytes), frame)


# ---- the preprocessing part ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {},
    {"impute": "constant", "fill_value": -3.5, "categorical_impute": "constant"},
    {"impute": "most_frequent", "categorical_impute": None},
    {"impute": None, "scale": False},
])
def test_preprocessor_graph_equals_transform(data, kwargs):
    train, test = data
    prep = _prep(train, "y", **kwargs)
    out = _run(build_preprocessor_onnx(prep).SerializeToString(), test)["features"]
    expected = prep.transform(test).to_numpy()
    assert out.shape == (N_TEST, len(prep.feature_names_out_))
    np.testing.assert_array_equal(out, expected)  # same float64 operations, same bits


def test_numeric_categories_and_input_types(data):
    train, test = data
    train = train.assign(level=np.arange(len(train)) % 3)
    test = test.assign(level=np.where(np.arange(len(test)) % 5 == 0, np.nan,
                                      np.arange(len(test)) % 4))  # 3 is unseen
    prep = pl.Preprocessor(label="y", categorical=["city", "level"],
                           numeric=["x00", "x01"]).fit(train[["x00", "x01", "city", "level", "y"]])
    onx = build_preprocessor_onnx(prep)
    types = {i.name: i.type.tensor_type.elem_type for i in onx.graph.input}
    assert types == {"x00": onnx.TensorProto.DOUBLE, "x01": onnx.TensorProto.DOUBLE,
                     "city": onnx.TensorProto.STRING, "level": onnx.TensorProto.DOUBLE}
    assert all(i.type.tensor_type.shape.dim[1].dim_value == 1 for i in onx.graph.input)
    out = _run(onx.SerializeToString(), test)["features"]
    np.testing.assert_array_equal(out, prep.transform(test).to_numpy())


def test_column_named_like_an_output_is_refused(data):
    train, _ = data
    prep = pl.Preprocessor(label="y", numeric=["x00"], categorical=["label"]).fit(
        train[["x00", "city", "y"]].rename(columns={"city": "label"}))
    with pytest.raises(ValueError, match="column 'label' cannot be an ONNX input name"):
        build_preprocessor_onnx(prep)


def test_missing_input_column_is_named(fitted, data):
    model, prep, _ = fitted["binary"]
    onx = OnnxModel.from_bytes(build_onnx(model, prep).SerializeToString())
    with pytest.raises(ValueError, match=r"column\(s\) \['segment'\] needed by the ONNX model"):
        onnx_feed(session(onx), data[1].drop(columns=["segment"]))


# ---- whole models ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["binary", "multiclass_str"])
def test_classifier_matches_predict_proba(fitted, data, name):
    _, test = data
    model, prep, _ = fitted[name]
    X = prep.transform(test)
    proba, labels = model.predict_proba(X), model.predict(X)
    for onx, frame in [(build_onnx(model, prep), test), (build_onnx(model), X)]:
        out = _run(onx.SerializeToString(), frame)
        assert out["probabilities"].dtype == np.float32
        np.testing.assert_allclose(out["probabilities"], proba, rtol=1e-5, atol=1e-5)
        assert out["label"].dtype == model.classes_.dtype
        assert_labels_equal(out["label"], labels, proba)
    assert {o.name for o in build_onnx(model, prep).graph.output} == {"label", "probabilities"}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 1 epoch
def test_integer_labels_other_than_the_index(client, data):
    """Labels 0..k-1 are the ArgMax itself; other integer labels go through a Gather."""
    train, test = data
    prep = _prep(train, "y")
    X, Xt = prep.transform(train), prep.transform(test)
    for offset, gather in ((0, False), (3, True)):
        model = pl.MLPClassifier((8,), max_iter=1, random_state=0, batch_size=256).fit(
            X, train["y"] + offset)
        onx = build_onnx(model)
        assert ("Gather" in {n.op_type for n in onx.graph.node}) == gather
        out = _run(onx.SerializeToString(), Xt)
        proba = model.predict_proba(Xt)
        assert out["label"].dtype == np.int64
        assert_labels_equal(out["label"], model.predict(Xt), proba)
        assert set(np.unique(out["label"])) <= {offset, offset + 1}


@pytest.mark.parametrize("name", ["regressor", "regressor_2out"])
def test_regressor_matches_predict(fitted, data, name):
    _, test = data
    model, prep, _ = fitted[name]
    X = prep.transform(test)
    expected = np.asarray(model.predict(X)).reshape(N_TEST, -1)
    for onx, frame in [(build_onnx(model, prep), test), (build_onnx(model), X)]:
        out = _run(onx.SerializeToString(), frame)["variable"]
        assert out.shape == (N_TEST, model.n_outputs_)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_file_is_a_checked_protobuf_without_pickle(fitted, tmp_path):
    model, prep, _ = fitted["multiclass_str"]
    path = tmp_path / "m.onnx"
    report = model.export_onnx(path, preprocessor=prep)
    raw = path.read_bytes()
    loaded = onnx.load(path)
    onnx.checker.check_model(loaded, full_check=True)
    # The whole file is the protobuf (nothing appended), with no external data, and every
    # tensor is plain numbers or strings.
    assert loaded.SerializeToString() == raw
    assert not raw.startswith(b"\x80")  # a pickle stream's PROTO opcode
    plain = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT64,
             onnx.TensorProto.STRING}
    for t in loaded.graph.initializer:
        assert t.data_type in plain, t.name
        assert not onnx.external_data_helper.uses_external_data(t)
    assert report.inputs == tuple(FEATURES)
    assert report.fp32_bytes == len(raw) and report.int8_bytes is None
    meta = {p.key: p.value for p in loaded.metadata_props}
    assert meta["pipeline.classes"] == '["bronze", "gold", "silver"]'


def test_constants_are_stored_once(fitted):
    """No two initializers hold the same values (the "" of both string columns, the numeric
    fills that are the means), except each layer's own W and b; every node is unnamed."""
    model, prep, _ = fitted["binary"]
    onx = build_onnx(model, prep)
    seen = {}
    for t in onx.graph.initializer:
        a = onnx.numpy_helper.to_array(t)
        key = (a.dtype.str, a.shape, tuple(a.ravel().tolist()))
        assert key not in seen, (t.name, seen.get(key))
        seen[key] = t.name
    gemms = [n for n in onx.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == len(model.coefs_)
    params = [i for n in gemms for i in n.input[1:]]
    assert len(set(params)) == len(params) == 2 * len(model.coefs_)
    assert not any(n.name for n in onx.graph.node)
    out = _run(onx.SerializeToString(), _raw(1, 500))["probabilities"]
    np.testing.assert_allclose(out, model.predict_proba(prep.transform(_raw(1, 500))),
                               rtol=1e-5, atol=1e-5)


def test_session_cache_is_bounded(fitted):
    model, prep, _ = fitted["binary"]
    onx = build_onnx(model, prep)
    models = []
    for i in range(serve_module.MAX_SESSIONS + 2):
        onnx.helper.set_model_props(onx, {"copy": str(i)})  # same graph, different bytes
        models.append(OnnxModel.from_bytes(onx.SerializeToString()))
    first = session(models[0])
    assert session(models[0]) is first
    for m in models:
        session(m)
    assert len(serve_module._sessions) <= serve_module.MAX_SESSIONS
    assert session(models[0]) is not first  # evicted, then rebuilt


# ---- int8 ------------------------------------------------------------------------------------

def _dequantized_layers(q: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(W, b), ...]`` of an int8 graph in Gemm order, as its nodes define them: the int8
    matrix times its (float16 or float32) per-channel scale, the bias read through its Cast."""
    init = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    made = {o: n for n in q.graph.node for o in n.output}

    def value(name):
        if name in init:
            return init[name]
        node = made[name]
        assert node.op_type == "Cast", node.op_type
        return value(node.input[0]).astype(np.float32)

    layers = []
    for gemm in (n for n in q.graph.node if n.op_type == "Gemm"):
        dq = made[gemm.input[1]]
        assert dq.op_type == "DequantizeLinear" and len(dq.input) == 2  # zero point 0
        wq, scale = init[dq.input[0]], value(dq.input[1])
        assert wq.dtype == np.int8 and np.abs(wq.astype(int)).max() <= 127
        # stored (out, in), one scale per output channel, read with transB=1
        assert [a.i for a in dq.attribute if a.name == "axis"] == [0]
        assert [a.i for a in gemm.attribute if a.name == "transB"] == [1]
        layers.append(((wq.astype(np.float32) * scale[:, None]).T, value(gemm.input[2])))
    return layers


@pytest.mark.parametrize("name", ["binary", "multiclass_str"])
def test_int8_weights_are_the_quantized_fp32_weights(fitted, data, tmp_path, name):
    model, prep, label = fitted[name]
    _, test = data
    report = export_onnx(model, tmp_path / "q.onnx", preprocessor=prep, quantize="int8",
                         validation=(test, test[label]), max_accuracy_drop=1.0)
    q = onnx.load(tmp_path / "q.onnx")
    ops = {n.op_type for n in q.graph.node}
    assert "DequantizeLinear" in ops and not ops & {"MatMul", "MatMulInteger"}
    layers = _dequantized_layers(q)
    assert len(layers) == len(model.coefs_)
    for (Wd, bd), W, b in zip(layers, model.coefs_, model.intercepts_, strict=True):
        assert Wd.shape == W.shape
        # each int8 weight is the fp32 weight rounded to the nearest step of its column's scale
        step = np.abs(W).max(axis=0) / 127
        assert np.all(np.abs(Wd - W) <= step * (0.5 + 2.0**-10) + 1e-12)
        np.testing.assert_allclose(bd, b, rtol=2.0**-11, atol=2.0**-24)  # float16 at worst
    # Every weight is stored in one byte: the int8 tensors hold exactly the model's weights.
    int8_bytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in q.graph.initializer
                     if t.data_type == onnx.TensorProto.INT8)
    assert int8_bytes == sum(W.size for W in model.coefs_)
    # onnxruntime on the int8 graph = the network written out in NumPy with those weights
    X = prep.transform(test).to_numpy(dtype=np.float32)
    act = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}[model.activation]
    h = X
    for i, (Wd, bd) in enumerate(layers):
        h = h @ Wd + bd
        h = act(h) if i < len(layers) - 1 else h
    if len(model.classes_) == 2:
        p = 1 / (1 + np.exp(-h))
        expected = np.hstack([1 - p, p])
    else:
        e = np.exp(h - h.max(axis=1, keepdims=True))
        expected = e / e.sum(axis=1, keepdims=True)
    out = _run((tmp_path / "q.onnx").read_bytes(), test)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-4, atol=1e-5)
    # The guard's figures are the accuracies of the two graphs, recomputed here.
    fp32_labels = _run(build_onnx(model, prep).SerializeToString(), test)["label"]
    assert report.int8_score == pytest.approx(accuracy_score(test[label], out["label"]))
    assert report.fp32_score == pytest.approx(accuracy_score(test[label], fp32_labels))
    assert report.drop == pytest.approx(report.fp32_score - report.int8_score)
    assert report.int8_bytes == (tmp_path / "q.onnx").stat().st_size
    assert report.fp32_bytes == len(build_onnx(model, prep).SerializeToString())


def _one_gemm(W: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Gemm", ["X", "W", "b"], ["variable"])], "g",
        [h.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [None, W.shape[0]])],
        [h.make_tensor_value_info("variable", onnx.TensorProto.FLOAT, [None, W.shape[1]])],
        [onnx.numpy_helper.from_array(W, "W"), onnx.numpy_helper.from_array(b, "b")])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)


def test_quantize_weights_rounds_per_channel():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((20, 18)) * np.array([1e-2, 0.1, 1.0, 30.0, 1.0, 0.0] * 3)
    for axis, M in ((1, W), (0, W.T)):
        q, scale = quantize_weights(M, axis)
        assert q.dtype == np.int8 and scale.dtype == np.float16 and np.abs(q).max() <= 127
        s = scale.astype(np.float64)
        s = s[None, :] if axis == 1 else s[:, None]
        assert np.all(np.abs(q * s - M) <= s / 2 + 1e-12)
        amax = np.abs(M).max(axis=1 - axis)
        live = amax > 0
        # the scale is max|W| / 127 rounded up to float16, so the largest weight is ±127 or ±126
        assert np.all(scale[live] >= amax[live] / 127)
        assert np.all(np.abs(q).max(axis=1 - axis)[live] >= 126)
        assert np.all(scale[~live] == 1) and not q.take(np.flatnonzero(~live), axis=axis).any()
    # scales below float16's normal range stay float32 (float16 would lose their digits), and
    # so do fewer than MIN_HALF scales (the Cast would cost more than float16 saves)
    for M in (W * 1e-2, W[:, :MIN_HALF - 1]):
        q, scale = quantize_weights(M)
        assert scale.dtype == np.float32
        s = scale.astype(np.float64)[None, :]
        assert np.all(np.abs(q * s - M) <= s / 2 * (1 + 1e-6))


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_int8_bias_stays_float32_when_float16_would_move_it(offset):
    rng = np.random.default_rng(4)
    W = (0.01 * rng.standard_normal((5, MIN_HALF))).astype(np.float32)
    b = (offset + 0.01 * rng.standard_normal(MIN_HALF)).astype(np.float32)
    q = quantize_int8(_one_gemm(W, b))
    dtypes = {t.name: t.data_type for t in q.graph.initializer}
    bias_type = onnx.TensorProto.FLOAT if offset else onnx.TensorProto.FLOAT16
    assert bias_type in dtypes.values() and "W" not in dtypes and ("b" in dtypes) == bool(offset)
    ((Wd, bd),) = _dequantized_layers(q)
    X = rng.standard_normal((50, 5)).astype(np.float32)
    out = onnxruntime.InferenceSession(q.SerializeToString()).run(None, {"X": X})[0]
    np.testing.assert_allclose(out, X @ Wd + bd, rtol=1e-5, atol=1e-5)
    # float16 moves a bias by less than half a weight step of its column, float32 not at all
    assert np.all(np.abs(bd - b) < np.abs(W).max(axis=0) / 127 / 2)


def test_int8_guard_refuses_or_warns(fitted, data, tmp_path):
    model, prep, label = fitted["multiclass_str"]
    _, test = data
    path = tmp_path / "refused.onnx"
    # A negative threshold refuses any int8 model, even one that gains accuracy.
    with pytest.raises(QuantizationAccuracyError, match=r"validation accuracy .* fp32 -> .* "
                                                        r"int8.*was not written") as err:
        model.export_onnx(path, preprocessor=prep, quantize="int8",
                          validation=(test, test[label]), max_accuracy_drop=-1.0)
    assert not path.exists()
    assert err.value.metric == "accuracy" and err.value.drop == pytest.approx(
        err.value.fp32 - err.value.int8)
    with pytest.warns(UserWarning, match="more than max_accuracy_drop=-1.0"):
        report = model.export_onnx(path, preprocessor=prep, quantize="int8",
                                   validation=(test, test[label]), max_accuracy_drop=-1.0,
                                   on_drop="warn")
    assert path.exists() and report.quantize == "int8"


def test_int8_guard_uses_r2_for_regressors(fitted, data, tmp_path):
    model, prep, labels = fitted["regressor_2out"]
    _, test = data
    y = test[labels].to_numpy()
    with pytest.raises(QuantizationAccuracyError) as err:
        export_onnx(model, tmp_path / "r.onnx", preprocessor=prep, quantize="int8",
                    validation=(test, y), max_accuracy_drop=-1.0)
    fp32_pred = _run(build_onnx(model, prep).SerializeToString(), test)["variable"]
    assert err.value.metric == "r2"
    assert err.value.fp32 == pytest.approx(r2_score(y, fp32_pred))
    report = export_onnx(model, tmp_path / "r.onnx", preprocessor=prep, quantize="int8",
                         validation=(test, y), max_accuracy_drop=1.0)
    assert report.metric == "r2" and report.int8_score == pytest.approx(err.value.int8)


def test_export_rejects_bad_options(fitted, tmp_path):
    model, _prep, _ = fitted["binary"]
    with pytest.raises(ValueError, match="quantize must be None or 'int8'"):
        export_onnx(model, tmp_path / "x.onnx", quantize="int4")
    with pytest.raises(ValueError, match="on_drop must be"):
        export_onnx(model, tmp_path / "x.onnx", on_drop="ignore")
    with pytest.raises(ValueError, match="not fitted"):
        export_onnx(pl.MLPClassifier(), tmp_path / "x.onnx")
    other = pl.Preprocessor(label="y", numeric=["x00", "x01"]).fit(make_chunk(3, 500)[
        ["x00", "x01", "y"]])
    with pytest.raises(ValueError, match="produces 2 features but the model expects 28"):
        export_onnx(model, tmp_path / "x.onnx", preprocessor=other)


# ---- CLI -------------------------------------------------------------------------------------

def test_cli_export_and_predict_onnx_round_trip(fitted, data, cluster, tmp_path, capsys):
    from pipeline.cli.main import main

    model, prep, _label = fitted["multiclass_str"]
    _, test = data
    test = test.iloc[:3_000]
    model.save(str(tmp_path / "model"), preprocessor=prep)
    src = tmp_path / "data"
    src.mkdir()
    for i, start in enumerate(range(0, len(test), 1_000)):  # 3 partitions
        test.iloc[start:start + 1_000].to_parquet(src / f"part-{i}.parquet", index=False)
    onx, q = tmp_path / "m.onnx", tmp_path / "q.onnx"

    assert main(["export", str(tmp_path / "model"), str(onx)]) == 0
    assert main(["export", str(tmp_path / "model"), str(q), "--quantize", "int8",
                 "--validation", str(src), "--max-accuracy-drop", "-1"]) == 2
    assert "was not written" in capsys.readouterr().err and not q.exists()
    assert main(["export", str(tmp_path / "model"), str(q), "--quantize", "int8",
                 "--validation", str(src), "--max-accuracy-drop", "1"]) == 0
    assert "int8 size" in capsys.readouterr().out

    X = prep.transform(test)
    proba, labels = model.predict_proba(X), model.predict(X)
    assert_cli_scores(main, capsys, onx, src, tmp_path, cluster.scheduler_address,
                      model.classes_, proba, labels)
