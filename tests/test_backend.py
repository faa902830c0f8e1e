"""The device boundary (pipeline/backend.py): moves between namespaces and devices, and reading
pandas/cuDF objects. ``array_api_strict`` on ``Device("device1")`` stands in for CuPy: like CuPy
memory, ``np.asarray`` refuses to read it."""

import numpy as np
import pandas as pd
import pytest
from fake_cudf import DataFrame as FakeFrame
from fake_cudf import Series as FakeSeries

from pipeline.backend import (
    device,
    frame_to_array,
    namespace,
    on_one_device,
    to_device_of,
    to_host,
    uint64_bits,
    values_of,
)

xs = pytest.importorskip("array_api_strict")
DEV1 = xs.Device("device1")


def test_the_stand_in_refuses_np_asarray_as_cupy_does():
    with pytest.raises(RuntimeError):
        np.asarray(xs.asarray([1.0], device=DEV1))


@pytest.mark.parametrize("dtype", [None, "float32"])
def test_to_device_of_crosses_namespaces(backend, dtype):
    # dtype is given in the target's namespace, as callers pass X.dtype
    rng = np.random.default_rng(0)
    host = rng.standard_normal(5)
    on_backend = backend.asarray(host)
    expected = host if dtype is None else host.astype(dtype)

    def in_ns(like):
        return None if dtype is None else getattr(namespace(like), dtype)

    # device -> host (the CuPy-parameters-meet-NumPy-data case), host -> device, and same -> same
    like_np = np.zeros(1)
    to_numpy = to_device_of(on_backend, like_np, dtype=in_ns(like_np))
    assert isinstance(to_numpy, np.ndarray)
    np.testing.assert_array_equal(to_numpy, expected)
    back = to_device_of(host, on_backend, dtype=in_ns(on_backend))
    assert namespace(back) is namespace(on_backend) and device(back) == device(on_backend)
    np.testing.assert_array_equal(to_host(back), expected)


def test_to_device_of_moves_between_devices_of_one_namespace():
    a = xs.asarray([1.0, 2.0], device=xs.Device("CPU_DEVICE"))
    b = to_device_of(a, xs.asarray([0.0], device=DEV1))
    assert b.device == DEV1
    np.testing.assert_array_equal(to_host(b), [1.0, 2.0])


def test_on_one_device_keeps_arrays_that_already_share_one(backend):
    a, b = backend.asarray(np.arange(3.0)), backend.asarray(np.ones(3))
    out = on_one_device(a, None, b)
    assert out[0] is a and out[1] is None and out[2] is b


def test_on_one_device_brings_host_numbers_to_the_device():
    scores = xs.asarray([0.1, 0.9], device=DEV1)
    weights = np.array([1.0, 2.0])
    s, w, none = on_one_device(scores, weights, None)
    assert s is scores and none is None
    assert w.device == DEV1
    np.testing.assert_array_equal(to_host(w), weights)


def test_on_one_device_meets_on_the_host_when_strings_are_involved():
    labels = np.array(["a", "b"], dtype=object)
    scores = xs.asarray([0.1, 0.9], device=DEV1)
    t, s = on_one_device(labels, scores)
    assert t is labels
    assert isinstance(s, np.ndarray)
    np.testing.assert_array_equal(s, [0.1, 0.9])


def test_on_one_device_meets_on_the_host_when_devices_disagree():
    a = xs.asarray([1.0], device=DEV1)
    b = xs.asarray([2.0], device=xs.Device("CPU_DEVICE"))
    out = on_one_device(a, b)
    assert all(isinstance(o, np.ndarray) for o in out)


def test_values_of_keeps_numeric_cudf_columns_on_the_device():
    s = FakeSeries(np.array([3, 1, 2]), DEV1)
    v = values_of(s)
    assert v.device == DEV1
    np.testing.assert_array_equal(to_host(v), [3, 1, 2])


@pytest.mark.parametrize("data, expected", [
    (pd.Series(["b", None, "a"], dtype=object), np.array(["b", None, "a"], dtype=object)),
    (pd.Series(["b", "a", "b"], dtype="category"), np.array(["b", "a", "b"], dtype=object)),
    (pd.Series([1, None, 3], dtype="Int64"), np.array([1.0, np.nan, 3.0])),
    (pd.Series([1.5, np.nan]), np.array([1.5, np.nan])),
])
def test_values_of_brings_what_cupy_cannot_hold_to_the_host(data, expected):
    # strings (to_cupy/.values raise), categories (to_cupy raises), nulls
    v = values_of(FakeSeries(data, DEV1))
    assert isinstance(v, np.ndarray)
    assert pd.isna(v).tolist() == pd.isna(expected).tolist()
    np.testing.assert_array_equal(v[~pd.isna(v)], expected[~pd.isna(expected)])


def test_values_of_pandas_and_arrays():
    s = pd.Series(["x", "y"])
    np.testing.assert_array_equal(values_of(s), np.asarray(s))
    a = xs.asarray([1, 2], device=DEV1)
    assert values_of(a) is a


def test_frame_to_array_on_cudf_casts_each_column_on_the_device():
    pdf = pd.DataFrame({"i": np.array([1, 2**40 + 1, -3], dtype=np.int64),
                        "f": np.array([0.5, -1.25, 3.0])})
    got = frame_to_array(FakeFrame(dict(pdf.items()), DEV1), np.float32)
    assert got.device == DEV1
    np.testing.assert_array_equal(to_host(got), frame_to_array(pdf, np.float32))


def test_frame_to_array_fills_missing_values_on_both_backends():
    pdf = pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": pd.Series([1, None, 2], dtype="Int64")})
    expected = np.array([[1.0, 1.0], [np.nan, np.nan], [3.0, 2.0]])
    np.testing.assert_array_equal(frame_to_array(pdf, np.float64, na_value=np.nan), expected)
    fake = FakeFrame(dict(pdf.items()), DEV1)
    np.testing.assert_array_equal(to_host(frame_to_array(fake, np.float64, na_value=np.nan)),
                                  expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.int32, np.uint16])
def test_uint64_bits_are_numpys_view(backend, dtype):
    host = np.array([0, 1, -1, 7, 100], dtype=np.float64).astype(dtype) if dtype != np.uint16 \
        else np.array([0, 1, 65535], dtype=dtype)
    got = uint64_bits(backend.asarray(host))
    assert device(got) == device(backend.asarray(host))
    np.testing.assert_array_equal(to_host(got),
                                  host.view(f"u{host.dtype.itemsize}").astype(np.uint64))
