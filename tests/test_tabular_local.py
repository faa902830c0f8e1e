"""A pandas frame's preprocessing and blocks, built in the client (:mod:`pipeline.tabular_local`).

Oracle: the same data as a dask DataFrame of the same partitions, whose preprocessing and
blocks are built in tasks on the workers. The two must give the same fitted parameters bit for
bit (same functions, same order), with weights, class weights, several partitions joined for
the members, early stopping on and off. A test of equivalence between our two paths, so the
distribution layer only; the encodings and the network have their own oracles
(``tests/test_tabular_prep.py``, ``tests/test_tabular.py``).
"""

from __future__ import annotations

import warnings

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import get_task_stream

import pipeline as pl
from pipeline.tabular_base import _pandas_partitions
from pipeline.tabular_local import partitions


def _frame(n, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": rng.normal(size=n), "few": rng.integers(0, 5, n).astype(float),
                      "gap": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
                      "city": rng.choice(["oslo", "rome", "lima", "kiev", None], n)})
    signal = X["x"] - 0.5 * X["few"] + (X["city"] == "rome") + rng.normal(scale=0.5, size=n)
    return X, signal, rng


def _as_dask(X, y, w):
    """The frame as dask would partition it: what the fit made of a pandas frame before."""
    full = X.assign(__y=np.asarray(y), __w=np.ones(len(X)) if w is None else np.asarray(w))
    d = dd.from_pandas(full, npartitions=_pandas_partitions(len(X)), sort=False)
    return d.drop(columns=["__y", "__w"]), d["__y"], (None if w is None else d["__w"])


def _fit(est, X, y, w, client):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X, y, sample_weight=w, client=client)


CASES = {
    # (estimator, rows, weighted): one partition and two (joined for the members), with and
    # without early stopping (under 2,000 rows nothing is held out)
    "regressor_weighted": (lambda: pl.TabularRegressor(max_iter=3, random_state=1), 3000, True),
    "classifier_balanced": (lambda: pl.TabularClassifier(max_iter=3, random_state=2,
                                                         class_weight="balanced"), 3000, False),
    "multiclass_small": (lambda: pl.TabularClassifier(max_iter=3, random_state=3), 600, False),
    "two_partitions": (lambda: pl.TabularRegressor(max_iter=2, random_state=4,
                                                   hidden_layer_sizes=(16,)), 17000, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_pandas_frame_fits_as_its_dask_partitions_do(client, case):
    make, n, weighted = CASES[case]
    X, signal, rng = _frame(n)
    y = signal if case.startswith(("regressor", "two")) else (
        np.where(signal > 0.8, "yes", "no") if case == "classifier_balanced"
        else np.digitize(signal, [-0.5, 0.5]))
    w = (rng.integers(1, 4, n)).astype(float) if weighted else None
    with get_task_stream(client) as stream:
        here = _fit(make(), X, y, w, client)
    keys = [str(t["key"]) for t in stream.data]
    # nothing of the preprocessing or the blocks ran in a task
    assert not [k for k in keys if "stats" in k or "block" in k or "frompandas" in k], keys
    there = _fit(make(), *_as_dask(X, y, w), client)
    np.testing.assert_array_equal(here.params_, there.params_)
    assert here.loss_curve_ == there.loss_curve_
    assert here.train_summary_["n_blocks"] == there.train_summary_["n_blocks"] == 1
    assert here.train_summary_["n_partitions"] == there.train_summary_["n_partitions"]
    assert here.ensemble_ == there.ensemble_ == "independent"
    assert here.early_stopping_ == there.early_stopping_ == (n >= 2000)
    np.testing.assert_array_equal(here.predict(X), there.predict(X))


@pytest.mark.parametrize("n_parts, shuffled", [(4, False), (1, False), (1, True)])
def test_partitions_are_dasks(client, n_parts, shuffled):
    """Several partitions (dask's own, computed here) and one (the frame with dask's string
    conversion, no graph): dask's rows, dtypes and index, with or without a sorted index."""
    X, _, _ = _frame(16_387)
    X = X.assign(city=X["city"].astype(object), code=X["city"].astype("category"))
    if shuffled:
        X = X.sample(frac=1.0, random_state=0)
    parts = partitions(X, n_parts)
    ref = dd.from_pandas(X, npartitions=n_parts, sort=False)
    assert [len(p) for p in parts] == ref.map_partitions(len).compute().tolist()
    for p, r in zip(parts, ref.to_delayed(), strict=True):
        pd.testing.assert_frame_equal(p, r.compute())  # (strings converted as dask does)


def test_a_shared_ensemble_over_several_blocks_builds_them_on_the_workers(client):
    """Blocks that train where they lie (local SGD over the workers) are built in tasks, as
    before; the frame still fits."""
    X, signal, _ = _frame(17000)
    with get_task_stream(client) as stream:
        m = _fit(pl.TabularRegressor(max_iter=1, random_state=0, ensemble="shared",
                                     hidden_layer_sizes=(8,)), X, signal, None, client)
    assert m.ensemble_ == "shared" and m.train_summary_["n_blocks"] == 2
    assert any("stats" in str(t["key"]) for t in stream.data)


def test_bad_labels_are_named_as_before(client):
    X, signal, _ = _frame(300)
    y = np.where(signal > 0, "a", None).astype(object)
    with pytest.raises(ValueError, match="the label has missing values"):
        _fit(pl.TabularClassifier(max_iter=1), X, y, None, client)
    with pytest.raises(ValueError, match="a single class"):
        _fit(pl.TabularClassifier(max_iter=1), X, np.full(300, "a"), None, client)
    with pytest.raises(ValueError, match="regression target has 1 missing"):
        _fit(pl.TabularRegressor(max_iter=1), X, np.r_[np.nan, signal[1:]], None, client)


def test_one_partition_follows_dasks_string_setting(client):
    """With dask's string conversion off, one partition keeps the object strings, as dask's
    partition does."""
    import dask

    X, _, _ = _frame(500)
    X = X.assign(city=X["city"].astype(object))
    with dask.config.set({"dataframe.convert-string": False}):
        (part,) = partitions(X, 1)
        ref = dd.from_pandas(X, npartitions=1, sort=False).compute()
    assert part["city"].dtype == object
    pd.testing.assert_frame_equal(part, ref)
