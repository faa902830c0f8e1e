"""The distributed math against an oracle written out here in plain NumPy (no ``pipeline.nn``,
no ``pipeline.optim``): exact mini-batch Adam over several blocks on two workers, and local SGD
with one replica (sequential training); plus the replica strategy's invariants."""

import itertools
import math
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from pipeline import MLPClassifier


def _data(n=360, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X[:, 0] - 0.7 * X[:, 1] * X[:, 2] + 0.2 * rng.standard_normal(n) > 0).astype(int)
    return X, y


def oracle_minibatch_adam(X, y, block_rows, *, hidden, batch, epochs, lr, alpha, seed,
                          beta_1=0.9, beta_2=0.999, eps=1e-8):
    """tanh MLP, sigmoid output, mean log-loss + scikit-learn's L2 penalty, scikit-learn's Adam;
    no shuffle. Global step s of S = ceil(n / batch) takes, from each block of ``block_rows``
    rows, the rows [s n_b // S, (s + 1) n_b // S) (every block its proportional share)."""
    rng = np.random.default_rng(seed)
    sizes = [X.shape[1], *hidden, 1]
    W, b = [], []
    for fi, fo in itertools.pairwise(sizes):
        bound = math.sqrt(6.0 / (fi + fo))
        W.append(rng.uniform(-bound, bound, (fi, fo)))
        b.append(rng.uniform(-bound, bound, fo))
    params = W + b
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    starts = np.cumsum([0, *block_rows])
    n = len(X)
    steps = math.ceil(n / batch)
    t = 0
    for _ in range(epochs):
        for s in range(steps):
            rows = np.concatenate([
                np.arange(starts[k] + s * nb // steps, starts[k] + (s + 1) * nb // steps)
                for k, nb in enumerate(block_rows)])
            xb, yb = X[rows], y[rows].reshape(-1, 1).astype(float)
            m = len(rows)
            acts = [xb]
            for i in range(len(W) - 1):
                acts.append(np.tanh(acts[-1] @ W[i] + b[i]))
            z = acts[-1] @ W[-1] + b[-1]
            p = 1.0 / (1.0 + np.exp(-z))
            delta = (p - yb) / m
            gW, gb = [None] * len(W), [None] * len(W)
            for i in range(len(W) - 1, -1, -1):
                gW[i] = acts[i].T @ delta + alpha * W[i] / m
                gb[i] = delta.sum(axis=0)
                if i:
                    delta = (delta @ W[i].T) * (1.0 - acts[i] ** 2)
            grads = gW + gb
            t += 1
            lr_t = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            for j, g in enumerate(grads):
                m1[j] = beta_1 * m1[j] + (1 - beta_1) * g
                m2[j] = beta_2 * m2[j] + (1 - beta_2) * g * g
                params[j] = params[j] - lr_t * m1[j] / (np.sqrt(m2[j]) + eps)
            W, b = params[:len(W)], params[len(W):]
    return W, b


def _fit(client, X, y, chunk, **kw):
    kw = {"shuffle": False, **kw}
    est = MLPClassifier(hidden_layer_sizes=(6,), activation="tanh", solver="adam",
                        batch_size=40, max_iter=3, learning_rate_init=0.01, alpha=1e-3,
                        dtype="float64", random_state=0, min_block_rows=1, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(da.from_array(X, chunks=(chunk, -1)), da.from_array(y, chunks=chunk),
                       client=client)


@pytest.mark.parametrize("mode", [{"sync": "gradient"},
                                  {"sync": "average", "replicas": 1, "local_steps": 4,
                                   "outer_momentum": 0.0}])
def test_minibatch_adam_matches_a_plain_numpy_oracle(client, mode):
    """Exact mode over 4 blocks on 2 workers, and local SGD with one replica (sequential
    training, its blocks colocated), are the oracle's mini-batch Adam to 1e-12 (float64)."""
    X, y = _data()
    est = _fit(client, X, y, 90, **mode)
    assert est.train_summary_["n_partitions"] == 4
    W, b = oracle_minibatch_adam(X, y, [90] * 4, hidden=(6,), batch=40, epochs=3, lr=0.01,
                                 alpha=1e-3, seed=0)
    for got, want in zip(est.coefs_ + est.intercepts_, W + b, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def one_worker():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster, set_as_default=False) as c:
        yield c


def test_replicas_do_not_depend_on_the_number_of_workers(client, one_worker):
    X, y = _data()
    kw = dict(sync="average", replicas=2, local_steps=3, outer_momentum=0.5, shuffle=True)
    two = _fit(client, X, y, 45, **kw)
    one = _fit(one_worker, X, y, 45, **kw)
    for a, b in zip(two.coefs_ + two.intercepts_, one.coefs_ + one.intercepts_, strict=True):
        assert np.array_equal(a, b)


def test_replicas_with_one_block_are_sequential_training(client):
    """One block holds one replica whatever ``replicas`` asks: sequential mini-batch training,
    i.e. the exact mode's numbers (one block: the same rows, the same order)."""
    X, y = _data()
    seq = _fit(client, X, y, 360, sync="average", replicas=4, local_steps=5,
               outer_momentum=0.0, shuffle=True)
    exact = _fit(client, X, y, 360, sync="gradient", shuffle=True)
    for a, b in zip(seq.coefs_ + seq.intercepts_, exact.coefs_ + exact.intercepts_,
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_early_stopping_returns_the_best_validation_parameters(client):
    X, y = _data(n=600, seed=3)
    est = MLPClassifier(hidden_layer_sizes=(16,), early_stopping=True, n_iter_no_change=2,
                        max_iter=30, batch_size=32, learning_rate_init=0.05, random_state=0,
                        min_block_rows=1, validation_fraction=0.2, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(da.from_array(X, chunks=(150, -1)), da.from_array(y, chunks=150),
                client=client)
    # the returned parameters are the best epoch's: re-scoring the same held-out rows gives
    # exactly best_validation_score_
    assert est.best_validation_score_ == max(est.validation_scores_)
    from pipeline.blocks import split_blocks, to_blocks
    from pipeline.train import evaluate

    blocks = to_blocks(client, da.from_array(X, chunks=(150, -1)),
                       da.from_array(y, chunks=150), classification=True, dtype="float64",
                       min_block_rows=1)
    _, valid = split_blocks(client, blocks, 0.2, 0)
    score = evaluate(client, valid, est.params_, est.spec_)["accuracy"]
    assert score == est.best_validation_score_
