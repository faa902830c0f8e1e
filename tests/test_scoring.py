"""Batch scoring keeps row identity: chosen input columns are carried next to the predictions."""

from __future__ import annotations

import warnings

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

import pipeline as pl
from pipeline.cli.main import build_parser, write_predictions


@pytest.fixture(scope="module")
def scored(client, tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 900
    df = pd.DataFrame({
        "id": rng.permutation(10 * n)[:n],  # unique, unordered: identity is not the position
        "x1": rng.normal(size=n), "x2": rng.normal(size=n),
        "city": rng.choice(["a", "b", "c"], size=n),
    })
    df["y"] = (df["x1"] + (df["city"] == "a") > 0.3).astype(int)
    ddf = dd.from_pandas(df, npartitions=3, sort=False)
    prep = pl.Preprocessor(label="y", categorical=["city"], numeric=["x1", "x2"]).fit(ddf)
    model = pl.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(*prep.transform_xy(ddf), client=client)
    path = tmp_path_factory.mktemp("model") / "m"
    model.save(str(path), preprocessor=prep)
    return pl.load(str(path)), df, ddf


def test_saved_model_predict_keeps_an_id_column(scored):
    saved, df, ddf = scored
    out = saved.predict(ddf, keep=["id"])
    assert isinstance(out, dd.DataFrame) and out.npartitions == ddf.npartitions  # lazy
    got = out.compute()
    assert list(got.columns) == ["id", "prediction"]
    np.testing.assert_array_equal(got["id"].to_numpy(), df["id"].to_numpy())
    np.testing.assert_array_equal(got["prediction"].to_numpy(), saved.predict(ddf).compute())
    # pandas in, pandas out, same rows
    local = saved.predict(df, keep="id")
    pd.testing.assert_frame_equal(local.reset_index(drop=True), got.reset_index(drop=True))


def test_predict_proba_keeps_columns(scored):
    saved, df, ddf = scored
    got = saved.predict_proba(ddf, keep=["id", "city"]).compute()
    names = [f"proba_{c}" for c in saved.model.classes_]
    assert list(got.columns) == ["id", "city", *names]
    np.testing.assert_array_equal(got[["id", "city"]].to_numpy(), df[["id", "city"]].to_numpy())
    np.testing.assert_allclose(got[names].to_numpy(), saved.predict_proba(ddf).compute())


def test_cli_predict_writes_kept_columns(scored, tmp_path):
    saved, df, ddf = scored
    args = build_parser().parse_args(["predict", "m", "d", "o", "--keep", "id,city"])
    assert args.keep == "id,city"
    write_predictions(saved, ddf, str(tmp_path / "pred"), keep=["id", "city"])
    got = pd.read_parquet(tmp_path / "pred")
    assert list(got.columns) == ["id", "city", "prediction"]
    np.testing.assert_array_equal(got["id"].to_numpy(), df["id"].to_numpy())
    np.testing.assert_array_equal(got["prediction"].to_numpy(), saved.predict(ddf).compute())


def test_keeping_a_missing_column_names_it(scored):
    saved, _, ddf = scored
    with pytest.raises(ValueError, match=r"\['order_id'\] to keep are not in the data"):
        saved.predict(ddf, keep=["order_id"])


def test_loaded_names_are_plain_strings_in_messages(scored):
    saved, _, ddf = scored
    assert all(type(c) is str for c in saved.preprocessor.feature_names_in_)
    with pytest.raises(ValueError) as err:
        saved.predict(ddf.drop(columns=["x1"])).compute()
    assert "['x1'] not found in the data" in str(err.value)
    assert "np.str_" not in str(err.value)
