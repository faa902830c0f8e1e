"""Pin the fitted parameters of 9 tabular configurations (one block and 4 blocks, classifier
and regressor, PLE, class and sample weights, 3 members with LayerNorm; 4 blocks of one shared
ensemble with exact gradients and by local SGD over 2 replicas; 4 blocks joined for
independent members) to check that a change
keeps the bits: `PYTHONPATH=. python benchmarks/pin_tabular_params.py save ref.npz`, then after
the change `... check ref.npz` (prints SAME or the differing configurations).
`--param NAME=VALUE` (repeatable) adds a setting to every configuration: a new default pinned
against the old behaviour by asking for the old one, e.g. `check ref.npz --param
ensemble=shared` after `ensemble="auto"` came in."""
import os
import sys
import warnings

for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(v, "1")
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_quality import _dataset  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import pipeline as pl  # noqa: E402


def data(name, n=1500, seed=0):
    X, y, task = _dataset(name)
    Xs, _, ys, _ = train_test_split(X, y, train_size=n, random_state=seed,
                                    stratify=y if task == "classification" else None)
    return Xs, ys

CONFIGS = [
    ("credit_data", pl.TabularClassifier, dict(max_iter=6)),
    ("credit_data", pl.TabularClassifier, dict(max_iter=4, class_weight="balanced", numeric="ple")),
    ("wa_churn", pl.TabularClassifier, dict(max_iter=4, n_members=3, layer_norm=True)),
    ("loans", pl.TabularRegressor, dict(max_iter=5)),
    # (several blocks: ensemble="shared", or small data's blocks are joined for independent
    # members, session 12)
    ("hotel_rates", pl.TabularRegressor, dict(max_iter=4, min_block_rows=256, weighted=True,
                                              sync="gradient", ensemble="shared")),
    ("credit_data", pl.TabularClassifier, dict(max_iter=4, min_block_rows=300, verbose=0, n=3000,
                                               sync="gradient", ensemble="shared")),
    # several blocks at the defaults: local SGD over 2 replicas (session 10)
    ("credit_data", pl.TabularClassifier, dict(max_iter=4, min_block_rows=300, n=3000,
                                               ensemble="shared")),
    ("hotel_rates", pl.TabularRegressor, dict(max_iter=4, min_block_rows=256, weighted=True,
                                              ensemble="shared")),
    # small data of several blocks at the defaults: joined, independent members (session 12)
    ("hotel_rates", pl.TabularRegressor, dict(max_iter=4, min_block_rows=256, weighted=True)),
]

def main():
    import ast

    mode, path = sys.argv[1], sys.argv[2]
    extra = {}
    for i, a in enumerate(sys.argv):
        if a == "--param":
            k, v = sys.argv[i + 1].split("=", 1)
            try:
                extra[k] = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                extra[k] = v
    client = Client(LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None))
    out = {}
    for i, (name, est, kw) in enumerate(CONFIGS):
        kw = dict(kw)
        weighted = kw.pop("weighted", False)
        n = kw.pop("n", 1500)
        X, y = data(name, n)
        sw = (np.arange(len(X)) % 3 + 1).astype(float) if weighted else None
        if kw.get("min_block_rows", 16384) < 1000:
            import dask.dataframe as dd
            full = X.assign(__y=np.asarray(y), __w=np.ones(len(X)) if sw is None else sw)
            ddf = dd.from_pandas(full, npartitions=4, sort=False)
            X, y = ddf.drop(columns=["__y", "__w"]), ddf["__y"]
            sw = ddf["__w"] if weighted else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = est(random_state=3, **kw, **extra).fit(X, y, sample_weight=sw)
        out[f"c{i}"] = m.params_
        out[f"c{i}_curve"] = np.asarray(m.loss_curve_)
        print(i, name, m.n_iter_, m.train_summary_["n_blocks"], m.params_[:3], flush=True)
    client.close()
    if mode == "save":
        np.savez(path, **out)
    else:
        ref = np.load(path)
        ok = all(np.array_equal(ref[k], out[k]) for k in ref.files)  # (a newer config: not in
        # an older reference file)
        for k in ref.files:
            if not np.array_equal(ref[k], out[k]):
                print("DIFF", k)
        print("SAME" if ok else "DIFFERENT")

def dd_from(obj, n):
    import dask.dataframe as dd
    return dd.from_pandas(obj, npartitions=n, sort=False)

if __name__ == "__main__":
    main()
