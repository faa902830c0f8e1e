"""``_BaseTabular``: the fit/predict machinery shared by :class:`pipeline.tabular.TabularClassifier`
and :class:`pipeline.tabular.TabularRegressor` (inputs to dask frames, parameter checks,
preprocessing, blocks, training, prediction, save and ONNX export). See
:mod:`pipeline.tabular` for what ``fit`` does and why the defaults are what they are.
"""

from __future__ import annotations

import dataclasses
import numbers
import time
from typing import Any

import dask
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from . import optim
from .blocks import join_blocks, split_blocks, to_blocks
from .cluster import current_client
from .mlp_config import local_steps_for, replicas_for
from .nn import IndependentMembers
from .predict_blocks import is_dask as _is_dask
from .tabular_blocks import _block_stats, _finish_block, _forward_partition, _strip_weights
from .tabular_net import build_network, weight_mask
from .tabular_prep import TabularPreprocessor
from .train import TrainConfig
from .train.members import member_seeds

_WEIGHT = "__pipeline_sample_weight__"
_LABEL = "__pipeline_label__"
_ROWS_PER_PARTITION = 16_384  # pandas input: partitions by size only (never by cluster)
# ensemble="auto": independent members (each a whole network on its own worker, the rows
# joined into one block that every member's worker holds a copy of) up to this much data
INDEPENDENT_MAX_ROWS, INDEPENDENT_MAX_BYTES = 65_536, 64 * 2**20

# local SGD over replicas (several blocks): the outer Nesterov step of MLPClassifier's defaults
OUTER_LEARNING_RATE, OUTER_MOMENTUM = 1.0, 0.5


def _small(n_rows: int, n_features: int) -> bool:
    """Whether independent members may each hold a copy of all the rows (float32)."""
    return n_rows <= INDEPENDENT_MAX_ROWS and 4 * n_rows * n_features <= INDEPENDENT_MAX_BYTES


def _member_dir(checkpoint_dir: str, i: int) -> str:
    """Where independent member ``i`` keeps its checkpoints, under the fit's directory."""
    import os

    return os.path.join(os.fspath(checkpoint_dir), f"member-{i}")


def _pandas_partitions(n_rows: int) -> int:
    """How many equal partitions a pandas frame of ``n_rows`` is cut into: one below
    :data:`_ROWS_PER_PARTITION` rows, else the largest power of two that leaves at least that
    many rows in each, and at least 2 (halves of 8,192 rows or more: the blocks'
    ``min_block_rows``), so data from 16,384 rows trains on two workers, not one. A power of
    two splits evenly over 1, 2, 4, ... workers: the replicas of local SGD (one per worker)
    get equal shares (3 blocks over 2 workers train at the pace of the one with 2)."""
    k = n_rows // _ROWS_PER_PARTITION
    return 1 if k < 1 else max(2, 1 << (k.bit_length() - 1))


def _pandas_frame(X: Any, y: Any, sample_weight: Any) -> pd.DataFrame:
    """A copy of in-memory ``X`` (pandas, NumPy, ...) as a pandas frame, with the label and (if
    given) the sample weights (float64) as its last columns."""
    frame = pd.DataFrame(X).copy()
    frame[_LABEL] = np.asarray(y)
    if sample_weight is not None:
        frame[_WEIGHT] = np.asarray(sample_weight, dtype=np.float64)
    return frame


class _BaseTabular(BaseEstimator):
    """Shared fit/predict machinery; see :mod:`pipeline.tabular`."""

    _loss = "squared_error"

    # (the regressor's signature; the classifier spells out its own)
    def __init__(self, *, categorical=None, numeric="standard", n_bins=48,
                 numeric_embedding="auto", hidden_layer_sizes=(128, 128), dropout="auto", layer_norm=False, n_members=2,
                 learning_rate_init=2e-3, weight_decay=1e-4, warmup_fraction=0.02,
                 clip_norm=1.0, batch_size="auto", max_iter=60, early_stopping="auto",
                 validation_fraction=0.1, n_iter_no_change=4, tol=1e-3, ema_decay=0.5,
                 max_categories=1000,
                 min_frequency=5, sync="auto", local_steps="auto", replicas="auto", rounds_ahead=4,
                 min_block_rows=8_192, ensemble="auto", random_state=None, verbose=False):
        self.categorical = categorical
        self.numeric = numeric
        self.n_bins = n_bins
        self.numeric_embedding = numeric_embedding
        self.hidden_layer_sizes = hidden_layer_sizes
        self.dropout = dropout
        self.layer_norm = layer_norm
        self.n_members = n_members
        self.learning_rate_init = learning_rate_init
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.clip_norm = clip_norm
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.ema_decay = ema_decay
        self.max_categories = max_categories
        self.min_frequency = min_frequency
        self.sync = sync
        self.local_steps = local_steps
        self.replicas = replicas
        self.rounds_ahead = rounds_ahead
        self.min_block_rows = min_block_rows
        self.ensemble = ensemble
        self.random_state = random_state
        self.verbose = verbose

    # ---- inputs --------------------------------------------------------------------------

    def _frames(self, X: Any, y: Any, sample_weight: Any) -> tuple[Any, Any, bool]:
        """``(dask frame of features [+ weight column], dask label series, weighted)``, with
        the label and weights partitioned exactly as ``X``."""
        import dask.dataframe as dd

        weighted = sample_weight is not None
        if _is_dask(X):
            if not isinstance(X, dd.DataFrame):
                raise TypeError(f"X must be a DataFrame of raw columns, got {type(X).__name__}")
            if isinstance(y, str):
                y = X[y] if y in X.columns else None
            if y is None or not _is_dask(y):
                raise TypeError("with a dask DataFrame X, y must be a dask Series partitioned "
                                "as X (or the name of a column of X)")
            X = X.assign(**{_LABEL: y})
            if weighted:
                if not _is_dask(sample_weight):
                    raise TypeError("with a dask DataFrame X, sample_weight must be a dask "
                                    "Series partitioned as X")
                X = X.assign(**{_WEIGHT: sample_weight})
        else:
            X = _pandas_frame(X, y, sample_weight)
            X = dd.from_pandas(X, npartitions=_pandas_partitions(len(X)), sort=False).persist()
        if weighted:
            X = X.assign(**{_WEIGHT: X[_WEIGHT].astype("float64")})
        return X, X[_LABEL], weighted

    def _check_params(self) -> None:
        for name, low in (("n_members", 1), ("max_iter", 1), ("n_iter_no_change", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        d = self.dropout
        if not (d == "auto" if isinstance(d, str) else
                isinstance(d, numbers.Real) and not isinstance(d, bool) and 0 <= d < 1):
            raise ValueError(f"dropout must be 'auto' or in [0, 1), got {d!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got "
                             f"{self.validation_fraction!r}")
        e = self.ema_decay
        if isinstance(e, bool) or not isinstance(e, numbers.Real) or not 0 <= e < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {e!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if self.ensemble not in ("auto", "shared", "independent"):
            raise ValueError(f"ensemble must be 'auto', 'shared' or 'independent', got "
                             f"{self.ensemble!r}")

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return int(np.random.SeedSequence().entropy % (2**31))
        if isinstance(rs, numbers.Integral):
            return int(rs)
        raise ValueError(f"random_state must be an int or None, got {rs!r}")

    def _batch_size(self, n: int) -> int:
        if self.batch_size == "auto":
            # n/8 in [32, 256]: small data needs steps, not epochs (breast_cancer, 400 rows:
            # batch 256 left 2 steps an epoch); n/32 up to 1024 from 8k rows: large data needs
            # fewer synchronised rounds
            return int(min(n, max(min(256, max(32, n // 8)), min(1024, n // 32))))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, numbers.Integral) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be 'auto' or a positive int, got "
                             f"{self.batch_size!r}")
        return int(min(n, self.batch_size))

    # ---- fitting -------------------------------------------------------------------------

    def _class_weights(self, counts: np.ndarray, classes: np.ndarray) -> np.ndarray | None:
        return None

    def _weighting(self, stats: np.ndarray, classes: np.ndarray | None) -> tuple[
            tuple[float, float] | None, np.ndarray | None, float]:
        """``(target, class_weights, weight_scale)`` from the blocks' summed
        :func:`~pipeline.tabular_blocks._block_stats`: the regression target's mean and scale,
        the class weights, and the mean row weight the weights are divided by."""
        target, class_weights = None, None
        if classes is None:
            n, s, s2, wsum = stats
            mean = s / n
            scale = float(np.sqrt(max(s2 / n - mean * mean, 0.0))) or 1.0
            target = (float(mean), scale)
            weight_scale = wsum / n
        else:
            n_classes = len(classes)
            counts, wsums = stats[:n_classes], stats[n_classes:]
            class_weights = self._class_weights(counts, classes)
            cw = np.ones(n_classes) if class_weights is None else class_weights
            weight_scale = float(np.sum(cw * wsums) / np.sum(counts))
        if not weight_scale > 0:
            raise ValueError("sample_weight sums to zero (or less): nothing to learn from")
        return target, class_weights, weight_scale

    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, client: Any = None,
            validation_data: tuple[Any, Any] | None = None, checkpoint_dir: str | None = None,
            checkpoint_every: int = 1, resume: bool = False, preprocessor: Any = None):
        """Learn the preprocessing and train the networks on ``X`` (raw columns), ``y``.

        ``validation_data=(X_valid, y_valid)`` (raw columns) replaces the held-out
        ``validation_fraction`` for early stopping. ``checkpoint_dir``: a checkpoint every
        ``checkpoint_every`` epochs; ``resume=True`` continues from the latest one, bit for bit
        (the preprocessing is learned again from the same data, and a checkpoint of another
        run, configuration or preprocessing is refused). ``preprocessor`` is ignored (the
        estimator learns its own), accepted so ``pipeline run`` can call every estimator alike.
        """
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")
        self._check_params()
        started = time.perf_counter()
        client = current_client(client)
        seed = self._seed()
        if resume and self.random_state is None:  # the seed the checkpointed run drew
            from .checkpoint import Checkpointer
            from .registry import saveable_classes

            seed = (Checkpointer.saved_seed(checkpoint_dir, saveable_classes())
                    or Checkpointer.saved_seed(_member_dir(checkpoint_dir, 0),
                                               saveable_classes()) or seed)
        got = None
        if validation_data is None and not _is_dask(X):  # data in this process: built here
            got = self._blocks_here(client, X, y, sample_weight, seed)
        if got is None:
            got = self._blocks_on_workers(client, X, y, sample_weight, validation_data, seed)
        prep, blocks, valid, target, _, n_partitions, early, ensemble, features = got
        classes = blocks.classes
        n_classes = None if classes is None else len(classes)
        self.dropout_ = self._dropout(early, ensemble)
        self.periodic_order_ = "halves"  # (a model saved before it existed: see _network_params)
        loss = self._loss if n_classes is None else (
            "binary_log_loss" if n_classes == 2 else "log_loss")
        k = int(self.n_members)
        network = self._network(prep.layout_, blocks.n_outputs, loss, ensemble)
        # what each run trains: the whole network, or one independent member's
        model = network.network if ensemble == "independent" else network
        batch_size = self._batch_size(blocks.n_samples)
        config = TrainConfig(
            solver="adamw", learning_rate="cosine", learning_rate_init=self.learning_rate_init,
            alpha=0.0, batch_size=batch_size, max_iter=self.max_iter,
            tol=self.tol, n_iter_no_change=self.n_iter_no_change,
            ema_decay=float(self.ema_decay),
            early_stopping=early, random_state=seed, rounds_ahead=self.rounds_ahead,
            scheduled_rate=True, validation_scoring=self._validation_scoring,
            **self._sync_params(len(blocks.futures), batch_size, client))
        from .train import make_strategy

        total = make_strategy(config, optim.sgd()).steps_per_epoch(blocks.rows) * self.max_iter
        optimizer = optim.from_sklearn(
            "adamw", learning_rate_init=self.learning_rate_init, learning_rate="cosine",
            weight_decay=self.weight_decay, clip_norm=self.clip_norm,
            warmup_steps=round(self.warmup_fraction * total), total_steps=total,
            weight_mask=weight_mask(model) if self.weight_decay else None,
            fused=True)  # the same AdamW in fewer passes (pipeline.optim.fused)
        configs = [config] if ensemble == "shared" else [
            dataclasses.replace(config, random_state=s) for s in member_seeds(seed, k)]
        runs = [self._run(cfg, i if ensemble == "independent" else None, model, blocks, prep,
                          checkpoint_dir, checkpoint_every, resume)
                for i, cfg in enumerate(configs)]
        from .progress import report
        from .train.members import train_members

        with report(client, type(self).__name__, self.verbose):  # verbose>0: a line per epoch
            results = train_members(client, blocks, runs, model=model, optimizer=optimizer,
                                    validation=valid,
                                    # one block: every epoch in one task (same bits, no client
                                    # round trips between epochs); verbose wants its line per
                                    # epoch live
                                    fuse_epochs=not self.verbose,
                                    # the members' validation outputs, for the ensemble's
                                    # score without another round
                                    valid_outputs=early and ensemble == "independent")
        result = results[0]
        self.preprocessor_ = prep
        self.params_ = np.concatenate([np.asarray(r.params) for r in results])
        self.ensemble_ = ensemble
        self.n_outputs_ = int(blocks.n_outputs)
        self.loss_name_ = loss
        if classes is not None:
            self.classes_ = classes
        if target is not None:
            self.target_mean_, self.target_scale_ = target
        # (independent members: the first member's curves and scores, n_iter_ the longest
        # run, best_validation_score_ the ensemble's on the validation data)
        self.n_iter_ = max(r.n_iter for r in results)
        self.member_n_iter_ = [r.n_iter for r in results]
        self.loss_curve_ = list(result.state.loss_curve)
        self.validation_scores_ = list(result.state.validation_scores) or None
        self.early_stopping_ = early
        self.best_validation_score_ = result.state.best_validation_score if early else None
        if early and ensemble == "independent":  # the ensemble's, not the first member's
            from .train.members import ensemble_score

            self.best_validation_score_ = ensemble_score(client, valid, self.params_, network,
                                                         self._validation_scoring, results)
        self.n_features_in_ = len(features)
        self.feature_names_in_ = np.asarray([str(c) for c in features], dtype=object)
        self.train_summary_ = {"seconds": max(r.seconds for r in results),
                               "rounds": sum(r.rounds for r in results),
                               "fit_seconds": time.perf_counter() - started,
                               "n_blocks": len(blocks.futures),
                               "n_partitions": n_partitions,
                               "n_samples": blocks.n_samples,
                               "stopped_early": all(r.stopped_early for r in results),
                               "ensemble": ensemble,
                               "n_params": network.n_params, "sync": config.sync,
                               "replicas": config.replicas, "local_steps": config.local_steps}
        self._model = network
        return self

    def _needs_stats(self, weighted: bool, classification: bool) -> bool:
        """Unweighted classification without class weights: the loss needs nothing from the
        blocks (no target moments, every row weighs 1) and finishing would leave them as they
        are, so neither the statistics nor the finishing pass are run."""
        return weighted or not classification or \
            getattr(self, "class_weight", None) is not None

    def _blocks_here(self, client: Any, X: Any, y: Any, sample_weight: Any,
                     seed: int) -> tuple | None:
        """:meth:`_blocks_on_workers` for a pandas frame (or arrays) whose members each hold
        every row, computed in this process by the same functions on the same partitions
        (:mod:`pipeline.tabular_local`); ``None`` when the blocks would be trained where they
        lie, spread over the workers (a shared ensemble over several blocks)."""
        from .tabular_local import local_blocks, partitions

        n_parts = _pandas_partitions(len(X))
        if n_parts > 1 and (len(X) > INDEPENDENT_MAX_ROWS or int(self.n_members) == 1
                            or self.ensemble == "shared"):
            return None  # several blocks, not joined: built where they will train
        frame = _pandas_frame(X, y, sample_weight)
        weighted = sample_weight is not None
        parts = partitions(frame, n_parts)
        features = [c for c in parts[0].columns if c not in (_LABEL, _WEIGHT)]
        prep = self._preprocessor()
        n = len(frame)
        prep.fit_partitions([p[features] for p in parts])
        width = len(prep.get_feature_names_out())
        ensemble = self._ensemble(n, width)
        # (several blocks: here only when they are joined for the members)
        join = ensemble == "independent" and _small(n, width)
        if len(parts) > 1 and not join:
            return None
        classification = self._loss != "squared_error"
        early = self._early_stopping(n, False)
        got = local_blocks(
            client, parts, features, prep, label=_LABEL, weight=_WEIGHT if weighted else None,
            classification=classification, min_block_rows=self.min_block_rows,
            weighting=self._weighting, needs_stats=self._needs_stats(weighted, classification),
            early=early, fraction=self.validation_fraction, seed=seed, join=join)
        return (prep, got.blocks, got.valid, got.target, got.class_weights, got.n_blocks,
                early, ensemble, features)

    def _preprocessor(self) -> TabularPreprocessor:
        return TabularPreprocessor(categorical=self.categorical, numeric=self.numeric,
                                   n_bins=self.n_bins, max_categories=self.max_categories,
                                   min_frequency=self.min_frequency, add_indicator=True)

    def _blocks_on_workers(self, client: Any, X: Any, y: Any, sample_weight: Any,
                           validation_data: Any, seed: int) -> tuple:
        """The preprocessing learned and the training (and validation) blocks built in tasks
        on the workers: ``(prep, blocks, valid, target, class_weights, n_partitions, early,
        ensemble, features)``."""
        classification = self._loss != "squared_error"
        frame, label, weighted = self._frames(X, y, sample_weight)
        features = [c for c in frame.columns if c not in (_LABEL, _WEIGHT)]
        prep = self._preprocessor()
        prep.fit(frame[features])
        Xt = prep.transform(frame[features])
        if weighted:
            Xt = Xt.assign(**{_WEIGHT: frame[_WEIGHT].astype("float32")})
        blocks = to_blocks(client, Xt, label, classification=classification, dtype="float32",
                           min_block_rows=self.min_block_rows, name="tabular-block")
        # the raw frame (a pandas one persisted on the workers) is not needed once the blocks
        # exist: released now, not held through training (the blocks keep their lineage)
        del frame, label, Xt
        classes = blocks.classes
        n_classes = None if classes is None else len(classes)
        target, class_weights = None, None
        if self._needs_stats(weighted, classification):
            stats = np.sum(client.gather(client.map(_block_stats, blocks.futures,
                                                    weighted=weighted, n_classes=n_classes)),
                           axis=0)
            target, class_weights, weight_scale = self._weighting(stats, classes)
            futures = client.map(_finish_block, blocks.futures, weighted=weighted,
                                 class_weights=class_weights, weight_scale=weight_scale,
                                 target=target, key=[f"finish-{f.key}" for f in blocks.futures])
            blocks = blocks._replace(futures=futures)
        n_features = blocks.n_features - (1 if weighted else 0)
        blocks = blocks._replace(n_features=n_features)
        has_weights = weighted or class_weights is not None
        ensemble = self._ensemble(blocks.n_samples, blocks.n_features)
        n_partitions = len(blocks.futures)
        valid = None
        early = self._early_stopping(blocks.n_samples, validation_data is not None)
        if early and validation_data is not None:
            vframe, vlabel, _ = self._frames(*validation_data, None)
            vblocks = to_blocks(client, prep.transform(vframe[features]), vlabel,
                                classification=classification, classes=classes,
                                dtype="float32", min_block_rows=self.min_block_rows,
                                name="tabular-valid")
            valid = vblocks if target is None else vblocks._replace(futures=client.map(
                _finish_block, vblocks.futures, weighted=False, class_weights=None,
                weight_scale=1.0, target=target,
                key=[f"finish-{f.key}" for f in vblocks.futures]))
        elif early:
            blocks, valid = split_blocks(client, blocks, self.validation_fraction, seed)
            if has_weights:
                valid = valid._replace(futures=client.map(
                    _strip_weights, valid.futures, n_outputs=blocks.n_outputs,
                    key=[f"strip-{f.key}" for f in valid.futures]))
        if ensemble == "independent" and _small(blocks.n_samples, blocks.n_features):
            blocks = join_blocks(client, blocks, "tabular-joined")  # each member sees every row
        return (prep, blocks, valid, target, class_weights, n_partitions, early, ensemble,
                features)

    # Early stopping's validation score: the classifier's is minus the validation log loss of
    # the ensemble's probabilities, LightGBM's and xgboost's default early-stopping metric.
    # Accuracy (scikit-learn's) sits at the majority rate on imbalanced data: on MplsStops
    # (12% positive) it never beat the first epoch by ``tol``, so two seeds of three stopped
    # after 7 epochs and restored an epoch that predicted the majority class (ROC AUC
    # 0.60-0.64 against LightGBM's 0.80). The regressor's is R² (the squared error's order).
    _validation_scoring = "score"

    def _early_stopping(self, n_samples: int, given: bool) -> bool:
        """``"auto"``: stop early (and restore the best epoch) when the validation data are
        given or the held-out split has at least 200 rows. On a few dozen rows a validation
        accuracy ties early and keeps an undertrained epoch (breast_cancer, 30% test: 0.933
        with it, 0.965 without); smaller data trains the full cosine schedule, regularised by
        dropout, weight decay and the ensemble average."""
        if self.early_stopping == "auto":
            return given or n_samples * self.validation_fraction >= 200
        return bool(self.early_stopping)

    def _dropout(self, early: bool, ensemble: str) -> float:
        """``"auto"``: none for independent members that stop early (a deep ensemble on small
        data: each member's own seed, early stopping and the average regularise, and the mask
        is ~10% of a step), 0.1 otherwise: without early stopping (small data trains the whole
        schedule, and dropout is the regulariser against over-fitting) and for a shared
        ensemble (larger data: members trained together on one encoding). Evidence, default
        fits (``benchmarks/results/evidence/tabular_dropout.md``): on the 7 quality datasets
        (independent, stopping early; 5 seeds) dropout 0 against 0.1 was 8-24% sooner on 6,
        diamonds RMSE 583 -> 556, the other metrics within their spread; on scikit-learn's
        small sets (no early stopping) 0.1 was better: diabetes RMSE 63.6 against 67.5, digits
        0.967 against 0.963; on 268,800 synthetic rows (shared; 2 seeds) 0.1 was better on
        every metric and sooner (8.0 against 9.5 epochs)."""
        if isinstance(self.dropout, str):  # "auto" (checked by _check_params)
            return 0.0 if early and ensemble == "independent" else 0.1
        return float(self.dropout)

    def _sync_params(self, n_blocks: int, batch_size: int, client: Any) -> dict[str, Any]:
        """The synchronisation part of the run's :class:`~pipeline.train.TrainConfig`.

        ``sync="auto"``: one block trains alone, so local SGD with one local epoch per round
        *is* plain mini-batch training, every epoch in one task (the fused path). Several
        blocks train as :class:`~pipeline.MLPClassifier` does by default: local SGD over
        ``replicas`` (``"auto"``: one per worker), each a contiguous run of blocks trained as
        one stream of full mini-batches on its worker, averaged every ``local_steps``
        (``"auto"``: ~16k rows per replica) with an outer Nesterov step (rate 1, momentum
        0.5). Exact synchronous steps (``sync="gradient"``) cost a round per mini-batch and
        split every mini-batch over the blocks: on 268,800 rows of mixed columns in 16 blocks
        an epoch took 9.5-12.4 s against ~3.1 s, at the same test accuracy
        (``benchmarks/bench_tabular_scale.py``).
        """
        sync = self.sync
        if sync == "auto":
            sync = "average"
        if sync == "average" and n_blocks == 1 and self.local_steps in ("auto", None):
            # sequential mini-batch training: the fused one-task path, whatever R is
            return {"sync": "average", "local_steps": None}
        if sync != "average":
            return {"sync": sync, "local_steps": None}
        return {"sync": "average", "replicas": replicas_for(self.replicas, client),
                "local_steps": local_steps_for(self.local_steps, batch_size),
                "outer_learning_rate": OUTER_LEARNING_RATE, "outer_momentum": OUTER_MOMENTUM}

    def _run(self, config: TrainConfig, member: int | None, model: Any, blocks: Any, prep: Any,
             checkpoint_dir: str | None, checkpoint_every: int, resume: bool) -> dict[str, Any]:
        """One training run's arguments to :func:`pipeline.train.train` (``member``: which
        independent member, with its checkpoints in ``member-<i>/`` under ``checkpoint_dir``;
        ``None``: the one run of a shared ensemble)."""
        name = type(self).__name__ if member is None else f"{type(self).__name__}-member{member}"
        state, on_epoch_end = None, None
        if checkpoint_dir is not None:
            from .checkpoint import Checkpointer
            from .registry import saveable_classes

            ckpt = Checkpointer(
                checkpoint_dir if member is None else _member_dir(checkpoint_dir, member),
                every=checkpoint_every, estimator=self, config=config, spec=model,
                blocks=blocks, registry=saveable_classes(), preprocessor=prep)
            state = ckpt.restore() if resume else None
            on_epoch_end = ckpt.save
        return {"config": config, "state": state, "on_epoch_end": on_epoch_end,
                "run_name": name}

    def _ensemble(self, n_rows: int, n_features: int) -> str:
        """How the ``n_members`` networks are built and trained. ``"shared"``: one network whose
        members share the input encoding (periodic and categorical embeddings), trained
        together in the same steps (TabM's way); on several blocks by local SGD over one
        replica per worker. ``"independent"``: ``n_members`` whole networks, each trained on
        its own worker at the same time (:mod:`pipeline.train.members`), a deep ensemble; on
        small data (:data:`INDEPENDENT_MAX_ROWS` rows and :data:`INDEPENDENT_MAX_BYTES` of
        features) the blocks are joined into one first, so each member trains on every row
        as sequential mini-batches. ``"auto"``: independent on small data, shared beyond
        (``benchmarks/results/evidence/tabular_independent_members.md``)."""
        if int(self.n_members) == 1:
            return "shared"  # (the same network either way)
        if self.ensemble == "auto":
            return "independent" if _small(n_rows, n_features) else "shared"
        return self.ensemble

    def _network(self, layout: Any, n_outputs: int, loss: str, ensemble: str) -> Any:
        """The fitted model's network: ``n_members`` members sharing their input encoding, or
        (``ensemble="independent"``) that many one-member networks side by side."""
        independent = ensemble == "independent"
        net = build_network(layout, n_outputs, loss,
                            **self._network_params(1 if independent else None))
        return IndependentMembers(net, int(self.n_members)) if independent else net

    def _network_params(self, n_members: int | None = None) -> dict[str, Any]:
        hidden = self.hidden_layer_sizes
        hidden = (int(hidden),) if isinstance(hidden, numbers.Integral) else tuple(
            int(h) for h in hidden)
        # (the fitted rate, "auto" resolved; a model saved before dropout_ existed has a number)
        return {"hidden_layer_sizes": hidden,
                "dropout": float(getattr(self, "dropout_", self.dropout)),
                "layer_norm": bool(self.layer_norm),
                "n_members": int(self.n_members if n_members is None else n_members),
                "numeric_embedding": getattr(self, "numeric_embedding", "none"),
                # a model saved when each periodic frequency count was a layer of its own
                # keeps that layer's output order (the same for one count)
                "periodic_order": getattr(self, "periodic_order_", "groups")}

    # ---- prediction ----------------------------------------------------------------------

    @property
    def model_(self) -> Any:
        """The network (rebuilt from the preprocessor's layout and the hyperparameters after
        :func:`pipeline.load`; the weights are ``params_``)."""
        if not hasattr(self, "params_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. "
                                 "Call 'fit' first.")
        if getattr(self, "_model", None) is None:
            self._model = self._network(self.preprocessor_.layout_, self.n_outputs_,
                                        self.loss_name_, getattr(self, "ensemble_", "shared"))
        return self._model

    def _outputs(self, X: Any) -> Any:
        """Mean network outputs ``(n, n_outputs)``: lazy (one task per partition) for dask."""
        model = self.model_
        plan = self.preprocessor_._plan()
        features = list(self.preprocessor_.numeric_features_) + list(
            self.preprocessor_.categorical_features_)
        if not _is_dask(X):
            part = pd.DataFrame(X)
            self._check_columns(part.columns, features)
            return _forward_partition(part, plan, model, self.params_)
        import dask.array as da

        self._check_columns(X.columns, features)
        X = X[features]
        parts = [da.from_delayed(dask.delayed(_forward_partition, pure=True)(
                     p, plan, model, self.params_),
                 shape=(np.nan, self.n_outputs_), dtype=np.float32)
                 for p in X.to_delayed()]
        return da.concatenate(parts, axis=0)

    def _check_columns(self, columns: Any, features: list[Any]) -> None:
        missing = [c for c in features if c not in set(columns)]
        if missing:
            raise ValueError(f"X lacks the feature column(s) {missing} the model was "
                             "trained on")

    def save(self, path: str) -> str:
        """Save to the directory ``path`` without pickle (:func:`pipeline.load` reads it back);
        the network is rebuilt from the saved hyperparameters and preprocessor."""
        from .registry import saveable_classes
        from .serialization import write_model

        self.model_  # noqa: B018 - fitted check
        return write_model(path, self, saveable_classes())

    def export_onnx(self, path: str, **kwargs: Any) -> Any:
        """Write one ONNX graph from the raw columns (this estimator's own preprocessing, then
        the network) to the outputs (:mod:`pipeline.export.onnx_tabular`); ``quantize="int8"``,
        ``validation=``, ``max_accuracy_drop=``, ``on_drop=``: see
        :func:`pipeline.export.export_onnx`. There is no ``preprocessor=``: the graph already
        holds ``preprocessor_``."""
        if kwargs.get("preprocessor") is not None:
            raise ValueError(f"{type(self).__name__}.export_onnx takes no preprocessor: the "
                             "estimator learns its own (preprocessor_), which the graph holds")
        from .export import export_onnx

        return export_onnx(self, path, **kwargs)
