"""The training core against single-process oracles: NumPy loops and scikit-learn."""

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from shared_bodies import numpy_full_batch

from pipeline import nn
from pipeline.blocks import to_blocks
from pipeline.estimators import MLPClassifier, MLPRegressor
from pipeline.train import TrainConfig, train


@pytest.fixture(scope="module")
def one_worker():
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster, set_as_default=False) as c:
        yield c


def _data(n=240, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + 0.3 * rng.standard_normal(n) > 0).astype(int)
    return X, y


def _fit_params(client, X, y, npartitions, **kw):
    spec = nn.MLPSpec((X.shape[1], 4, 1), "tanh", "binary_log_loss")
    blocks = to_blocks(client, da.from_array(X, chunks=(-(-len(X) // npartitions), -1)),
                       da.from_array(y, chunks=-(-len(y) // npartitions)),
                       classification=True, dtype="float64")
    assert len(blocks.futures) == npartitions
    cfg = TrainConfig(**{"solver": "sgd", "momentum": 0.9, "batch_size": None, "max_iter": 5,
                         "learning_rate_init": 0.1, "alpha": 1e-3, "random_state": 0,
                         "n_iter_no_change": 100, **kw})
    return train(client, blocks, model=spec, config=cfg).params, spec


@pytest.mark.parametrize("npartitions", [1, 3, 8])
def test_full_batch_equals_single_process_numpy(client, npartitions):
    X, y = _data()
    params, spec = _fit_params(client, X, y, npartitions)
    expected = numpy_full_batch(X, y, spec, epochs=5, lr=0.1, alpha=1e-3)
    np.testing.assert_allclose(params, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("split_every", [2, 3, 16])
def test_full_batch_independent_of_workers_and_split_every(client, one_worker, split_every):
    X, y = _data()
    ref, _ = _fit_params(client, X, y, 8, split_every=8)
    one, _ = _fit_params(one_worker, X, y, 8, split_every=split_every)
    np.testing.assert_allclose(one, ref, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("sync", ["gradient", "average"])
def test_minibatch_bit_identical_whatever_the_number_of_workers(client, one_worker, sync):
    X, y = _data(n=300)
    kw = dict(solver="adam", batch_size=32, max_iter=3, learning_rate_init=0.01, sync=sync,
              local_steps=3)
    two, _ = _fit_params(client, X, y, 5, **kw)
    again, _ = _fit_params(client, X, y, 5, **kw)
    one, _ = _fit_params(one_worker, X, y, 5, **kw)
    assert np.array_equal(two, again)
    assert np.array_equal(two, one)


def test_average_with_one_block_equals_gradient_mode(client):
    X, y = _data(n=200)
    kw = dict(solver="adam", batch_size=50, max_iter=3, learning_rate_init=0.01)
    grad, _ = _fit_params(client, X, y, 1, sync="gradient", **kw)
    avg, _ = _fit_params(client, X, y, 1, sync="average", local_steps=2, **kw)
    np.testing.assert_allclose(avg, grad, rtol=1e-10, atol=1e-12)


def test_average_one_local_step_plain_sgd_equals_gradient_mode(client):
    """H=1 plain SGD: the rows-weighted average of the blocks' steps (local batch 10 on each of
    4 equal blocks) is the synchronous step with a global batch of 40."""
    X, y = _data(n=200)  # 4 blocks of 50 rows
    kw = dict(solver="sgd", momentum=0.0, max_iter=3, learning_rate_init=0.05)
    grad, _ = _fit_params(client, X, y, 4, sync="gradient", batch_size=40, **kw)
    avg, _ = _fit_params(client, X, y, 4, sync="average", local_steps=1, batch_size=10, **kw)
    np.testing.assert_allclose(avg, grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dataset", ["synthetic", "breast_cancer"])
def test_lbfgs_without_hidden_layers_is_logistic_regression(client, dataset):
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if dataset == "synthetic":  # well conditioned: both solvers reach the optimum to 1e-6
        rng = np.random.default_rng(0)
        X = rng.standard_normal((600, 8))
        y = (X @ rng.standard_normal(8) + 0.5 * rng.standard_normal(600) > 0).astype(int)
        atol = 1e-6
    else:  # correlated features: the optimum is flat along some directions
        X, y = load_breast_cancer(return_X_y=True)
        atol = 1e-4
    X = StandardScaler().fit_transform(X)
    alpha = 0.5
    chunk = -(-len(X) // 4)
    # 4 real blocks (min_block_rows=1) on the 2-worker cluster: full-batch L-BFGS is exact, so
    # the sync mode does not enter (it only shapes mini-batch training)
    ours = MLPClassifier(hidden_layer_sizes=(), solver="lbfgs", alpha=alpha, tol=1e-12,
                         max_iter=5000, dtype="float64", random_state=0, min_block_rows=1)
    ours.fit(da.from_array(X, chunks=(chunk, -1)), da.from_array(y, chunks=chunk))
    assert ours.train_summary_["n_partitions"] == 4
    ref = LogisticRegression(C=1 / alpha, tol=1e-12, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(ours.coefs_[0].ravel(), ref.coef_.ravel(), atol=atol)
    np.testing.assert_allclose(ours.intercepts_[0], ref.intercept_, atol=atol)


# Both sides run a fixed epoch budget on purpose, so both warn that they did not converge.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("sync", ["gradient", "average"])
@pytest.mark.parametrize("dataset", ["breast_cancer", "digits"])
def test_accuracy_matches_sklearn_mlp(client, dataset, sync):
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkMLP
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    sc = StandardScaler().fit(Xtr)
    Xtr, Xte = sc.transform(Xtr), sc.transform(Xte)
    chunk = -(-len(Xtr) // 4)  # 4 real blocks on 2 workers
    for seed in (0, 1, 2):
        kw = dict(hidden_layer_sizes=(32,), max_iter=30, batch_size=128, random_state=seed,
                  learning_rate_init=3e-3)
        ref_acc = SkMLP(**kw).fit(Xtr, ytr).score(Xte, yte)
        ours = MLPClassifier(**kw, sync=sync, min_block_rows=1).fit(
            da.from_array(Xtr, chunks=(chunk, -1)), da.from_array(ytr, chunks=chunk))
        assert ours.train_summary_["n_partitions"] == 4
        acc = ours.score(Xte, yte)
        assert acc >= ref_acc - 0.02, (seed, acc, ref_acc)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # fixed budget
def test_regressor_matches_sklearn(client):
    from sklearn.datasets import make_regression
    from sklearn.neural_network import MLPRegressor as SkMLP

    X, y = make_regression(n_samples=600, n_features=6, noise=5.0, random_state=0)
    y = y / y.std()
    kw = dict(hidden_layer_sizes=(16,), max_iter=40, batch_size=64, random_state=0,
              learning_rate_init=3e-3)
    ref = SkMLP(**kw).fit(X, y).score(X, y)
    ours = MLPRegressor(**kw).fit(X, y)
    assert ours.score(X, y) >= ref - 0.02
    pred = ours.predict(da.from_array(X, chunks=(200, -1)))
    assert isinstance(pred, da.Array)
    np.testing.assert_allclose(pred.compute(), ours.predict(X), rtol=1e-5)


def test_divergence_names_round_and_block(client):
    X, y = _data(n=120)
    X = X.copy()
    X[70, 1] = np.inf  # block 1 of 3
    with pytest.raises(FloatingPointError, match=r"round 0.*block 1"):
        _fit_params(client, X, y, 3)


def test_early_stopping_keeps_best_and_records_validation(client):
    X, y = _data(n=600, seed=1)
    Xv, yv = _data(n=200, seed=2)
    m = MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, early_stopping=True,
                      n_iter_no_change=3, random_state=0, learning_rate_init=0.05)
    m.fit(X, y, validation_data=(Xv, yv))
    assert m.n_iter_ < 200
    assert len(m.validation_scores_) == m.n_iter_
    assert m.best_validation_score_ == max(m.validation_scores_)
    m2 = MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, early_stopping=True,
                       n_iter_no_change=3, random_state=0, learning_rate_init=0.05).fit(X, y)
    assert m2.validation_scores_ is not None and m2.n_iter_ < 200


def test_coalesced_blocks_do_not_depend_on_workers(client, one_worker):
    """Many tiny partitions are coalesced by row count only: same blocks, same model."""
    X, y = _data(n=400)
    Xd, yd = da.from_array(X, chunks=(10, -1)), da.from_array(y, chunks=10)  # 40 partitions
    kw = dict(hidden_layer_sizes=(4,), max_iter=3, batch_size=32, random_state=0,
              sync="average", local_steps=2, min_block_rows=64, replicas=2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixed budget
        a = MLPClassifier(**kw).fit(Xd, yd, client=client)
        b = MLPClassifier(**kw).fit(Xd, yd, client=one_worker)
    assert a.train_summary_["n_partitions"] == 5  # 7 partitions of 10 rows per block; tail merged
    assert np.array_equal(a.params_, b.params_)


def test_repeated_runs_and_rounds_ahead_give_the_same_bits(client):
    """Parameters deserialized on a worker are often misaligned views into message frames;
    NumPy then skips BLAS and rounds differently. Runs must not depend on where bytes land,
    and submitting rounds ahead (optimizer step as a task) must not change a bit."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, 20))
    y = (X[:, 0] > 0).astype(int)
    spec = nn.MLPSpec((20, 64, 64, 1), "relu", "binary_log_loss")
    results = []
    for ahead in (1, 1, 4, 4):
        blocks = to_blocks(client, da.from_array(X, chunks=(64, -1)), da.from_array(y, chunks=64),
                           classification=True, dtype="float32")
        cfg = TrainConfig(batch_size=12, max_iter=2, rounds_ahead=ahead, random_state=0)
        results.append(train(client, blocks, model=spec, config=cfg))
    for r in results[1:]:
        assert np.array_equal(r.params, results[0].params)
        assert r.state.loss_curve == results[0].state.loss_curve
    assert results[0].rounds == results[2].rounds == 2 * 43
