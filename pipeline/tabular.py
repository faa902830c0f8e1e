"""Estimators for raw tabular frames: :class:`TabularClassifier` and :class:`TabularRegressor`.

``fit(X, y)`` takes a dask (or pandas) DataFrame of raw columns, numeric and categorical, with
missing values, as :func:`pipeline.read` returns it, and:

1. fits a :class:`~pipeline.tabular_prep.TabularPreprocessor` in one pass (quantile sketches,
   vocabularies with an unknown bucket, missing indicators);
2. materialises the encoded rows as training blocks on the workers
   (:func:`pipeline.blocks.to_blocks`); what the loss needs besides (regression target moments,
   class counts for ``class_weight="balanced"``, the weight total) is summed from the blocks in
   block order, so no further pass over the raw data and the same bits on any cluster;
3. trains ``n_members`` networks (:mod:`pipeline.tabular_net`) with AdamW, linear
   warm-up then cosine decay, gradient clipping, and early stopping on a held-out
   ``validation_fraction`` that restores the best epoch's weights, every epoch judged on the
   moving average of the epochs' parameters (``ema_decay``): one block as sequential
   mini-batches, every epoch in one task. On small data (``ensemble="auto"``: up to 65,536
   rows and 64 MiB, ``tabular_base.INDEPENDENT_MAX_ROWS``) each member is a whole network
   trained on every row (the blocks joined into one) in its own task on its own worker at the
   same time, a deep ensemble (:mod:`pipeline.train.members`,
   :class:`pipeline.nn.IndependentMembers`); beyond, the members are one network sharing the
   input encoding (``ensemble="shared"``), trained by local SGD over one replica per worker,
   as the MLP estimators (``_BaseTabular._sync_params``).

Row weights (``sample_weight`` times ``class_weight``, normalised to mean 1) ride in the
training blocks as one extra trailing column of ``Y``, which
:class:`pipeline.nn.EnsembleSequential` splits off: the trainer passes blocks' rows to the model
unchanged, so weighting needs no change to the trainer. Validation blocks carry no weights.

Defaults (see ``benchmarks/bench_quality.py`` for the evidence): quantile-normal numeric
encoding for classification, standard scaling for regression (a target near-linear in a raw
feature, hotel_rates' ``historical_adr``, is bent by the quantile map: RMSE 22.0 -> 18.7), two hidden layers of 128 units (256 was no better on the benchmark and 3-4x
slower), dropout none for independent members that stop early, else 0.1 (``_BaseTabular._dropout``), 2 members (1 member: lower ROC AUC / higher RMSE on every benchmark
dataset tried; 4 members: twice the arithmetic for mixed quality on the quick benchmark,
accuracy -0.6 / +0.5 points on credit_data / wa_churn, RMSE -0.3% / -2.2% on loans /
hotel_rates), independent on small data (``ensemble="auto"``; against members sharing their
encoding, same code, alternating runs: 1.1-1.8x sooner on the five one-block quality datasets
at the same or better metric, hotel_rates 5.9 -> 3.5 s; diamonds, two blocks, 1.25x sooner
and RMSE 610 -> 584; 24,000-48,000 synthetic rows 7-22% slower for +0.3 to +0.6 points of
accuracy: ``benchmarks/results/evidence/tabular_independent_members.md``), AdamW (rate 2e-3,
weight decay 1e-4 on weights),
2% warm-up (1.2 epochs of the 60; 5% before: with early stopping, usually after 10-25 epochs, 3
epochs of warm-up held the rate down for much of the fit; 2% ran hotel_rates 22.2 -> 18.0
epochs, flchain 11.4 -> 9.4, the rest within an epoch, every metric within the seeds' spread:
``benchmarks/results/evidence/tabular_warmup.md``), cosine decay over ``max_iter=60`` epochs, clip norm 1, batch size ``n / 8``
in [32, 256] (``n / 32`` up to 1024 from 8k rows), blocks of at least 8,192 rows
(``min_block_rows``; a pandas frame from 16,384 rows is cut into 2, 4, 8, ... equal
partitions, so two workers share a shared ensemble's replicas: 1.2-1.5x sooner on
20,000-32,000 rows than one block on one worker, the same accuracy; a pandas frame whose
members each hold every row is preprocessed and blocked in the client, by the tasks'
functions, and the blocks sent to every worker: :mod:`pipeline.tabular_local`), early stopping from 2,000
rows: stop
after ``n_iter_no_change`` epochs in which the validation score (minus the log loss, or R²) did
not beat the best by ``tol=1e-3`` (patience 8 with ``tol=0`` ran 180 epochs over the quick
benchmark's 8 fits, patience 6 with this ``tol`` 136, with the same or better test metric on
every fit: R² creeps up by less than 1e-3 an epoch on hotel_rates for dozens of epochs).
Patience is 3 for the classifier, whose log loss moves smoothly, and 4 for the regressor, whose
validation R² swings from epoch to epoch. Over the 7 benchmark datasets (5 seeds each, session
10), patience 3 against 6 gave the classifiers the same or better accuracy and ROC AUC in
15-33% less fit time. The regressors lost RMSE with patience 3: hotel_rates +1.2%, diamonds
+4.3%. Every epoch is judged on the exponential moving average of the epochs' parameters
(``ema_decay=0.5``, :mod:`pipeline.train.stopping`), which swings less: with it the regressors'
patience went from 6 to 4, 13-22% fewer epochs on hotel_rates, diamonds and loans (5 seeds) at
the same or lower RMSE (14.95 -> 14.83, 556.2 -> 555.7, 3.791 -> 3.778); the classifiers'
metrics and epochs stayed within the seeds' spread, scikit-learn's small sets (no early stopping:
the fit ends with the average) the same or better, and the shared ensemble on 268,800 synthetic
rows gained (accuracy 0.8064 -> 0.8084, log loss 0.4100 -> 0.4074) for one more epoch
(``benchmarks/results/evidence/tabular_ema.md``).
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score

from .predict_blocks import is_dask as _is_dask

# the private names stay importable from here, where they lived before the split (worker
# functions: tabular_blocks; the shared facade: tabular_base; the run-config entry: tabular_config)
from .tabular_base import _LABEL, _ROWS_PER_PARTITION, _WEIGHT, _BaseTabular  # noqa: F401
from .tabular_blocks import (  # noqa: F401
    _binary_proba,
    _block_stats,
    _class_index,
    _finish_block,
    _forward_partition,
    _strip_weights,
    _take_labels,
)
from .tabular_config import RawColumns, tabular_from_config

__all__ = ["RawColumns", "TabularClassifier", "TabularRegressor", "tabular_from_config"]


def _compute_if_dask(*values: Any) -> list[Any]:
    lazy = [v for v in values if _is_dask(v)]
    done = iter(dask.compute(*lazy)) if lazy else iter(())
    return [np.asarray(next(done)) if _is_dask(v) else (None if v is None else np.asarray(v))
            for v in values]


class TabularClassifier(ClassifierMixin, _BaseTabular):
    """Classifier for raw tabular frames (binary and multi-class); see the module docstring.

    ``class_weight``: ``None``, ``"balanced"`` (``n / (n_classes * count_c)``, as
    scikit-learn) or a dict ``{label: weight}`` (labels not in it weigh 1).

    ``numeric_embedding``: ``"periodic"``: each numeric column becomes 8 learned sine and 8
    cosine features (:class:`pipeline.nn.Periodic`, frequencies from ``normal(0, 0.1)``),
    Gorishniy et al.'s periodic embeddings; a column of few values gets fewer, as many as its
    values need (``ceil(v / 2)`` for ``v`` values: :func:`pipeline.tabular_net.periodic_frequencies`),
    a column of two values (a flag) enters the first dense layer as it is (any function of it
    is affine in it), and a column constant at fit is left out (on the quality benchmark:
    fewer epochs and inputs at the same test metrics,
    ``benchmarks/results/evidence/periodic_frequencies_by_levels.md``); ``"none"``:
    the encoded numeric columns enter the first dense layer as they are; ``"auto"`` (default):
    periodic unless ``numeric="ple"`` (already a per-feature encoding). Evidence:
    ``benchmarks/bench_quality.py`` (quality section of ``benchmarks/RESULTS.md``).

    ``ensemble``: ``"independent"``: the ``n_members`` networks are whole networks trained at
    once, one per worker, each with its own seed and early stopping (``validation_scores_`` and
    ``loss_curve_`` are the first member's, ``member_n_iter_`` every member's epochs,
    ``best_validation_score_`` the ensemble's); ``"shared"``: one network whose members share
    the input encoding, trained together; ``"auto"`` (default): independent on small data,
    shared beyond (see the module docstring). ``ensemble_`` says which a fit used.
    """

    _loss = "log_loss"
    _validation_scoring = "neg_log_loss"  # (see _BaseTabular)

    # scikit-learn reads the parameters from the signature: spelled out, same defaults.
    def __init__(self, *, class_weight=None, categorical=None, numeric="quantile_normal",
                 n_bins=48, numeric_embedding="auto", hidden_layer_sizes=(128, 128), dropout="auto", layer_norm=False,
                 n_members=2, learning_rate_init=2e-3, weight_decay=1e-4, warmup_fraction=0.02,
                 clip_norm=1.0, batch_size="auto", max_iter=60, early_stopping="auto",
                 validation_fraction=0.1, n_iter_no_change=3, tol=1e-3, ema_decay=0.5,
                 max_categories=1000,
                 min_frequency=5, sync="auto", local_steps="auto", replicas="auto", rounds_ahead=4,
                 min_block_rows=8_192, ensemble="auto", random_state=None, verbose=False):
        kwargs = dict(locals())
        kwargs.pop("self")
        kwargs.pop("__class__", None)
        self.class_weight = kwargs.pop("class_weight")
        super().__init__(**kwargs)

    def _class_weights(self, counts: np.ndarray, classes: np.ndarray) -> np.ndarray | None:
        cw = self.class_weight
        if cw is None:
            return None
        if cw == "balanced":
            return counts.sum() / (len(classes) * np.maximum(counts, 1))
        if isinstance(cw, dict):
            unknown = set(cw) - set(classes.tolist())
            if unknown:
                raise ValueError(f"class_weight names labels {sorted(unknown)!r} that are not "
                                 f"among the classes {classes.tolist()}")
            return np.array([float(cw.get(c, 1.0)) for c in classes.tolist()])
        raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {cw!r}")

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(n, n_classes)`` (members' probabilities averaged)."""
        out = self._outputs(X)
        if self.n_outputs_ == 1:
            if _is_dask(out):
                return out.map_blocks(_binary_proba, chunks=(out.chunks[0], (2,)),
                                      dtype=out.dtype)
            return _binary_proba(out)
        return out

    def predict(self, X: Any) -> Any:
        """Predicted labels ``(n,)``; a lazy dask Array for dask input."""
        proba = self.predict_proba(X)
        idx = proba.argmax(axis=1)
        if _is_dask(idx):
            return idx.map_blocks(_take_labels, classes=self.classes_, dtype=self.classes_.dtype)
        return self.classes_[idx]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (weighted by ``sample_weight`` when given)."""
        pred, y, w = _compute_if_dask(self.predict(X), y, sample_weight)
        return float(accuracy_score(y, pred, sample_weight=w))


class TabularRegressor(RegressorMixin, _BaseTabular):
    """Regressor (squared error) for raw tabular frames; the target is standardised inside
    ``fit`` and predictions are in its own units. See the module docstring."""

    _loss = "squared_error"

    def predict(self, X: Any) -> Any:
        """Predictions ``(n,)`` in the target's units; a lazy dask Array for dask input."""
        out = self._outputs(X)[:, 0]
        return out * np.float32(self.target_scale_) + np.float32(self.target_mean_)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² (weighted by ``sample_weight`` when given)."""
        pred, y, w = _compute_if_dask(self.predict(X), y, sample_weight)
        return float(r2_score(y, pred, sample_weight=w))
