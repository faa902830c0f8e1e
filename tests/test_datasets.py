"""pipeline.datasets: deterministic chunks, realistic content, and a label with real signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline.datasets import (
    CITIES,
    SEGMENTS,
    feature_names,
    make_chunk,
    make_tabular,
    write_demo_dataset,
)
from pipeline.io import read

pytestmark = pytest.mark.timeout(60)


def test_same_seed_same_chunk_and_seeds_matter():
    a = make_chunk(3, 500, random_state=7)
    pd.testing.assert_frame_equal(a, make_chunk(3, 500, random_state=7))
    assert not a.equals(make_chunk(4, 500, random_state=7))
    assert not a.equals(make_chunk(3, 500, random_state=8))


def test_make_tabular_chunks_are_make_chunk():
    chunks = list(make_tabular(2_500, chunk_rows=1_000, random_state=5))
    assert [len(c) for c in chunks] == [1_000, 1_000, 500]
    for i, chunk in enumerate(chunks):
        pd.testing.assert_frame_equal(chunk, make_chunk(i, len(chunk), random_state=5))
    (whole,) = make_tabular(2_500, random_state=5)
    assert len(whole) == 2_500


def test_columns_and_dtypes():
    df = make_chunk(0, 2_000, n_numeric=10, n_categorical=3)
    assert list(df.columns) == feature_names(10, 3)
    assert list(df.columns[-4:]) == ["city", "segment", "cat2", "y"]
    assert all(df[f"x{i:02d}"].dtype == np.float64 for i in range(10))
    assert df["y"].dtype == np.int64 and set(df["y"].unique()) == {0, 1}
    assert set(df["city"]) <= {c[0] for c in CITIES}
    assert set(df["segment"]) <= {s[0] for s in SEGMENTS}


def test_realistic_content():
    df = make_chunk(0, 50_000)
    numeric = df.filter(regex=r"^x\d+$")
    # ~2% missing, scattered over every numeric column, none in the categoricals or the label
    assert 0.015 < numeric.isna().to_numpy().mean() < 0.025
    assert numeric.isna().any().all()
    assert not df[["city", "segment", "y"]].isna().any().any()
    # scales differ by orders of magnitude; one column is nearly constant; one is heavy-tailed
    stds = numeric.std()
    assert stds.max() / stds.min() > 1e6
    assert stds["x06"] < 1e-3
    income = numeric["x02"].dropna()
    assert income.max() > 10 * income.median()
    # categories have unequal base rates
    rates = df["city"].value_counts(normalize=True)
    assert rates.iloc[0] > 4 * rates.iloc[-1]
    assert 0.3 < df["y"].mean() < 0.7


def test_written_partitions_are_deterministic_per_partition(tmp_path):
    files = write_demo_dataset(tmp_path / "d", n_rows=4_001, n_partitions=4, random_state=3)
    assert [f.rsplit("/", 1)[-1] for f in files] == [f"part-{i:05d}.parquet" for i in range(4)]
    parts = [pd.read_parquet(f) for f in files]
    assert [len(p) for p in parts] == [1_001, 1_000, 1_000, 1_000]
    for i, part in enumerate(parts):
        expected = make_chunk(i, len(part), random_state=3)
        pd.testing.assert_frame_equal(part, expected.astype({"city": "str", "segment": "str"}))
    again = write_demo_dataset(tmp_path / "e", n_rows=4_001, n_partitions=4, random_state=3)
    for f, g in zip(files, again, strict=True):
        assert pd.read_parquet(f).equals(pd.read_parquet(g))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_demo_dataset_reads_back_through_pipeline_io(tmp_path, fmt):
    write_demo_dataset(tmp_path / "d", n_rows=3_000, n_partitions=3, random_state=1, format=fmt)
    df = read(tmp_path / "d").compute(scheduler="sync").reset_index(drop=True)
    expected = pd.concat(
        [make_chunk(i, 1_000, random_state=1) for i in range(3)], ignore_index=True
    )
    assert len(df) == 3_000
    text = {c: df.dtypes[c] for c in ("city", "segment")}
    pd.testing.assert_frame_equal(df, expected.astype(text), check_exact=False, rtol=1e-12)


def test_label_has_signal_and_some_of_it_is_nonlinear():
    """sklearn as the oracle: logistic regression beats the majority class clearly, and a
    model that can bend (gradient boosting) beats logistic regression."""
    (df,) = make_tabular(20_000, random_state=11)
    X, y = df.drop(columns="y"), df["y"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    numeric = [c for c in X if c.startswith("x")]
    linear = make_pipeline(
        make_column_transformer(
            (make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            (OneHotEncoder(), ["city", "segment"]),
        ),
        LogisticRegression(max_iter=1_000),
    ).fit(X_train, y_train)
    majority = max(y_test.mean(), 1 - y_test.mean())
    lr_accuracy = linear.score(X_test, y_test)
    assert lr_accuracy > majority + 0.15

    as_categories = {"city": "category", "segment": "category"}
    boosted = HistGradientBoostingClassifier(
        categorical_features="from_dtype", max_iter=100, random_state=0
    ).fit(X_train.astype(as_categories), y_train)
    assert boosted.score(X_test.astype(as_categories), y_test) > lr_accuracy + 0.02


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="format"):
        write_demo_dataset(tmp_path, n_rows=10, format="json")
    with pytest.raises(ValueError, match="n_numeric"):
        make_chunk(0, 10, n_numeric=0)
