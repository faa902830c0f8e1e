"""The fit/predict machinery the MLP estimators share (:class:`_BaseMLP`): parameters with
scikit-learn's names and defaults, ``fit`` over the functional training core
(:func:`pipeline.train.train`) with checkpoints and validation, ``partial_fit`` continuing the
optimizer state, and lazy prediction partition by partition. The public classes are in
:mod:`pipeline.estimators`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from . import nn, optim
from .backend import to_host
from .blocks import BlockSet, split_blocks
from .cluster import current_client
from .events import ensure_monitor
from .mlp_config import (
    dropout_rates,
    hidden_sizes,
    inner_optimizer,
    seed_of,
    train_config,
    weight_mask,
)
from .predict_blocks import map_partitions
from .progress import report
from .registry import saveable_classes
from .store_blocks import releasing
from .train import TrainConfig, TrainResult, TrainState, evaluate, initial_state, train

__all__ = ["_BaseMLP"]


class _BaseMLP(BaseEstimator):
    """Shared fit/predict machinery. Parameters follow ``sklearn.neural_network``."""

    _loss: str = "squared_error"

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 1e-4,
        batch_size: int | str | None = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 1e-3,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: int | None = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        max_fun: int = 15000,
        sync: str = "average",
        local_steps: int | str | None = "auto",
        outer_learning_rate: float = 1.0,
        outer_momentum: float = 0.5,
        balance: str = "none",
        rounds_ahead: int = 4,
        split_every: int = 8,
        min_block_rows: int | None = 16_384,
        dtype: str = "float32",
        weight_decay: float = 0.0,
        warmup_fraction: float = 0.0,
        lr_scaling: str | None = None,
        reference_batch_size: int = 256,
        clip_norm: float | None = None,
        dropout: float | Sequence[float] = 0.0,
        replicas: int | str | None = "auto",
        block_store: str = "memory",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.sync = sync
        self.local_steps = local_steps
        self.outer_learning_rate = outer_learning_rate
        self.outer_momentum = outer_momentum
        self.balance = balance
        self.rounds_ahead = rounds_ahead
        self.split_every = split_every
        self.min_block_rows = min_block_rows
        self.dtype = dtype
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.lr_scaling = lr_scaling
        self.reference_batch_size = reference_batch_size
        self.clip_norm = clip_norm
        self.dropout = dropout
        self.replicas = replicas
        self.block_store = block_store

    # ------------------------------------------------------------------ configuration ---------

    def _hidden(self) -> tuple[int, ...]:
        return hidden_sizes(self.hidden_layer_sizes)

    def _seed(self) -> int:
        return seed_of(self.random_state)

    def _train_config(self, n_samples: int, seed: int, client: Any = None) -> TrainConfig:
        return train_config(self, n_samples, seed, client)

    def _optimizer(self, config: TrainConfig, spec: nn.MLPSpec,
                   rows: Sequence[int]) -> optim.GradientTransformation | None:
        return inner_optimizer(self, config, rows, self._weight_mask(spec))

    def _weight_mask(self, spec: Any) -> np.ndarray:
        return weight_mask(spec)

    def _dropout(self) -> tuple[float, ...]:
        return dropout_rates(self.dropout, len(self._hidden()))

    def _spec(self, n_features: int, n_outputs: int) -> nn.MLPSpec:
        return nn.MLPSpec((n_features, *self._hidden(), n_outputs), self.activation, self._loss,
                          self._dropout())

    # ------------------------------------------------------------------ fitting ---------------

    def _blocks(self, client: Any, X: Any, y: Any, classes: Any = None) -> BlockSet:
        raise NotImplementedError

    @releasing
    def fit(
        self,
        X: Any,
        y: Any,
        *,
        validation_data: tuple[Any, Any] | None = None,
        client: Any = None,
        checkpoint_dir: str | None = None,
        checkpoint_every: int = 1,
        resume: bool = False,
        preprocessor: Any = None,
    ) -> _BaseMLP:
        """Train on ``X``, ``y`` (dask or in-memory), data-parallel on the current cluster.

        Parameters
        ----------
        validation_data : (X_valid, y_valid), optional
            Scored after every epoch (``validation_scores_``); used by ``early_stopping``.
            Without it, ``early_stopping=True`` holds out ``validation_fraction`` of each block.
        checkpoint_dir, checkpoint_every, resume
            Write a checkpoint every ``checkpoint_every`` epochs; ``resume=True`` continues from
            the latest one exactly (see :mod:`pipeline.checkpoint`).
        preprocessor : fitted Preprocessor, optional
            Stored with checkpoints so a resumed run can check the data schema.
        """
        fit_started = time.perf_counter()  # fit time = the whole call (report and CLI)
        client = current_client(client)
        ensure_monitor(client)
        seed = self._seed()
        if resume and checkpoint_dir is not None and self.random_state is None:
            from .checkpoint import Checkpointer

            seed = Checkpointer.saved_seed(checkpoint_dir, saveable_classes()) or seed
        blocks = self._blocks(client, X, y)
        valid = None
        if validation_data is not None:
            valid = self._blocks(client, *validation_data, classes=blocks.classes)
        elif self.early_stopping:
            if not 0 < self.validation_fraction < 1:
                raise ValueError("validation_fraction must be in (0, 1)")
            blocks, valid = split_blocks(client, blocks, self.validation_fraction, seed)
        config = self._train_config(blocks.n_samples, seed, client)
        spec = self._spec(blocks.n_features, blocks.n_outputs)
        params = None
        if self.warm_start and hasattr(self, "params_"):
            if self.params_.shape != (spec.n_params,):
                raise ValueError("warm_start: the network shape changed since the last fit")
            params = self.params_.astype(self.dtype)
        state: TrainState | None = None
        on_epoch_end = None
        if checkpoint_dir is not None:
            from .checkpoint import Checkpointer

            ckpt = Checkpointer(checkpoint_dir, every=checkpoint_every, estimator=self,
                                config=config, spec=spec, blocks=blocks,
                                registry=saveable_classes(), preprocessor=preprocessor)
            if resume:
                state = ckpt.restore()
            on_epoch_end = ckpt.save
        elif resume:
            raise ValueError("resume=True needs checkpoint_dir")
        with report(client, type(self).__name__, self.verbose):  # verbose>0: a line per epoch
            result = train(client, blocks, model=spec, config=config,
                           optimizer=self._optimizer(config, spec, blocks.rows), params=params,
                           validation=valid, state=state, on_epoch_end=on_epoch_end,
                           run_name=type(self).__name__)
        self._set_fitted(result, spec, blocks, X)
        self.train_summary_["fit_seconds"] = time.perf_counter() - fit_started
        if (config.solver != "lbfgs" and not result.stopped_early
                and result.n_iter >= config.max_iter):
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({config.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _partial_fit_blocks(self, client: Any, blocks: BlockSet, X: Any, run_name: str) -> None:
        """One epoch on ``blocks`` continuing the optimizer state, ``n_iter_`` and ``t_`` of the
        previous call, as scikit-learn's ``partial_fit`` does."""
        seed = self._seed()
        config = self._train_config(blocks.n_samples, seed, client)
        if config.solver == "lbfgs":
            raise ValueError("partial_fit is not available for solver='lbfgs' "
                             "(as in scikit-learn); use solver='sgd' or 'adam'")
        spec = self._spec(blocks.n_features, blocks.n_outputs)
        optimizer = self._optimizer(config, spec, blocks.rows)
        previous: TrainState | None = getattr(self, "train_state_", None)
        state = None
        if hasattr(self, "params_"):
            if self.params_.shape != (spec.n_params,):
                raise ValueError("partial_fit: the network shape changed since the last call")
            state = initial_state(self.params_.astype(self.dtype), config, len(blocks.futures),
                                  optimizer)
            if previous is not None and previous.params.shape == self.params_.shape:
                same_blocks = (previous.local_states is not None
                               and state.local_states is not None
                               and len(previous.local_states) == len(state.local_states))
                state = state._replace(
                    opt_state=previous.opt_state if previous.opt_state is not None
                    else state.opt_state,
                    local_states=previous.local_states if same_blocks else state.local_states,
                    outer_state=previous.outer_state, t=previous.t,
                    learning_rate=previous.learning_rate, rounds=previous.rounds,
                    best_loss=previous.best_loss,
                    no_improvement_count=previous.no_improvement_count,
                    best_validation_score=previous.best_validation_score,
                    validation_scores=list(previous.validation_scores))
        if state is not None and previous is not None:
            # the epoch count goes on, so the shuffles are those fit(max_iter=k) would draw
            state = state._replace(epoch=previous.epoch, loss_curve=list(previous.loss_curve))
            config = dataclasses.replace(config, max_iter=previous.epoch + 1)
        result = train(client, blocks, model=spec, config=config, optimizer=optimizer,
                       state=state, run_name=run_name)
        self._set_fitted(result, spec, blocks, X)

    def _set_fitted(self, result: TrainResult, spec: nn.MLPSpec, blocks: BlockSet,
                    X: Any) -> None:
        self._set_run_results(result, blocks)
        self.params_ = to_host(result.params)
        self.spec_ = spec
        layers = nn.unpack(spec, self.params_)
        self.coefs_ = [np.asarray(W) for W, _ in layers]
        self.intercepts_ = [np.asarray(b) for _, b in layers]
        self.n_layers_ = len(spec.layer_sizes)
        self.out_activation_ = {"binary_log_loss": "logistic", "log_loss": "softmax",
                                "squared_error": "identity"}[spec.loss]
        columns = getattr(X, "columns", None)
        if columns is not None:
            self.feature_names_in_ = np.asarray([str(c) for c in columns], dtype=object)

    def _set_run_results(self, result: TrainResult, blocks: BlockSet) -> None:
        """The fitted attributes every network estimator takes from a training run."""
        # what a later partial_fit continues from, saved with the model (scikit-learn keeps its
        # _optimizer): optimizer moments or local-SGD replica states, epoch, t_, stopping state
        self.train_state_ = (result.state._replace(history=[], cursors=None)
                             if result.state.opt_state is not None
                             or result.state.local_states is not None else None)
        self.n_iter_ = result.n_iter
        self.loss_ = result.loss
        self.loss_curve_ = list(result.state.loss_curve)
        self.validation_scores_ = list(result.state.validation_scores) or None
        self.best_loss_ = result.state.best_loss
        self.best_validation_score_ = (result.state.best_validation_score
                                       if self.early_stopping else None)
        self.t_ = result.state.t
        self.n_features_in_ = blocks.n_features
        self.n_outputs_ = blocks.n_outputs
        self.history_ = list(result.history)
        self.train_summary_ = {
            "run_id": result.run_id, "seconds": result.seconds, "rounds": result.rounds,
            "retries": result.retries, "recovery_seconds": result.recovery_seconds,
            "n_partitions": len(blocks.futures),
            "n_samples": blocks.n_samples, "stopped_early": result.stopped_early,
        }
        self.optimizer_state_ = result.state.opt_state

    # ------------------------------------------------------------------ prediction ------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )

    def _map(self, X: Any, func: Any, n_out: int | None, dtype: Any, **kwargs: Any) -> Any:
        """Apply ``func`` to every partition lazily (dask in, dask out); eager for NumPy/pandas."""
        self._check_fitted()
        return map_partitions(X, func, self.params_, self.spec_, np.dtype(self.dtype), n_out,
                              dtype, n_features=self.n_features_in_,
                              estimator=type(self).__name__, **kwargs)

    def _score_blocks(self, X: Any, y: Any, client: Any = None) -> dict[str, float]:
        self._check_fitted()
        client = current_client(client)
        blocks = self._blocks(client, X, y, classes=getattr(self, "classes_", None))
        try:
            return evaluate(client, blocks, self.params_, self.spec_,
                            split_every=self.split_every)
        finally:
            # release, not cancel: Client.cancel walks the blocks' dependents, and one the
            # scheduler has not forgotten yet (the evaluation's own tasks, under load) trips
            # distributed's `assert ts.who_wants` in stimulus_cancel
            for future in blocks.futures:
                future.release()

    def save(self, path: str, *, preprocessor: Any = None) -> str:
        """Save weights, optimizer state, hyperparameters and (optionally) the preprocessor to
        the directory ``path`` without pickle; :func:`pipeline.load` reads it back."""
        from .serialization import write_model

        return write_model(path, self, saveable_classes(), preprocessor=preprocessor)

    def export_onnx(self, path: str, *, preprocessor: Any = None, **kwargs: Any) -> Any:
        """Write one ONNX graph from the raw columns (through ``preprocessor``) to the outputs;
        ``quantize="int8"``, ``validation=``: see :func:`pipeline.export.export_onnx`."""
        from .export import export_onnx

        return export_onnx(self, path, preprocessor=preprocessor, **kwargs)
