"""Reading, preprocessing and training stay streaming at a worker memory limit well below the
data: 2 workers at 400 MiB (about 270 MiB of it is the imported package: README, larger than
memory), Parquet data several times the combined limit. ``pl.read`` + ``Preprocessor.fit`` + a ``block_store="disk"`` fit
finish with no worker restarted, and the preprocessor's means equal pyarrow's, file by file."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

N_FILES, ROWS, COLS = 12, 500_000, 30  # 12 x 500k x 31 float64 = 1.49 GB = 1.8 x 2 x 400 MiB


@pytest.mark.skipif(not os.environ.get("PIPELINE_MEMORY_LIMIT_TEST"), reason=(
    "opt-in (PIPELINE_MEMORY_LIMIT_TEST=1): minutes of data writing and fitting, and the disk "
    "fit part is still unmet at 400 MiB (see the xfail reason)"))
@pytest.mark.xfail(strict=True, reason=(
    "partly met (issue 12, item 5), measured 2026-11-28 on a loaded 2-core VM: pl.read + "
    "Preprocessor.fit now run at 2 x 400 MiB (peak RSS 304-310 MiB, steady 267-277, under the "
    "320 MiB pause threshold; was 353-360 and paused: workers no longer import scikit-learn and "
    "the read tasks release Arrow's pool). The block_store='disk' build + fit still leaves "
    "both workers paused at ~331 MiB (imports incl. sparse/numba ~296 MiB + 35 MiB of chunk "
    "buffers). 2026-11-28, after the disk prefetch fix (prefetches now land; evicted readers "
    "free their buffers at once): one brief pause at 325 MiB (resumed at 292 MiB 0.2 s later), "
    "and the run hit the 600 s timeout on a machine at load ~22 on 2 cores. Remove this "
    "marker when the whole test passes."))
@pytest.mark.timeout(600)
def test_read_preprocess_and_disk_fit_under_a_small_memory_limit(tmp_path):
    from distributed import Client, LocalCluster

    import pipeline as pl

    rng = np.random.default_rng(0)
    w = rng.standard_normal(COLS)
    sums, count = np.zeros(COLS), 0
    for i in range(N_FILES):
        X = rng.standard_normal((ROWS, COLS)) + np.arange(COLS)
        y = ((X - np.arange(COLS)) @ w > 0).astype(np.int64)
        table = pa.table({**{f"f{j}": X[:, j] for j in range(COLS)}, "y": y})
        pq.write_table(table, tmp_path / f"part-{i}.parquet", row_group_size=25_000)
        sums += X.sum(axis=0)
        count += ROWS
        del X, y, table
    data_bytes = N_FILES * ROWS * (COLS + 1) * 8
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="400MiB",
                      dashboard_address=":0", host="127.0.0.1") as cluster, \
            Client(cluster) as client:
        limit = sum(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
        assert data_bytes > 1.7 * limit
        pids = client.run(os.getpid)
        df = pl.read(str(tmp_path), blocksize="8MiB")
        prep = pl.Preprocessor(label="y").fit(df)
        np.testing.assert_allclose(prep.mean_, sums / count, rtol=1e-9)
        X_train, y_train = prep.transform_xy(df)
        model = pl.MLPClassifier((8,), max_iter=1, batch_size=2048, sync="average",
                                 block_store="disk", random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X_train, y_train, client=client)
        assert client.run(os.getpid) == pids  # no worker was killed and restarted
        assert model.n_iter_ == 1 and np.isfinite(model.loss_)
