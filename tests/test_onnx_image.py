"""ONNX export of ImageClassifier: onnxruntime on the exported graph against the estimator.

Oracles: ``predict_proba``/``predict`` of the fitted estimator (NumPy im2col convolutions, in
process) for the fp32 graph; for int8, the fitted weights (each int8 weight within half a
quantization step of its fp32 weight) and the fp32 graph run by onnxruntime with the
dequantized weights put in place of the fitted ones; scikit-learn's ``accuracy_score`` on the
graphs' labels for the guard. Networks are tiny and trained for one or two epochs on
scikit-learn's 8×8 digits: the point is the equality of two implementations, not accuracy.
"""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import onnx
import pandas as pd
import pytest
from onnx_checks import assert_labels_equal
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

import pipeline as pl
from pipeline import nn
from pipeline.export import (
    OnnxModel,
    QuantizationAccuracyError,
    build_onnx,
    onnx_feed,
    quantize_int8,
    score_frame,
    session,
)
from pipeline.export.onnx_image import build_image_onnx

onnxruntime = pytest.importorskip("onnxruntime")

# A fixed number of epochs; the sklearn-style warning that max_iter was reached is expected.
pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.timeout(120)]

NAMES = np.asarray(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                    "nine"])

# Between them, every layer the exporter knows, the padding cases of pipeline.nn.conv
# ("same" with odd and even kernels and strides, so asymmetric padding; "valid"), grayscale
# and RGB, 0..k-1 / other int / string labels, softmax and logistic heads.
CONFIGS = {
    # default architecture, grayscale, labels 0..9 (the ArgMax is the label)
    "default": dict(layers=None, rgb=False, labels="index", epochs=1),
    "gray_str": dict(layers=[
        nn.Augment(crop_padding=1), nn.Conv2D(6, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(8, 3, stride=2, padding="valid"), nn.Tanh(), nn.Flatten(), nn.Dense(16),
        nn.Dropout(0.2), nn.Logistic(), nn.Identity()], rgb=False, labels="names", epochs=2),
    # 8x8: kernel 4 "same" pads 1 before, 2 after; stride-2 windows of 3 pad 0 and 1
    # (group and layer norm channels first here)
    "rgb_int": dict(layers=[
        nn.Conv2D(6, 4, kernel_init="he_uniform"), nn.GroupNorm(2), nn.ReLU(),
        nn.AvgPool2D(3, stride=2, padding="same"), nn.Conv2D(8, 3, stride=2), nn.GroupNorm(4),
        nn.LayerNorm(), nn.AvgPool2D(2, padding="valid"), nn.GlobalAvgPool2D(), nn.Dense(12),
        nn.ReLU()], rgb=True, labels="tens", epochs=2),
    # no fitted normalisation: Rescale turns pixels into floats; group norm channels last (on
    # the pixels, before the transpose) and on flat features; one logistic output unit
    "rgb_binary": dict(layers=[
        nn.Rescale(), nn.GroupNorm(1), nn.Conv2D(4, 2, stride=2, padding="same"), nn.ReLU(),
        nn.MaxPool2D(3, stride=2, padding="same"), nn.Flatten(), nn.GroupNorm(2),
        nn.LayerNorm(), nn.Dense(8), nn.Tanh()],
        rgb=True, labels="parity", epochs=2, normalize=False),
}


def _labels(y: np.ndarray, kind: str) -> np.ndarray:
    return {"index": y, "names": NAMES[y], "tens": 10 * y,
            "parity": np.where(y % 2 == 0, "even", "odd")}[kind]


def _rgb(X: np.ndarray) -> np.ndarray:
    """Three different channels from grayscale digits."""
    return np.concatenate([X, 255 - X, np.roll(X, 1, axis=2)], axis=-1)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = np.clip(X * 16, 0, 255).astype(np.uint8).reshape(-1, 8, 8, 1)
    return train_test_split(X, y, train_size=600, test_size=400, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def fitted(client, digits):
    """name -> (model, test images, test labels)."""
    X_train, X_test, y_train, y_test = digits
    out = {}
    for name, cfg in CONFIGS.items():
        prep = _rgb if cfg["rgb"] else (lambda X: X)
        clf = pl.ImageClassifier(layers=cfg["layers"], normalize=cfg.get("normalize", True),
                                 max_iter=cfg["epochs"], batch_size=64, random_state=0,
                                 learning_rate_init=3e-3, min_block_rows=None)
        clf.fit(da.from_array(prep(X_train), chunks=(300, 8, 8, -1)),
                _labels(y_train, cfg["labels"]), client=client)
        out[name] = (clf, prep(X_test), _labels(y_test, cfg["labels"]))
    return out


def _run(onx: onnx.ModelProto | bytes, images) -> dict[str, np.ndarray]:
    data = onx if isinstance(onx, bytes) else onx.SerializeToString()
    return score_frame(OnnxModel.from_bytes(data), images)


# ---- fp32 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_graph_matches_predict_proba(fitted, name):
    clf, X, _ = fitted[name]
    proba, labels = clf.predict_proba(X), clf.predict(X)
    assert proba.std() > 1e-3  # the network is not a constant: the comparison means something
    onx = build_onnx(clf)
    (inp,) = onx.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == list(X.shape[1:])
    out = _run(onx, X)
    assert out["probabilities"].dtype == np.float32
    assert out["probabilities"].shape == (len(X), len(clf.classes_))
    np.testing.assert_allclose(out["probabilities"], proba, rtol=1e-5, atol=1e-5)
    assert (out["label"].dtype == object) == (clf.classes_.dtype.kind == "U")
    assert_labels_equal(out["label"], labels, proba, min_clear=0.95)
    if X.shape[-1] == 1:  # grayscale (N, H, W) is fed with a channel axis added
        np.testing.assert_array_equal(_run(onx, X[..., 0])["probabilities"],
                                      out["probabilities"])


def test_configs_cover_every_layer_and_padding_case(fitted):
    """The parametrized test above sees every exportable layer, and asymmetric "same" padding
    both in a convolution and in a pool, as the layers compute it."""
    from pipeline.image_estimator import saveable_layers

    seen = {type(layer) for clf, _, _ in fitted.values() for layer in clf.spec_.layers}
    assert seen == set(saveable_layers())
    pads = {}
    for clf, _, _ in fitted.values():
        for node in build_onnx(clf).graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if "pads" in attrs:
                top, _, bottom, _ = attrs["pads"]
                pads.setdefault(node.op_type, set()).add((top != bottom, attrs["strides"][0]))
    assert {(True, 1), (True, 2), (False, 1)} <= pads["Conv"]
    assert (True, 2) in pads["AveragePool"] and (True, 2) in pads["MaxPool"]


def test_one_transpose_in_and_one_back_before_flatten(fitted):
    clf, _, _ = fitted["default"]
    ops = [n.op_type for n in build_onnx(clf).graph.node]
    assert ops[:4] == ["Cast", "Sub", "Mul", "Transpose"]  # pixels -> float, normalise, NCHW
    assert ops.count("Transpose") == 2
    assert ops.index("Flatten") == ops.index("Transpose", 4) + 1
    assert ops.count("Conv") == 2 and ops.count("Gemm") == 2


def test_float_input(fitted):
    """A uint8 graph refuses float images (onnx_feed with the model's dtype in the message,
    onnxruntime itself by type); input_dtype="float32" gives the graph the estimator computes
    for float32 images."""
    clf, X, _ = fitted["gray_str"]
    onx = build_image_onnx(clf)
    Xf = X.astype(np.float32)
    with pytest.raises(ValueError, match="takes uint8 images, got float32"):
        _run(onx, Xf)
    sess = onnxruntime.InferenceSession(onx.SerializeToString())
    with pytest.raises(Exception, match=r"(?i)type"):
        sess.run(None, {"image": Xf})
    float_graph = build_image_onnx(clf, input_dtype="float32")
    assert "Cast" not in {n.op_type for n in float_graph.graph.node}
    scaled = Xf / 255.0 * 250.0  # not pixel values: the graph must not round them
    np.testing.assert_allclose(_run(float_graph, scaled)["probabilities"],
                               clf.predict_proba(scaled), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="takes images of shape"):
        _run(onx, X[:, :7])


def test_bad_arguments(fitted):
    clf, _, _ = fitted["default"]
    with pytest.raises(ValueError, match="takes no preprocessor"):
        build_onnx(clf, pl.Preprocessor())
    with pytest.raises(ValueError, match="input_dtype must be one of"):
        build_image_onnx(clf, input_dtype="float64")
    with pytest.raises(ValueError, match="not fitted"):
        build_onnx(pl.ImageClassifier())


def test_file_is_a_checked_protobuf_without_pickle(fitted, tmp_path):
    clf, X, _ = fitted["gray_str"]
    for quantize, plain in [(None, {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64,
                                    onnx.TensorProto.STRING}),
                            ("int8", {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                      onnx.TensorProto.INT8, onnx.TensorProto.INT64,
                                      onnx.TensorProto.STRING})]:
        path = tmp_path / f"{quantize}.onnx"
        report = clf.export_onnx(path, quantize=quantize)
        raw = path.read_bytes()
        loaded = onnx.load(path)
        onnx.checker.check_model(loaded, full_check=True)
        assert loaded.SerializeToString() == raw  # the whole file is the protobuf
        assert not raw.startswith(b"\x80")  # a pickle stream's PROTO opcode
        for t in loaded.graph.initializer:
            assert t.data_type in plain, t.name
            assert not onnx.external_data_helper.uses_external_data(t)
        assert report.inputs == ("image",) and report.outputs == ("label", "probabilities")
        meta = {p.key: p.value for p in loaded.metadata_props}
        assert meta["pipeline.classes"] == json.dumps(clf.classes_.tolist())
        assert meta["pipeline.image_shape"] == "[8, 8, 1]"
        out = _run(raw, X)  # runs; its values are the other tests' business
        assert out["probabilities"].shape == (len(X), len(clf.classes_))


# ---- int8 ------------------------------------------------------------------------------------

def _dequantized(q: onnx.ModelProto) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(op, W, b), ...]`` of an int8 graph in Conv/Gemm order, in the fp32 graph's layout
    (Conv ``(out, in, kh, kw)``, Gemm ``(in, out)``): the int8 tensor times its per-output-
    channel scale, the bias read through its Cast."""
    init = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    made = {o: n for n in q.graph.node for o in n.output}

    def value(name):
        if name in init:
            return init[name]
        assert made[name].op_type == "Cast"
        return value(made[name].input[0]).astype(np.float32)

    layers = []
    for node in (n for n in q.graph.node if n.op_type in ("Conv", "Gemm")):
        dq = made[node.input[1]]
        assert dq.op_type == "DequantizeLinear" and len(dq.input) == 2  # zero point 0
        assert [a.i for a in dq.attribute if a.name == "axis"] == [0]
        wq, scale = init[dq.input[0]], value(dq.input[1])
        assert wq.dtype == np.int8 and np.abs(wq.astype(int)).max() <= 127
        W = wq.astype(np.float32) * scale.reshape(-1, *[1] * (wq.ndim - 1))
        layers.append((node.op_type, W if node.op_type == "Conv" else W.T,
                       value(node.input[2])))
    return layers


def _with_weights(fp32: onnx.ModelProto, layers) -> onnx.ModelProto:
    """``fp32`` with each Conv/Gemm's weight and bias initializers replaced by ``layers``."""
    out = onnx.ModelProto()
    out.CopyFrom(fp32)
    replace = {}
    for node, (_, W, b) in zip((n for n in out.graph.node if n.op_type in ("Conv", "Gemm")),
                               layers, strict=True):
        replace[node.input[1]], replace[node.input[2]] = W, b
    for t in out.graph.initializer:
        if t.name in replace:
            t.CopyFrom(onnx.numpy_helper.from_array(replace[t.name].astype(np.float32), t.name))
    return out


@pytest.mark.parametrize("name", ["default", "rgb_int"])
def test_int8_conv_and_dense_weights(fitted, name):
    clf, X, _ = fitted[name]
    fp32 = build_onnx(clf)
    q = quantize_int8(fp32)
    ops = [n.op_type for n in q.graph.node]
    layers = _dequantized(q)
    assert [op for op, _, _ in layers] == [n.op_type for n in fp32.graph.node
                                           if n.op_type in ("Conv", "Gemm")]
    assert ops.count("DequantizeLinear") == len(layers)
    # each int8 weight is the fitted weight rounded to the nearest step of its output channel
    fitted_layers = [(p[0], p[1]) for layer, p in _params_by_layer(clf)
                     if isinstance(layer, nn.Conv2D | nn.Dense)]
    for (op, Wd, bd), (W, b) in zip(layers, fitted_layers, strict=True):
        W = W.transpose(3, 2, 0, 1) if op == "Conv" else W  # as the exporter stores it
        assert Wd.shape == W.shape
        step = np.abs(W.reshape(W.shape[0], -1)).max(axis=1) / 127 if op == "Conv" else (
            np.abs(W).max(axis=0) / 127)
        step = step.reshape(-1, *[1] * (W.ndim - 1)) if op == "Conv" else step
        assert np.all(np.abs(Wd - W) <= step * (0.5 + 2.0**-10) + 1e-12)
        np.testing.assert_allclose(bd, b, rtol=2.0**-11, atol=2.0**-24)  # float16 at worst
    int8_weights = sum(onnx.numpy_helper.to_array(t).size for t in q.graph.initializer
                       if t.data_type == onnx.TensorProto.INT8)
    assert int8_weights == sum(W.size for W, _ in fitted_layers)
    # onnxruntime on the int8 graph = onnxruntime on the fp32 graph with those weights
    out = _run(q, X)
    same = _run(_with_weights(fp32, layers), X)
    np.testing.assert_allclose(out["probabilities"], same["probabilities"], rtol=1e-5,
                               atol=1e-6)
    # and close to the fp32 model: within 0.02 per probability on these small networks, so
    # the label is the same wherever fp32's top two are more than 0.04 apart
    fp32_out = _run(fp32, X)
    assert np.abs(out["probabilities"] - fp32_out["probabilities"]).max() < 0.02
    top2 = np.sort(fp32_out["probabilities"], axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.04
    assert clear.sum() >= 50
    np.testing.assert_array_equal(out["label"][clear], fp32_out["label"][clear])
    if name == "default":  # the weights are nearly all of the file
        assert len(fp32.SerializeToString()) / len(q.SerializeToString()) > 3.5


def _params_by_layer(clf):
    spec = clf.spec_
    params = [np.asarray(p, dtype=np.float32) for p in spec.unpack(np.asarray(clf.params_))]
    shape = spec.in_shape
    for layer in spec.layers:
        shapes, next_shape = layer.build(shape)
        yield layer, params[:len(shapes)]
        params, shape = params[len(shapes):], next_shape


def test_int8_guard_refuses_or_warns(fitted, tmp_path):
    clf, X, y = fitted["gray_str"]
    path = tmp_path / "refused.onnx"
    # the validation images may be a dask array, grayscale without a channel axis
    images = da.from_array(X[..., 0], chunks=(100, 8, 8))
    with pytest.raises(QuantizationAccuracyError, match=r"validation accuracy .* fp32 -> .* "
                                                        r"int8.*was not written") as err:
        clf.export_onnx(path, quantize="int8", validation=(images, y), max_accuracy_drop=-1.0)
    assert not path.exists()
    fp32_labels = _run(build_onnx(clf), X)["label"]
    int8_labels = _run(quantize_int8(build_onnx(clf)), X)["label"]
    assert err.value.fp32 == pytest.approx(accuracy_score(y, fp32_labels))
    assert err.value.int8 == pytest.approx(accuracy_score(y, int8_labels))
    with pytest.warns(UserWarning, match="more than max_accuracy_drop=-1.0"):
        report = clf.export_onnx(path, quantize="int8", validation=(X, y),
                                 max_accuracy_drop=-1.0, on_drop="warn")
    assert path.exists() and report.quantize == "int8" and report.metric == "accuracy"
    report = clf.export_onnx(tmp_path / "ok.onnx", quantize="int8", validation=(X, y),
                             max_accuracy_drop=1.0)
    assert report.drop == pytest.approx(err.value.drop)
    assert (tmp_path / "ok.onnx").read_bytes() == path.read_bytes()


# ---- CLI -------------------------------------------------------------------------------------

def _write_folder(root, X, y) -> None:
    from PIL import Image

    for i, (img, label) in enumerate(zip(X, y, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0], mode="L").save(root / str(label) / f"{i:04d}.png")


def test_cli_export_and_predict_onnx_round_trip(fitted, cluster, tmp_path, capsys):
    from pipeline.cli.main import main
    from pipeline.images import read_images

    clf, X, y = fitted["gray_str"]
    pl.save(tmp_path / "model", clf)
    _write_folder(tmp_path / "images", X[:200], y[:200])
    model, images, onx, q = (str(tmp_path / "model"), str(tmp_path / "images"),
                             tmp_path / "m.onnx", tmp_path / "q.onnx")

    assert main(["export", model, str(onx)]) == 0, capsys.readouterr().err
    assert onx.read_bytes() == build_onnx(clf).SerializeToString()
    assert main(["export", model, str(q), "--quantize", "int8", "--validation", images,
                 "--max-accuracy-drop", "-1"]) == 2
    assert "was not written" in capsys.readouterr().err and not q.exists()
    assert main(["export", model, str(q), "--quantize", "int8", "--validation", images,
                 "--max-accuracy-drop", "1"]) == 0
    assert "int8 size" in capsys.readouterr().out

    # the images as the CLI reads them (file order), scored by the estimator
    Xr, yr = (a.compute() for a in read_images(images, shuffle=False))
    proba, labels = clf.predict_proba(Xr), clf.predict(Xr)
    for flag, out in [((), tmp_path / "pred"), (("--proba",), tmp_path / "proba")]:
        argv = ["predict", "--onnx", str(onx), images, str(out), *flag,
                "--scheduler", cluster.scheduler_address]
        assert main(argv) == 0, capsys.readouterr().err
        scored = pd.read_parquet(out)
        assert len(scored) == 200
        np.testing.assert_array_equal(scored["true_label"].to_numpy(), yr)
        if flag:
            assert list(scored.columns) == [*(f"proba_{c}" for c in clf.classes_),
                                            "true_label"]
            np.testing.assert_allclose(scored.iloc[:, :-1].to_numpy(), proba, rtol=1e-5,
                                       atol=1e-5)
        else:
            assert_labels_equal(scored["prediction"].to_numpy(), labels, proba, min_clear=0.95)
    # a .npy of images: predictions only (no class folders), in the array's order
    np.save(tmp_path / "images.npy", X[:60])
    assert main(["predict", "--onnx", str(onx), str(tmp_path / "images.npy"),
                 str(tmp_path / "npy"), "--scheduler", cluster.scheduler_address]) == 0
    scored = pd.read_parquet(tmp_path / "npy")
    assert list(scored.columns) == ["prediction"]
    assert_labels_equal(scored["prediction"].to_numpy(), clf.predict(X[:60]),
                        clf.predict_proba(X[:60]), min_clear=0.95)
    assert main(["predict", model, images, str(tmp_path / "x"),
                 "--scheduler", cluster.scheduler_address]) == 2
    assert "is an image model" in capsys.readouterr().err


def test_onnx_feed_reads_image_graphs(fitted):
    clf, X, _ = fitted["rgb_binary"]
    sess = session(OnnxModel.from_bytes(build_onnx(clf).SerializeToString()))
    feed = onnx_feed(sess, da.from_array(X[:5]))  # anything np.asarray takes
    assert list(feed) == ["image"] and feed["image"].dtype == np.uint8
    np.testing.assert_array_equal(feed["image"], X[:5])
