"""TabularPreprocessor: fit and transform time and the sketch's rank error at 1M rows.

One process, synchronous scheduler (no cluster): 1,000,000 rows of 10 Student-t(3) numeric
columns (10 % missing in one), a 100-value and a ~20,000-value string column, 16 partitions.
Prints fit/transform seconds, output width, the largest certified rank error ``e / N`` next to
the a-priori bound, and the largest measured rank deviation of a fitted quantile.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_tabprep.py
"""

from __future__ import annotations

import time

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from pipeline.sketch import DEFAULT_SKETCH_SIZE, rank_error_bound
from pipeline.tabular_prep import TabularPreprocessor


def main(n: int = 1_000_000, n_partitions: int = 16) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({f"x{i}": rng.standard_t(3, n) for i in range(10)})
    df.loc[rng.random(n) < 0.1, "x0"] = np.nan
    df["c1"] = pd.array(rng.choice([f"k{i}" for i in range(100)], n), dtype="str")
    df["c2"] = pd.array([f"u{i}" for i in rng.zipf(1.3, n) % 20000], dtype="str")
    ddf = dd.from_pandas(df, npartitions=n_partitions)
    bound = rank_error_bound(n, DEFAULT_SKETCH_SIZE, n_partitions, 8) / n
    with dask.config.set(scheduler="sync"):
        for numeric in ("quantile_normal", "ple"):
            t0 = time.perf_counter()
            tp = TabularPreprocessor(numeric=numeric).fit(ddf)
            t1 = time.perf_counter()
            out = tp.transform(ddf).compute()
            t2 = time.perf_counter()
            print(f"{numeric:16s} fit {t1 - t0:5.1f} s  transform {t2 - t1:5.1f} s  "
                  f"width {out.shape[1]:4d}  max e/N {(tp.rank_error_ / n).max():.2e} "
                  f"(a-priori {bound:.2e})  vocab sizes {[len(v) for v in tp.vocabularies_]}")
    x = np.sort(df["x1"].to_numpy())
    h = np.linspace(0, 1, tp.quantiles_.shape[0]) * (n - 1)
    pos = np.searchsorted(x, tp.quantiles_[:, 1])
    print(f"largest |rank(fitted quantile) - h| / N on x1: {np.abs(pos - h).max() / n:.2e}")


if __name__ == "__main__":
    main()
