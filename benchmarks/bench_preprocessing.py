"""Preprocessing fit and fit+transform rows/s on a 5M × 20 float64 Parquet dataset.

Against: the I/O floor (reading the same Parquet alone with dask), pandas in one process
(``pd.read_parquet`` + mean/std + transform) and ``dask_ml.preprocessing.StandardScaler``
(skipped when dask-ml is not installed). All dask variants read the files with
``dd.read_parquet`` on a 2-worker LocalCluster (1 thread each); transforms are materialised with
``persist()`` + ``wait`` (the step before training) and released afterwards.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import numpy as np
from common import (
    DATA_DIR,
    chunk_sizes,
    fmt,
    local_cluster,
    log,
    main,
    median,
    section,
    spread,
    table,
    target,
)

COMMAND = "python benchmarks/run_all.py --only preprocessing"
N_COLS = 20
N_FILES = 16


def dataset(n_rows: int) -> str:
    """``n_rows`` × 20 float64 columns ``x00``.. plus an int64 label ``y`` in 16 Parquet files
    under ``DATA_DIR`` (written once, reused while the marker file says it is complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.path.join(DATA_DIR, f"prep-{n_rows}")
    marker = os.path.join(path, "_COMPLETE")
    if os.path.exists(marker):
        return path
    os.makedirs(path, exist_ok=True)
    log(f"writing {n_rows:,} × {N_COLS} float64 rows to {path}")
    for i, n in enumerate(chunk_sizes(n_rows, N_FILES)):
        rng = np.random.default_rng([7, i])
        scales = 10.0 ** np.arange(-2, 3, dtype=float).repeat(4)
        cols = {f"x{j:02d}": 100.0 * j + scales[j] * rng.standard_normal(n) for j in range(N_COLS)}
        cols["y"] = rng.integers(0, 2, n)
        pq.write_table(pa.table(cols), os.path.join(path, f"part-{i:05d}.parquet"))
    with open(marker, "w") as f:
        f.write(f"{n_rows}\n")
    return path


def _timed(fn: Any) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(quick: bool) -> dict[str, Any]:
    import dask.dataframe as dd
    import pandas as pd
    from distributed import wait

    from pipeline.io import read
    from pipeline.preprocessing import Preprocessor

    n_rows = 1_000_000 if quick else 5_000_000
    reps = 3
    path = dataset(n_rows)
    features = [f"x{j:02d}" for j in range(N_COLS)]
    try:
        from dask_ml.preprocessing import StandardScaler
    except Exception as exc:  # optional: pip install dask-ml
        StandardScaler = None
        dask_ml_error = repr(exc)

    results: dict[str, list[float]] = {}

    def measure(name: str, fn: Any) -> None:
        fn()  # warm-up (imports, file metadata cache)
        results[name] = [_timed(fn) for _ in range(reps)]
        log(f"  {name}: {fmt(median(results[name]))} s")

    with local_cluster(2) as client:
        def floor_len() -> None:
            dd.read_parquet(path).map_partitions(len).compute()

        def floor_persist() -> None:
            df = dd.read_parquet(path).persist()
            wait(df)
            del df

        def floor_pipeline_read() -> None:
            df = read(path).persist()
            wait(df)
            del df

        def ours_fit() -> None:
            Preprocessor(label="y").fit(dd.read_parquet(path))

        def ours_fit_transform() -> None:
            df = dd.read_parquet(path)
            out = Preprocessor(label="y").fit(df).transform(df).persist()
            wait(out)
            del out

        fitted = Preprocessor(label="y").fit(dd.read_parquet(path))

        def ours_transform() -> None:
            out = fitted.transform(dd.read_parquet(path)).persist()
            wait(out)
            del out

        def dml_transform() -> None:
            out = scaler.transform(dd.read_parquet(path)[features]).persist()
            wait(out)
            del out

        def dml_fit() -> None:
            StandardScaler().fit(dd.read_parquet(path)[features])

        def dml_fit_transform() -> None:
            X = dd.read_parquet(path)[features]
            out = StandardScaler().fit(X).transform(X).persist()
            wait(out)
            del out

        log(f"preprocessing: {n_rows:,} rows, {client.cluster}")
        measure("read floor: dd.read_parquet().map_partitions(len).compute()", floor_len)
        measure("read floor: dd.read_parquet().persist() + wait", floor_persist)
        measure("pipeline.io.read().persist() + wait", floor_pipeline_read)
        measure("ours: Preprocessor(label='y').fit", ours_fit)
        measure("ours: fit + transform().persist()", ours_fit_transform)
        measure("ours: transform().persist() only (already fitted)", ours_transform)
        if StandardScaler is not None:
            scaler = StandardScaler().fit(dd.read_parquet(path)[features])
            measure("dask_ml StandardScaler.fit (features)", dml_fit)
            measure("dask_ml StandardScaler fit + transform().persist()", dml_fit_transform)
            measure("dask_ml transform().persist() only (already fitted)", dml_transform)

    def pandas_fit() -> tuple[Any, Any, Any]:
        X = pd.read_parquet(path).drop(columns="y")
        return X, X.mean(), X.std(ddof=0)

    def pandas_fit_transform() -> None:
        X, mean, std = pandas_fit()
        (X - mean) / std

    measure("pandas (one process): read_parquet + mean/std", pandas_fit)
    measure("pandas (one process): read + mean/std + transform", pandas_fit_transform)

    floor = median(results["read floor: dd.read_parquet().map_partitions(len).compute()"])
    rows = [[name, median(s), spread(s), n_rows / median(s), median(s) / floor]
            for name, s in results.items()]
    t = table(["variant", "seconds (median)", "min–max", "rows/s", "× read floor (len)"], rows,
              f"{n_rows:,} rows × {N_COLS} float64 + label, {N_FILES} Parquet files, "
              f"2 workers × 1 thread, {reps} runs each after one warm-up run.")
    targets = []
    fit_s = median(results["ours: Preprocessor(label='y').fit"])
    ft_s = median(results["ours: fit + transform().persist()"])
    targets.append(target("Preprocessor.fit within 1.5× of the read floor",
                          f"{fit_s / floor:.2f}× (map_partitions(len) floor); "
                          f"{fit_s / median(results['read floor: dd.read_parquet().persist() + wait']):.2f}× "
                          "(persist floor)", fit_s / floor <= 1.5))
    notes = []
    if StandardScaler is not None:
        dml = median(results["dask_ml StandardScaler fit + transform().persist()"])
        targets.append(target("fit+transform ≥ 2× dask_ml StandardScaler (rows/s)",
                              f"{dml / ft_s:.2f}× (ours {fmt(ft_s)} s vs {fmt(dml)} s)",
                              dml / ft_s >= 2.0))
        dml_fit_s = median(results["dask_ml StandardScaler.fit (features)"])
        notes.append(f"fit alone: ours {fmt(fit_s)} s vs dask_ml {fmt(dml_fit_s)} s "
                     f"({dml_fit_s / fit_s:.2f}×).")
    else:
        targets.append(target("fit+transform ≥ 2× dask_ml StandardScaler", "dask-ml not "
                              f"importable: {dask_ml_error}", None))
    notes.append("Our Preprocessor also computes null counts, min/max and label value counts "
                 "(and imputes): more work per row than StandardScaler; dask_ml is given the "
                 "20 feature columns only.")
    notes.append("pandas: pyarrow's reader uses its own thread pool (both cores); the "
                 "statistics and transform run in the one process.")
    return section("Preprocessing", COMMAND + (" --quick" if quick else ""), tables=[t],
                   targets=targets, notes=notes, raw={"seconds": results, "rows": n_rows})


if __name__ == "__main__":
    main(run)
