"""Test bodies shared by the CPU suite and the GPU suite (tests/gpu), as xgboost's ``run_*``.

Each body takes a client (and the array library the data should live in) and asserts. The CPU
suite calls them with the session ``client`` and ``"numpy"``; tests/gpu calls the same bodies
with a ``LocalCUDACluster`` and ``"cupy"`` (cuDF partitions, CuPy blocks on the GPU).

The oracle is single-process NumPy: full-batch SGD with Nesterov momentum written out plainly,
in float64, so a distributed fit on any device must land on the same parameters up to
summation order (1e-4 leaves room for GPU reductions).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline import nn, optim
from pipeline.backend import to_host
from pipeline.estimators import MLPClassifier
from pipeline.events import TOPIC

__all__ = [
    "mixed_cpu_gpu_cluster",
    "run_fit_matches_reference",
    "run_mixed_cluster_fit",
]

N_SAMPLES = 256
N_FEATURES = 6
N_PARTITIONS = 4
HIDDEN = (8,)
EPOCHS = 5
LEARNING_RATE = 0.1
MOMENTUM = 0.9
ALPHA = 1e-3
TOLERANCE = 1e-4


def _dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_SAMPLES, N_FEATURES))
    y = (X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + 0.3 * rng.standard_normal(N_SAMPLES) > 0)
    return X, y.astype(np.int64)


def _estimator() -> MLPClassifier:
    # batch_size=None: one full-batch step per epoch, so the result cannot depend on how the
    # rows are split into partitions or workers. min_block_rows=None: one training block per
    # partition, each on the worker (and device) that made it, never merged across workers.
    return MLPClassifier(hidden_layer_sizes=HIDDEN, activation="tanh", solver="sgd",
                         batch_size=None, learning_rate_init=LEARNING_RATE, momentum=MOMENTUM,
                         nesterovs_momentum=True, alpha=ALPHA, max_iter=EPOCHS,
                         n_iter_no_change=EPOCHS + 1, random_state=0, dtype="float64",
                         min_block_rows=None)


def _fit(model: MLPClassifier, X: Any, y: Any, client: Any) -> MLPClassifier:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # EPOCHS is deliberately too few to converge; the warning is sklearn's, expected here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, client=client)


def numpy_full_batch(X: np.ndarray, y: np.ndarray, spec: nn.MLPSpec, *, epochs: int, lr: float,
                     alpha: float, momentum: float = 0.9) -> np.ndarray:
    """The single-process oracle: full-batch SGD with Nesterov momentum and an L2 penalty,
    written out plainly in NumPy (float64)."""
    params = nn.init_params(spec, 0, dtype=np.float64)
    opt = optim.sgd(lr, momentum=momentum, nesterov=True)
    state = opt.init(params)
    Y = y.reshape(-1, 1).astype(np.float64)
    for _ in range(epochs):
        _, grad = nn.loss_and_grad(spec, params, X, Y)
        _, pen_grad = nn.l2_penalty(spec, params, alpha, len(X))
        updates, state = opt.update(grad / len(X) + pen_grad, state, params)
        params = optim.apply_updates(params, updates)
    return params


def _reference_params(X: np.ndarray, y: np.ndarray) -> tuple[nn.MLPSpec, np.ndarray]:
    spec = nn.MLPSpec((X.shape[1], *HIDDEN, 1), "tanh", "binary_log_loss")
    return spec, numpy_full_batch(X, y, spec, epochs=EPOCHS, lr=LEARNING_RATE, alpha=ALPHA,
                                  momentum=MOMENTUM)


def _pandas_frame(X: np.ndarray, y: np.ndarray) -> Any:
    import pandas as pd

    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["y"] = y
    return frame


def _on_backend(frame: Any, xp_name: str) -> Any:
    """A pandas partition as it lives on a worker: unchanged for numpy, cuDF for cupy."""
    if xp_name == "numpy":
        return frame
    if xp_name == "cupy":
        import cudf

        return cudf.from_pandas(frame)
    raise ValueError(f"xp_name must be 'numpy' or 'cupy', got {xp_name!r}")


def _dask_frames(X: np.ndarray, y: np.ndarray, xp_name: str) -> tuple[Any, Any]:
    import dask.dataframe as dd

    if xp_name not in ("numpy", "cupy"):
        raise ValueError(f"xp_name must be 'numpy' or 'cupy', got {xp_name!r}")
    ddf = dd.from_pandas(_pandas_frame(X, y), npartitions=N_PARTITIONS)
    if xp_name == "cupy":
        ddf = ddf.to_backend("cudf")
    return ddf.drop(columns="y"), ddf["y"]


def run_fit_matches_reference(client: Any, xp_name: str) -> None:
    """MLPClassifier.fit on dask collections backed by ``xp_name`` (pandas/NumPy or cuDF/CuPy)
    equals the single-process NumPy run, and predicts lazily on the same device."""
    X, y = _dataset()
    Xd, yd = _dask_frames(X, y, xp_name)
    model = _fit(_estimator(), Xd, yd, client)
    assert model.train_summary_["n_partitions"] == N_PARTITIONS
    spec, expected = _reference_params(X, y)
    assert model.spec_.layer_sizes == spec.layer_sizes
    np.testing.assert_allclose(model.params_, expected, rtol=TOLERANCE, atol=TOLERANCE)

    proba = model.predict_proba(Xd)  # lazy, one block per partition
    assert proba.numblocks[0] == N_PARTITIONS
    p1 = nn.forward(spec, expected, X)[:, 0]
    got = to_host(proba.compute())
    np.testing.assert_allclose(got, np.column_stack([1 - p1, p1]), rtol=TOLERANCE,
                               atol=TOLERANCE)
    labels = to_host(model.predict(Xd).compute())
    np.testing.assert_array_equal(labels, (p1 > 0.5).astype(labels.dtype))


def _make_partition(X: np.ndarray, y: np.ndarray, xp_name: str) -> Any:
    return _on_backend(_pandas_frame(X, y), xp_name)


def run_mixed_cluster_fit(client: Any, xp_name: str) -> None:
    """One model on a cluster of a CPU worker (resource ``CPU=1``) and a GPU worker (``GPU=1``).

    The partitions made on the GPU worker are ``xp_name`` (cuDF for ``"cupy"``), the others
    pandas; each partition's training block stays where it was made, so both devices train the
    one model, and the result equals the single-process NumPy run.
    """
    import dask.dataframe as dd

    workers = client.scheduler_info()["workers"]
    by_device = {device: sorted(addr for addr, w in workers.items()
                                if w.get("resources", {}).get(device))
                 for device in ("CPU", "GPU")}
    assert by_device["CPU"] and by_device["GPU"], f"needs CPU and GPU workers: {by_device}"

    X, y = _dataset()
    rows = np.array_split(np.arange(N_SAMPLES), N_PARTITIONS)
    devices = ["CPU" if i % 2 == 0 else "GPU" for i in range(N_PARTITIONS)]
    futures = [
        client.submit(_make_partition, X[idx], y[idx], xp_name if device == "GPU" else "numpy",
                      resources={device: 1}, pure=False, key=f"mixed-partition-{i}")
        for i, (idx, device) in enumerate(zip(rows, devices, strict=True))
    ]
    holders = client.who_has(futures)
    for future, device in zip(futures, devices, strict=True):
        assert set(holders[future.key]) <= set(by_device[device]), (future.key, holders)

    ddf = dd.from_delayed(futures, meta=_pandas_frame(X[:0], y[:0]), verify_meta=False)
    model = _fit(_estimator(), ddf.drop(columns="y"), ddf["y"], client)
    _, expected = _reference_params(X, y)
    np.testing.assert_allclose(model.params_, expected, rtol=TOLERANCE, atol=TOLERANCE)

    # Every training round ran blocks on both kinds of worker.
    run_id = model.train_summary_["run_id"]
    rounds = [msg for _, msg in client.get_events(TOPIC)
              if msg.get("run") == run_id and msg.get("event") == "round"]
    assert rounds
    for msg in rounds:
        used = set(msg["partition_workers"])
        assert used & set(by_device["CPU"]) and used & set(by_device["GPU"]), msg


@contextlib.contextmanager
def mixed_cpu_gpu_cluster(gpu_env: dict[str, str] | None = None,
                          cpu_env: dict[str, str] | None = None) -> Iterator[Any]:
    """A client on a cluster of one CPU worker (``CPU=1``) and one GPU worker (``GPU=1``), the
    workers as in deploy/: one process, one thread, the device advertised as a resource.

    ``gpu_env``/``cpu_env``: environment of each worker process, e.g.
    ``{"CUDA_VISIBLE_DEVICES": "0"}`` and ``{"CUDA_VISIBLE_DEVICES": ""}`` on a GPU machine.
    """
    from distributed import Client, Nanny, Scheduler, SpecCluster

    def worker(resources: dict[str, int], env: dict[str, str] | None) -> dict[str, Any]:
        return {"cls": Nanny, "options": {"nthreads": 1, "resources": resources,
                                          "host": "127.0.0.1", "env": dict(env or {})}}

    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    workers = {"cpu-0": worker({"CPU": 1}, cpu_env), "gpu-0": worker({"GPU": 1}, gpu_env)}
    # The default client while open: the library finds the current client where it needs one.
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        yield client
