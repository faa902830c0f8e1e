"""Test bodies shared by the CPU suite and the GPU suite (tests/gpu), as xgboost's ``run_*``.

Each body takes a client (and the array library the data should live in) and asserts. The CPU
suite calls them with the session ``client`` and ``"numpy"``; tests/gpu calls the same bodies
with a ``LocalCUDACluster`` and ``"cupy"`` (cuDF partitions, CuPy blocks on the GPU).

The oracle is single-process NumPy: full-batch SGD with Nesterov momentum written out plainly,
in float64, so a distributed fit must land on the same parameters up to summation order:
1e-12 on NumPy, 1e-4 on CuPy (GPU reductions sum in another order, and cuBLAS may use other
kernels).

The bodies after the first exercise each place where device data meets the host (issue 9,
item 10): string and categorical labels in cuDF partitions, metrics on them next to device
scores, the report, the row-hash split (equal on both backends), and reading CSV on the GPU.
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
    "run_csv_read_matches_pandas",
    "run_fit_matches_reference",
    "run_in_memory_arrays_fit",
    "run_mixed_cluster_fit",
    "run_split_follows_the_pandas_hash",
    "run_string_labels_fit",
]

N_SAMPLES = 256
N_FEATURES = 6
N_PARTITIONS = 4
HIDDEN = (8,)
EPOCHS = 5
LEARNING_RATE = 0.1
MOMENTUM = 0.9
ALPHA = 1e-3
TOLERANCE = {"numpy": 1e-12, "cupy": 1e-4}


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
                         min_block_rows=None, sync="gradient")  # exact: the oracle's steps


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
    tol = TOLERANCE[xp_name]
    np.testing.assert_allclose(model.params_, expected, rtol=tol, atol=tol)

    proba = model.predict_proba(Xd)  # lazy, one block per partition
    assert proba.numblocks[0] == N_PARTITIONS
    p1 = nn.forward(spec, expected, X)[:, 0]
    got = to_host(proba.compute())
    np.testing.assert_allclose(got, np.column_stack([1 - p1, p1]), rtol=tol, atol=tol)
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
    tol = TOLERANCE[xp_name]
    np.testing.assert_allclose(model.params_, expected, rtol=tol, atol=tol)

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


def _ddf(frame: Any, xp_name: str, npartitions: int = N_PARTITIONS) -> Any:
    import dask.dataframe as dd

    if xp_name not in ("numpy", "cupy"):
        raise ValueError(f"xp_name must be 'numpy' or 'cupy', got {xp_name!r}")
    ddf = dd.from_pandas(frame, npartitions=npartitions)
    return ddf.to_backend("cudf") if xp_name == "cupy" else ddf


def run_string_labels_fit(client: Any, xp_name: str, kind: str, report_path: Any) -> None:
    """String (``kind="string"``) or categorical (``"category"``) labels: the blocks encode
    them on the host (CuPy cannot hold them) and the fit equals the NumPy oracle trained on
    their codes; predictions are the strings; the metrics and the report read the labels (cuDF
    on GPU workers) next to device scores; all equal scikit-learn on the host."""
    import sklearn.metrics as skm

    from analytics import metrics
    from analytics.report import report

    X, y = _dataset()
    names = np.array(["neg", "pos"], dtype=object)
    labels = names[y]
    ddf = _ddf(_pandas_frame(X, labels), xp_name)
    Xd, yd = ddf.drop(columns="y"), ddf["y"]
    if kind == "category":
        yd = yd.astype("category")
    model = _fit(_estimator(), Xd, yd, client)
    assert model.classes_.tolist() == names.tolist()
    spec, expected = _reference_params(X, y)
    tol = TOLERANCE[xp_name]
    np.testing.assert_allclose(model.params_, expected, rtol=tol, atol=tol)

    pred = to_host(model.predict(Xd).compute())
    p1 = nn.forward(spec, expected, X)[:, 0]
    np.testing.assert_array_equal(pred, names[(p1 > 0.5).astype(int)])
    proba = model.predict_proba(Xd)
    score = to_host(proba.compute())[:, 1]
    assert metrics.accuracy_score(yd, model.predict(Xd)) == skm.accuracy_score(labels, pred)
    np.testing.assert_array_equal(
        metrics.confusion_matrix(yd, model.predict(Xd), labels=names),
        skm.confusion_matrix(labels, pred, labels=names))
    assert metrics.roc_auc_score(yd, proba[:, 1]) == skm.roc_auc_score(labels, score)
    assert abs(metrics.log_loss(yd, proba, labels=names)
               - skm.log_loss(labels, score, labels=names)) <= 1e-12
    text = report(model, Xd, yd, report_path).read_text()
    assert f"{skm.accuracy_score(labels, pred):.4f}" in text


def run_split_follows_the_pandas_hash(xp_name: str) -> None:
    """train_test_split holds out the rows whose pandas hash (of the row values, whatever the
    partitioning) falls below test_size, on pandas and on cuDF partitions alike: CPU and GPU
    runs hold out the same rows."""
    from pipeline.preprocessing import row_uniform, train_test_split

    rng = np.random.default_rng(3)
    n = 400
    frame = _pandas_frame(rng.standard_normal((n, 3)), rng.integers(0, 3, n))
    frame["city"] = rng.choice(np.array(["Oslo", "Lima", None], dtype=object), n)
    frame["id"] = np.arange(n)
    test_size, seed = 0.3, 11
    expected = np.flatnonzero(row_uniform(frame, seed) < test_size)  # one pandas frame
    assert 0 < expected.size < n
    train, test = train_test_split(_ddf(frame, xp_name, npartitions=3), test_size=test_size,
                                   random_state=seed)
    np.testing.assert_array_equal(np.sort(to_host(test["id"].compute())), expected)
    assert to_host(train["id"].compute()).size == n - expected.size


def _text_as_objects(frame: Any) -> Any:
    frame = frame.to_pandas() if hasattr(frame, "to_pandas") else frame
    out = frame.reset_index(drop=True).copy()
    for c in out.columns:
        if out[c].dtype.kind not in "biuf":
            out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


def run_csv_read_matches_pandas(client: Any, xp_name: str, directory: Any) -> None:
    """pipeline.io.read (``backend="cudf"`` on GPU workers: parsed with cudf.read_csv) reads a
    clean CSV file as pandas.read_csv does, and names a bad value's line and column."""
    import pandas as pd

    from pipeline.io import BadRowsError, read

    rng = np.random.default_rng(8)
    n = 3_000
    frame = pd.DataFrame({
        "a": np.where(rng.random(n) < 0.1, np.nan, np.round(rng.standard_normal(n), 6)),
        "b": rng.integers(-1_000, 1_000, n),
        "c": rng.random(n) < 0.5,
        "d": rng.choice(np.array(["red", "green", None], dtype=object), n),
    })
    clean = directory / "clean.csv"
    frame.to_csv(clean, index=False)
    backend = "cudf" if xp_name == "cupy" else None
    got = client.compute(read(clean, blocksize=16_384, backend=backend)).result()
    if xp_name == "cupy":
        assert type(got).__module__.startswith("cudf")
    pd.testing.assert_frame_equal(_text_as_objects(got), _text_as_objects(pd.read_csv(clean)),
                                  check_dtype=False)

    lines = clean.read_text().splitlines()
    bad_line = 2_345  # 1-based line number in the file (line 1 is the header)
    fields = lines[bad_line - 1].split(",")
    fields[0] = "oops"
    lines[bad_line - 1] = ",".join(fields)
    dirty = directory / "dirty.csv"
    dirty.write_text("\n".join(lines) + "\n")
    try:
        client.compute(read(dirty, blocksize=16_384, backend=backend)).result()
    except BadRowsError as e:
        assert (e.row, e.column, e.reason) == (bad_line, "a", "type"), e
    else:
        raise AssertionError("the word in a number column was not reported")


def run_in_memory_arrays_fit(client: Any, xp_name: str) -> None:
    """fit and predict on in-memory arrays of ``xp_name`` (NumPy, or CuPy, which np.asarray
    refuses to copy to the host), not dask collections: equal to the NumPy oracle."""
    X, y = _dataset()
    if xp_name == "cupy":
        import cupy

        Xa, ya = cupy.asarray(X), cupy.asarray(y)
    else:
        Xa, ya = X, y
    model = _fit(_estimator(), Xa, ya, client)
    spec, expected = _reference_params(X, y)
    tol = TOLERANCE[xp_name]
    np.testing.assert_allclose(model.params_, expected, rtol=tol, atol=tol)
    p1 = nn.forward(spec, expected, X)[:, 0]
    np.testing.assert_array_equal(to_host(model.predict(Xa)), (p1 > 0.5).astype(y.dtype))


@contextlib.contextmanager
def _segments_counted() -> Iterator[list[int]]:
    """Count the mesh segments the client runs (``[count]``, filled in as they run)."""
    from pipeline.train import mesh_epoch, mesh_local

    count = [0]
    real = mesh_epoch.run_segment

    def counted(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    mesh_epoch.run_segment = mesh_local.run_segment = counted
    try:
        yield count
    finally:
        mesh_epoch.run_segment = mesh_local.run_segment = real


def run_mesh_fit_matches_dask_rounds(client: Any, xp_name: str) -> None:
    """Mini-batch fits whose epochs run on the workers' mesh, segments running past their
    epoch with early stopping scored on the ranks (``pipeline.train.run_ahead``): local SGD
    over replicas and exact gradients, each against the same fit with the mesh off (every
    round and every validation score through Dask). On CUDA workers the partials, the
    replicas' changes and the validation score partials crossing the mesh are CuPy arrays."""
    import dask

    X, y = _dataset(3)
    X = np.vstack([X, -X])  # 512 rows: several rounds an epoch
    y = np.concatenate([y, 1 - y])
    Xd, yd = _dask_frames(X, y, xp_name)
    tol = TOLERANCE[xp_name]
    for sync in ({"local_steps": 2, "replicas": 2}, {"sync": "gradient"}):
        fits = {}
        for mesh in (True, False):
            model = MLPClassifier(hidden_layer_sizes=HIDDEN, batch_size=32, max_iter=8,
                                  early_stopping=True, validation_fraction=0.25, tol=0.05,
                                  n_iter_no_change=2, random_state=0, dtype="float64",
                                  min_block_rows=None, **sync)
            segments = _segments_counted()
            with dask.config.set({"pipeline.train.mesh": mesh}), segments as count:
                fits[mesh] = _fit(model, Xd, yd, client)
            assert fits[mesh].train_summary_["retries"] == 0
            # on the mesh, fewer segments than epochs: they ran past their epoch
            assert (0 < count[0] < fits[mesh].n_iter_) if mesh else count[0] == 0, sync
        on, off = fits[True], fits[False]
        assert on.n_iter_ == off.n_iter_ < 8, sync  # stopped early, at the same epoch
        np.testing.assert_allclose(on.params_, off.params_, rtol=tol, atol=tol)
        np.testing.assert_allclose(on.validation_scores_, off.validation_scores_, rtol=tol,
                                   atol=tol)
        np.testing.assert_allclose(on.loss_curve_, off.loss_curve_, rtol=tol, atol=tol)
