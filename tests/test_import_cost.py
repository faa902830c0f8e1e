"""What importing costs a worker: the modules a fresh process loads for ``import pipeline`` and
for the modules whose functions run in worker tasks.

A worker's memory limit is shared with everything its process imported (README, larger than
memory): scikit-learn is about 50 MiB of RSS, dask.dataframe 35 MiB (90 with sparse/numba
installed). These checks run each import in a fresh interpreter and read ``sys.modules``, so a
module-level import that brings a heavy dependency back onto the workers fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("sklearn", "scipy", "bokeh", "pyarrow", "onnx", "onnxruntime", "pandas",
         "dask.dataframe", "dask.array", "torch", "numba", "lightgbm", "PIL")


def _loaded_after(code: str) -> list[str]:
    """The HEAVY modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_pipeline_loads_no_heavy_module():
    assert _loaded_after("import pipeline") == []


def test_public_names_still_resolve_lazily():
    code = ("import pipeline\n"
            "from pipeline import MLPClassifier, Preprocessor, read\n"
            "assert all(getattr(pipeline, n) is not None for n in pipeline.__all__)\n"
            "assert pipeline.MLPClassifier is MLPClassifier and pipeline.read is read\n"
            "assert Preprocessor.__module__ == 'pipeline.preprocessing'")
    assert "sklearn" in _loaded_after(code)  # the estimators do need it, once asked for


@pytest.mark.parametrize("module, banned", [
    # the worker side of Preprocessor, TabularPreprocessor and train_test_split
    ("pipeline.column_stats", ("sklearn",)),
    ("pipeline.preprocess_plan", ("sklearn", "scipy", "dask.dataframe", "dask.array")),
    ("pipeline.splitting", ("sklearn", "dask.dataframe", "dask.array")),
    ("pipeline.tabular_partition", ("sklearn", "scipy", "dask.dataframe", "dask.array")),
    ("pipeline.tabular_blocks", ("sklearn", "scipy", "dask.dataframe", "dask.array")),
    # the tabular network: the training task unpickles its layers (scikit-learn, scipy and
    # dask.dataframe were ~1.4 s of a fresh worker's first fit)
    ("pipeline.tabular_net", ("sklearn", "scipy", "dask.dataframe", "dask.array", "pandas")),
    ("pipeline.image_prep", ("sklearn",)),
    # the read loaders (dask.dataframe is imported only where read() builds the frame)
    ("pipeline.io", ("sklearn", "scipy", "dask.dataframe", "dask.array")),
    # training tasks and block stores; pandas (with pyarrow, ~0.4 s of a worker's CPU on its
    # first fit) only where a task reads or converts frames
    ("pipeline.train", ("sklearn", "scipy", "dask.dataframe", "bokeh", "torch", "onnx",
                        "pandas", "pyarrow")),
    ("pipeline.blocks", ("sklearn", "scipy", "dask.dataframe", "pandas", "pyarrow")),
    ("pipeline.stores", ("sklearn", "scipy", "dask.dataframe", "bokeh", "torch", "onnx")),
    # the partition functions of analytics.profile and analytics.metrics: a worker unpickling
    # them runs analytics/__init__ too (its metrics, profile and report modules import
    # scikit-learn, dask.dataframe, dask.array and bokeh only where they are used, on the client)
    ("analytics.profile_partials", ("sklearn", "scipy", "dask.dataframe", "dask.array", "bokeh",
                                    "numba")),
    ("analytics.metric_partials", ("sklearn", "scipy", "dask.dataframe", "dask.array", "bokeh",
                                   "numba")),
])
def test_worker_modules_do_not_import(module, banned):
    loaded = _loaded_after(f"import {module}")
    assert not set(banned) & set(loaded), f"{module} imports {sorted(set(banned) & set(loaded))}"


@pytest.mark.slow
def test_preprocessing_tasks_do_not_bring_scikit_learn_to_the_workers(tmp_path):
    """Fit, transform and split on a process worker: the tasks unpickle without scikit-learn."""
    import numpy as np
    import pandas as pd
    from distributed import Client, LocalCluster

    import pipeline as pl

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.standard_normal(400), "b": rng.integers(0, 3, 400),
                          "y": rng.integers(0, 2, 400)})
    frame.loc[::7, "a"] = np.nan
    frame.to_parquet(tmp_path / "part-0.parquet")
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        df = pl.read(str(tmp_path))
        train, _ = pl.train_test_split(df, test_size=0.25, random_state=0)
        prep = pl.Preprocessor(label="y", categorical=["b"], impute="median").fit(train)
        X, y = prep.transform_xy(train)
        X.compute(), y.compute()
        loaded = client.run(lambda: [m for m in ("sklearn", "pipeline.preprocessing")
                                     if m in sys.modules])
    assert list(loaded.values()) == [[]]


WORKER_HEAVY = ("dask.dataframe", "dask.array", "sparse", "numba", "sklearn", "scipy")


@pytest.mark.slow
def test_read_preprocess_and_a_disk_fit_bring_no_dask_dataframe_to_the_workers(tmp_path):
    """On numeric Parquet data, ``pl.read`` + ``train_test_split`` + ``Preprocessor.fit`` +
    ``transform_xy`` + a ``block_store="disk"`` fit run tasks that unpickle without
    dask.dataframe (whose import brings dask.array, sparse and numba: ~96 MiB of a worker's
    RSS): no string-conversion step in the read tasks, no ``apply_and_enforce`` wrapper
    around the transform and split tasks. The oracle is the worker's ``sys.modules``."""
    import warnings

    import numpy as np
    import pandas as pd
    from distributed import Client, LocalCluster

    import pipeline as pl

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.standard_normal((3000, 4)), columns=list("abcd"))
    frame["y"] = (frame["a"] + rng.standard_normal(3000) > 0).astype(np.int64)
    frame.loc[::11, "b"] = np.nan
    frame.to_parquet(tmp_path / "part-0.parquet", row_group_size=500)
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        df = pl.read(str(tmp_path), blocksize="8KiB")
        assert df.npartitions > 1
        train, _ = pl.train_test_split(df, test_size=0.25, random_state=0)
        prep = pl.Preprocessor(label="y").fit(train)
        X, y = prep.transform_xy(train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = pl.MLPClassifier((4,), max_iter=1, block_store="disk", random_state=0)
            model.fit(X, y, client=client)
        loaded = client.run(lambda: [m for m in WORKER_HEAVY if m in sys.modules])
    assert list(loaded.values()) == [[]]
    assert model.n_iter_ == 1


def test_read_still_converts_string_columns_as_dask_does(tmp_path):
    """Leaving out dask's string conversion for numeric data changes no frame: a string column
    still becomes ``string[pyarrow]`` (dask's ``to_pyarrow_string``, the oracle), in the meta
    and in the computed partitions, and numeric data reads as pandas reads it."""
    import dask
    import numpy as np
    import pandas as pd
    from dask.dataframe._pyarrow import to_pyarrow_string

    import pipeline as pl

    frame = pd.DataFrame({"x": np.arange(6.0), "s": list("abcabc")})
    frame.to_parquet(tmp_path / "p.parquet")
    df = pl.read(str(tmp_path))
    want = to_pyarrow_string(pd.read_parquet(tmp_path / "p.parquet"))
    with dask.config.set(scheduler="sync"):
        got = df.compute()
    assert dict(df.dtypes) == dict(want.dtypes) and dict(got.dtypes) == dict(want.dtypes)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want)
    numeric = pl.read(str(tmp_path), columns=["x"])
    with dask.config.set(scheduler="sync"):
        pd.testing.assert_frame_equal(numeric.compute().reset_index(drop=True),
                                      pd.read_parquet(tmp_path / "p.parquet", columns=["x"]))
