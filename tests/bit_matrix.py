"""The configurations whose fitted parameters must not change when code moves (issue: a
refactor changes no bits). ``python tests/bit_matrix.py`` (re)writes
``tests/fixtures/bit_identity.json``; ``tests/test_bit_identity.py`` refits every configuration
on 1 and 2 workers and compares SHA-256 checksums of the fitted arrays.

Regenerate only in a commit that is meant to change numbers, and say so in its message.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).parent / "fixtures" / "bit_identity.json"


def data(kind: str, n: int = 480, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    signal = X[:, 0] + 0.5 * X[:, 1] * X[:, 2] - 0.3 * X[:, 3] ** 2
    if kind == "binary":
        return X, (signal + 0.3 * rng.standard_normal(n) > 0).astype(int)
    if kind == "multiclass":
        return X, np.digitize(signal + 0.3 * rng.standard_normal(n), [-0.5, 0.5])
    return X, signal + 0.1 * rng.standard_normal(n)


def configs() -> list[dict]:
    """A fixed matrix: both sync modes x adam/sgd/lbfgs x relu/tanh x float32/float64 x block
    counts, plus the schedules, early stopping, outer momentum and the regressor."""
    out = []
    for sync, solver, act, dtype, parts in itertools.product(
        ("gradient", "average"), ("adam", "sgd", "lbfgs"), ("relu", "tanh"),
        ("float32", "float64"), (1, 4),
    ):
        if solver == "lbfgs" and sync == "average":
            continue
        out.append({"kind": "binary" if parts == 1 else "multiclass", "parts": parts,
                    "params": {"sync": sync, "solver": solver, "activation": act,
                               "dtype": dtype, "hidden_layer_sizes": [8, 5],
                               "batch_size": 64, "max_iter": 3, "local_steps": 2,
                               "learning_rate_init": 0.01}})
    extra = [
        {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0.5,
         "nesterovs_momentum": False},
        {"solver": "sgd", "learning_rate": "adaptive", "n_iter_no_change": 1, "tol": 10.0,
         "max_iter": 5},
        {"early_stopping": True, "n_iter_no_change": 2, "max_iter": 5},
        {"sync": "average", "outer_momentum": 0.6, "outer_learning_rate": 0.8},
        {"sync": "average", "local_steps": None},
        {"rounds_ahead": 1},
        {"shuffle": False},
        {"alpha": 0.1, "activation": "logistic"},
    ]
    for kw in extra:
        out.append({"kind": "binary", "parts": 3,
                    "params": {"hidden_layer_sizes": [8], "batch_size": 50, "max_iter": 3,
                               "learning_rate_init": 0.01, **kw}})
    for sync in ("gradient", "average"):
        out.append({"kind": "regression", "parts": 3,
                    "params": {"sync": sync, "hidden_layer_sizes": [8], "batch_size": 40,
                               "max_iter": 3, "learning_rate_init": 0.01, "local_steps": 3}})
    for cfg in out:  # the defaults these configurations were recorded with, pinned
        for key, value in _RECORDED_DEFAULTS.items():
            cfg["params"].setdefault(key, value)
    return out


# Estimator defaults when the fixture was recorded (the defaults have moved since: sync,
# local_steps, outer_momentum, replicas); pinned so the recorded numbers keep their meaning.
_RECORDED_DEFAULTS = {"sync": "gradient", "local_steps": None, "outer_momentum": 0.0,
                      "replicas": None}


def fit_checksum(client, cfg: dict) -> str:
    import dask.array as da

    from pipeline.estimators import MLPClassifier, MLPRegressor

    X, y = data(cfg["kind"])
    n = len(X)
    chunk = -(-n // cfg["parts"])
    est_cls = MLPRegressor if cfg["kind"] == "regression" else MLPClassifier
    params = dict(cfg["params"])
    params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    est = est_cls(random_state=0, min_block_rows=1, **params)
    Xd = da.from_array(X, chunks=(chunk, -1))
    yd = da.from_array(y, chunks=chunk)
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(Xd, yd, client=client)
    h = hashlib.sha256()
    for a in [*est.coefs_, *est.intercepts_]:
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    h.update(np.asarray(est.loss_curve_, dtype=np.float64).tobytes())
    return h.hexdigest()


def main() -> None:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        sums = [fit_checksum(client, c) for c in configs()]
    FIXTURE.write_text(json.dumps({"configs": configs(), "sha256": sums}, indent=1) + "\n")
    print(f"wrote {len(sums)} checksums to {FIXTURE}", file=sys.stderr)


if __name__ == "__main__":
    main()
