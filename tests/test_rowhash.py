"""The row hash behind train_test_split is pandas' on both backends, so CPU and GPU runs split
the same rows. Oracle: ``pd.util.hash_pandas_object``/``hash_array``. tests/fake_cudf.py stands
in for cuDF (device arrays as array_api_strict on "device1")."""

import numpy as np
import pandas as pd
import pytest
from fake_cudf import DataFrame, Series

from pipeline.backend import device, to_host
from pipeline.preprocessing import row_uniform
from pipeline.rowhash import combine_hashes, hash_numbers, row_hash

xs = pytest.importorskip("array_api_strict")
DEV1 = xs.Device("device1")


@pytest.mark.parametrize("values", [
    np.array([1.5, np.nan, -0.0, 0.0, -np.nan, np.inf, -3.25]),
    np.array([1.5, np.nan, -0.0, 0.0, -np.inf], dtype=np.float32),
    np.array([-(2**62), -1, 0, 7, 2**62], dtype=np.int64),
    np.array([-128, -1, 0, 127], dtype=np.int8),
    np.array([0, 1, 65535], dtype=np.uint16),
    np.array([True, False, True]),
])
def test_numbers_hash_as_pandas_hashes_them(backend, values):
    x = backend.asarray(values)
    got = hash_numbers(x)
    assert device(got) == device(x)
    np.testing.assert_array_equal(to_host(got), pd.util.hash_array(values))


def test_columns_combine_as_pandas_combines_them(backend):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.standard_normal(9), "b": rng.integers(-5, 5, 9),
                       "c": rng.random(9) > 0.5})
    hashes = [hash_numbers(backend.asarray(df[c].to_numpy())) for c in df.columns]
    np.testing.assert_array_equal(to_host(combine_hashes(hashes, len(df))),
                                  pd.util.hash_pandas_object(df, index=False).to_numpy())
    np.testing.assert_array_equal(combine_hashes([], len(df)),
                                  pd.util.hash_pandas_object(df[[]], index=False).to_numpy())


def _mixed_frame():
    return {
        "f": np.array([0.5, -0.0, 2.0, 0.5, 1e300]),
        "f32": np.array([0.5, 1.0, -2.0, 0.5, 3.0], dtype=np.float32),
        "i": np.array([1, -2, 3, 1, 2**40]),
        "b": np.array([True, False, True, True, False]),
        "s": pd.Series(["x", None, "y", "x", "z"], dtype=object),
        "cat": pd.Series(["u", "v", "u", "u", "w"], dtype="category"),
        "nullable": pd.Series([1, None, 3, 1, 5], dtype="Int64"),
        "with_nan": np.array([1.0, np.nan, 3.0, 1.0, 5.0]),
    }


def test_a_cudf_frame_hashes_as_its_to_pandas():
    """Numeric columns on the device, the others (strings, categories, nulls) through pandas
    on the host: together equal to pandas' hash of the same frame."""
    frame = DataFrame(_mixed_frame(), DEV1)
    got = row_hash(frame)
    assert got.device == DEV1
    want = pd.util.hash_pandas_object(frame.to_pandas(), index=False).to_numpy()
    np.testing.assert_array_equal(to_host(got), want)
    assert to_host(got)[0] == to_host(got)[3]  # equal rows, equal hashes


def test_a_cudf_frame_with_host_columns_only_and_a_series():
    cols = _mixed_frame()
    frame = DataFrame({k: cols[k] for k in ("s", "cat", "nullable")}, DEV1)
    np.testing.assert_array_equal(
        row_hash(frame), pd.util.hash_pandas_object(frame.to_pandas(), index=False).to_numpy())
    s = Series(cols["i"], DEV1)
    np.testing.assert_array_equal(
        to_host(row_hash(s)), pd.util.hash_pandas_object(pd.Series(cols["i"]), index=False))


def test_cpu_and_gpu_partitions_split_the_same_rows():
    """train_test_split keeps a row where row_uniform < test_size: equal uniforms, equal
    splits. (The split used xxhash64 on cuDF, so CPU and GPU runs held out different rows.)"""
    frame = DataFrame(_mixed_frame(), DEV1)
    for seed in (0, 7, 2**40):
        np.testing.assert_array_equal(to_host(row_uniform(frame, seed)),
                                      row_uniform(frame.to_pandas(), seed))
