"""Early stopping on the validation log loss (``validation_scoring="neg_log_loss"``, the tabular
classifiers' default): the score is minus scikit-learn's ``log_loss`` of the predicted
probabilities, and the tabular classifier restores the epoch that scored best."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster
from sklearn.metrics import log_loss, r2_score

import pipeline as pl
from pipeline.blocks import Block
from pipeline.train.scores import combine_scores, partition_score, score_value


class _Given:
    """A stand-in model whose outputs are its inputs (probabilities chosen by the test)."""

    def __init__(self, loss: str) -> None:
        self.loss = loss

    def forward(self, params, X, ctx=None):
        return X


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_neg_log_loss_is_sklearns(dtype):
    rng = np.random.default_rng(0)
    p = rng.uniform(size=500)
    p[:3] = [0.0, 1.0, 1e-20]  # clipped, as scikit-learn clips
    y = (rng.uniform(size=500) < p).astype(dtype)
    y[:2] = [1.0, 0.0]  # the worst cases: certain and wrong
    model = _Given("binary_log_loss")
    # two blocks, folded: the sums add up
    parts = [partition_score(Block(p[a:b, None].astype(dtype), y[a:b, None]), None, model,
                             with_loss=False) for a, b in ((0, 200), (200, 500))]
    s = combine_scores(parts)
    expected = log_loss(y, np.clip(p.astype(dtype).astype(np.float64), 0, 1), labels=[0, 1])
    assert score_value(s, model.loss, "neg_log_loss") == pytest.approx(-expected, rel=1e-12)
    # the default scoring is still accuracy
    assert score_value(s, model.loss) == np.mean((p.astype(dtype) > 0.5) == y)


def test_multiclass_neg_log_loss_is_sklearns():
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(4), size=300)
    labels = np.array([rng.choice(4, p=row) for row in P])
    Y = np.eye(4)[labels]
    s = partition_score(Block(P, Y), None, _Given("log_loss"), with_loss=False)
    assert score_value(s, "log_loss", "neg_log_loss") == pytest.approx(
        -log_loss(labels, P, labels=range(4)), rel=1e-12)


def test_regression_keeps_r2():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(200, 1))
    pred = y + 0.3 * rng.normal(size=(200, 1))
    s = partition_score(Block(pred, y), None, _Given("squared_error"), with_loss=False)
    assert score_value(s, "squared_error", "neg_log_loss") == pytest.approx(
        r2_score(y, pred), rel=1e-12)


def test_train_config_names_a_bad_scoring():
    from pipeline.train import TrainConfig

    with pytest.raises(ValueError, match="validation_scoring"):
        TrainConfig(validation_scoring="auc").validate()


@pytest.mark.parametrize("ensemble", ["shared", "independent"])
def test_tabular_classifier_restores_the_epoch_of_the_best_validation_log_loss(ensemble):
    """With ``validation_data`` given, the fitted model's log loss on it is the best validation
    score it reports, and (one network sharing its members) that is the largest of the
    epochs' scores (imbalanced classes: 10% positive, where accuracy sits near the majority
    rate). Independent members stop on their own scores (``validation_scores_`` are the first
    member's); the reported best is the ensemble's, scikit-learn's log loss of its
    probabilities."""
    rng = np.random.default_rng(3)

    def frame(n):
        X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                          "g": rng.choice(["u", "v", "w"], size=n)})
        logit = 1.5 * X.a - X.b ** 2 + (X.g == "u") - 2.5
        return X, pd.Series(np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes",
                                     "no"))

    X, y = frame(3000)
    Xv, yv = frame(1000)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        clf = pl.TabularClassifier(hidden_layer_sizes=(32, 32), max_iter=12, random_state=0,
                                   n_iter_no_change=3, ensemble=ensemble).fit(
                                       X, y, validation_data=(Xv, yv))
        proba = clf.predict_proba(Xv)
    assert 0.05 < np.mean(yv == "yes") < 0.2
    scores = clf.validation_scores_
    assert all(s < 0 for s in scores)  # minus log losses, not accuracies
    if ensemble == "shared":
        assert clf.best_validation_score_ == max(scores)
    assert -log_loss(yv, proba, labels=clf.classes_) == pytest.approx(
        clf.best_validation_score_, rel=1e-5)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_independent_members_score_from_their_outputs_as_a_scoring_round(kind, capsys):
    """A deep ensemble's members bring back their validation outputs from their fused tasks
    and the ensemble is scored from their mean, with no scoring round: the same bits as the
    scoring round of the whole ensemble (``ensemble_score`` without the results), and as an
    unfused fit (``verbose``: round by round, scored by a round)."""
    from pipeline.blocks import split_blocks
    from pipeline.train.members import ensemble_score

    rng = np.random.default_rng(5)
    n = 2600
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "g": rng.choice(["u", "v", "w"], size=n)})
    signal = 1.5 * X.a - X.b ** 2 + (X.g == "u")
    if kind == "classifier":
        est, y = pl.TabularClassifier, np.where(signal + rng.normal(size=n) > 0, "yes", "no")
    else:
        est, y = pl.TabularRegressor, signal + 0.3 * rng.normal(size=n)
    kw = {"hidden_layer_sizes": (16,), "max_iter": 6, "random_state": 0}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        fused = est(**kw).fit(X, y)
        loop = est(verbose=True, **kw).fit(X, y)
        assert fused.ensemble_ == "independent" and fused.early_stopping_
        assert np.array_equal(fused.params_, loop.params_)
        assert fused.best_validation_score_ == loop.best_validation_score_
        # the scoring round of the fitted ensemble on the same held-out rows
        Xt = fused.preprocessor_.transform(X)
        from pipeline.blocks import to_blocks
        from pipeline.tabular_blocks import _finish_block

        blocks = to_blocks(client, Xt, pd.Series(y), classification=kind == "classifier",
                           dtype="float32", min_block_rows=fused.min_block_rows)
        if kind == "regressor":
            blocks = blocks._replace(futures=client.map(
                _finish_block, blocks.futures, weighted=False, class_weights=None,
                weight_scale=1.0, target=(fused.target_mean_, fused.target_scale_)))
        _, valid = split_blocks(client, blocks, fused.validation_fraction, 0)
        by_round = ensemble_score(client, valid, fused.params_, fused.model_,
                                  fused._validation_scoring)
    capsys.readouterr()
    assert fused.best_validation_score_ == by_round
