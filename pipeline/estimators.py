"""scikit-learn estimators over the functional training core (:func:`pipeline.train.train`).

``MLPClassifier`` and ``MLPRegressor`` take scikit-learn's parameter names and defaults, accept
dask DataFrames/Arrays (and pandas/NumPy for convenience), train data-parallel on the current Dask
cluster and predict lazily, partition by partition, on the workers.
"""

from __future__ import annotations

import dataclasses
import numbers
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from . import nn, optim
from .backend import device, frame_to_array, namespace, to_device_of, to_host
from .blocks import BlockSet, split_blocks, to_blocks
from .cluster import current_client
from .events import ensure_monitor
from .progress import report
from .store_blocks import releasing
from .train import TrainConfig, TrainResult, TrainState, evaluate, initial_state, train

__all__ = ["MLPClassifier", "MLPRegressor", "saveable_classes"]


def _is_dask(obj: Any) -> bool:
    return type(obj).__module__.startswith(("dask", "dask_expr", "dask_cudf"))


def _as_matrix(part: Any, dtype: Any) -> Any:
    if hasattr(part, "iloc") or hasattr(part, "to_cupy"):
        return frame_to_array(part, dtype=dtype)
    xp = namespace(part)
    arr = xp.astype(xp.asarray(part), getattr(xp, np.dtype(dtype).name))  # the namespace's dtype
    return arr if arr.ndim == 2 else xp.reshape(arr, (-1, 1))


def _forward_block(part: Any, params: np.ndarray, spec: nn.MLPSpec, dtype: Any) -> Any:
    X = _as_matrix(part, dtype)
    if X.shape[0] == 0:
        xp = namespace(X)
        return xp.zeros((0, spec.layer_sizes[-1]), dtype=X.dtype, device=device(X))
    return nn.forward(spec, params, X)


def _predict_proba_block(part: Any, params: np.ndarray, spec: nn.MLPSpec, dtype: Any) -> Any:
    out = _forward_block(part, params, spec, dtype)
    if spec.loss == "binary_log_loss":
        xp = namespace(out)
        return xp.concat([1.0 - out, out], axis=1)
    return out


def _predict_class_block(part: Any, params: np.ndarray, spec: nn.MLPSpec, dtype: Any,
                         classes: np.ndarray) -> Any:
    proba = _predict_proba_block(part, params, spec, dtype)
    xp = namespace(proba)
    idx = xp.argmax(proba, axis=1)
    if classes.dtype.kind in "biuf" and not xp.__name__.endswith("numpy"):
        return xp.take(to_device_of(classes, idx), idx)  # numeric labels stay on the device
    return classes[to_host(idx)]  # strings (which CuPy cannot hold) come to the host


def _predict_value_block(part: Any, params: np.ndarray, spec: nn.MLPSpec, dtype: Any) -> Any:
    out = _forward_block(part, params, spec, dtype)
    return out[:, 0] if out.shape[1] == 1 else out


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
        self.clip_norm = clip_norm
        self.dropout = dropout
        self.replicas = replicas
        self.block_store = block_store

    # ------------------------------------------------------------------ configuration ---------

    def _hidden(self) -> tuple[int, ...]:
        h = self.hidden_layer_sizes
        if isinstance(h, numbers.Integral):
            h = (int(h),)
        h = tuple(int(v) for v in h)
        if any(v < 1 for v in h):
            raise ValueError(f"hidden_layer_sizes must be positive, got {self.hidden_layer_sizes}")
        return h

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return int(np.random.SeedSequence().entropy % (2**31))
        if isinstance(rs, numbers.Integral):
            return int(rs)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(2**31 - 1))
        raise ValueError(f"random_state must be an int, None or a RandomState, got {rs!r}")

    def _train_config(self, n_samples: int, seed: int, client: Any = None) -> TrainConfig:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        bs = self.batch_size
        if bs == "auto":
            bs = min(200, n_samples)
        elif bs is not None:
            if not isinstance(bs, numbers.Integral) or bs < 1:
                raise ValueError(f"batch_size must be 'auto', None or a positive int, got {bs!r}")
            bs = min(int(bs), n_samples)
        return TrainConfig(
            solver=self.solver, learning_rate=self.learning_rate,
            learning_rate_init=self.learning_rate_init, power_t=self.power_t,
            momentum=self.momentum, nesterovs_momentum=self.nesterovs_momentum,
            beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, alpha=self.alpha,
            batch_size=bs, max_iter=self.max_iter, max_fun=self.max_fun, shuffle=self.shuffle,
            tol=self.tol, n_iter_no_change=self.n_iter_no_change,
            early_stopping=self.early_stopping, sync=self.sync,
            local_steps=self._local_steps(bs),
            outer_learning_rate=self.outer_learning_rate, outer_momentum=self.outer_momentum,
            split_every=self.split_every, random_state=seed, balance=self.balance,
            rounds_ahead=self.rounds_ahead,
            scheduled_rate=self.learning_rate == "cosine" or bool(self.warmup_fraction),
            replicas=self._replicas(client),
        )

    # Rows each replica trains on between two averagings when local_steps="auto": ~30 ms of
    # a small MLP's compute per worker, so a round's fixed cost (~15 ms here) stays a fraction
    # of it, while averaging stays frequent enough to keep accuracy per epoch (see
    # benchmarks/RESULTS.md, time to accuracy).
    AUTO_ROWS_PER_ROUND = 16_384

    def _local_steps(self, batch_size: int | None) -> int | None:
        if self.local_steps != "auto":
            if self.local_steps is not None and (
                    not isinstance(self.local_steps, numbers.Integral) or self.local_steps < 1):
                raise ValueError(f"local_steps must be 'auto', None or a positive int, got "
                                 f"{self.local_steps!r}")
            return self.local_steps
        if batch_size is None:
            return None
        return max(1, -(-self.AUTO_ROWS_PER_ROUND // batch_size))

    def _replicas(self, client: Any) -> int | None:
        """``"auto"``: one replica per worker of the cluster when the fit starts."""
        if self.replicas != "auto":
            if self.replicas is not None and (
                    not isinstance(self.replicas, numbers.Integral) or self.replicas < 1):
                raise ValueError(f"replicas must be 'auto', None or a positive int, got "
                                 f"{self.replicas!r}")
            return self.replicas
        workers = len(client.scheduler_info()["workers"]) if client is not None else 1
        return max(1, workers)

    def _optimizer(self, config: TrainConfig, spec: nn.MLPSpec,
                   rows: Sequence[int]) -> optim.GradientTransformation | None:
        """The inner optimizer, built once here from the estimator's parameters: scikit-learn's
        SGD/Adam (bit for bit with its options alone), or AdamW, with optional clipping,
        warm-up and cosine decay over the run's updates; weight decay on weights, not biases.
        A fixed pruning mask (:func:`pipeline.compress.fine_tune`) is chained last."""
        if config.solver == "lbfgs":
            return None
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if self.weight_decay and self.solver != "adamw":
            raise ValueError("weight_decay is decoupled weight decay for solver='adamw'; "
                             "use alpha for scikit-learn's L2 penalty")
        from .train import make_strategy

        total = make_strategy(config, optim.sgd()).steps_per_epoch(rows) * config.max_iter
        weights = self._weight_mask(spec)
        opt = optim.from_sklearn(
            self.solver, learning_rate_init=self.learning_rate_init,
            learning_rate=self.learning_rate, momentum=self.momentum,
            nesterovs_momentum=self.nesterovs_momentum, beta_1=self.beta_1, beta_2=self.beta_2,
            epsilon=self.epsilon, weight_decay=self.weight_decay, clip_norm=self.clip_norm,
            warmup_steps=round(self.warmup_fraction * total), total_steps=total,
            weight_mask=weights if self.weight_decay else None)
        mask = getattr(self, "_fixed_mask", None)
        return opt if mask is None else optim.masked(opt, mask)

    def _weight_mask(self, spec: Any) -> np.ndarray:
        """True at the flat positions of weights (what weight decay covers), not biases."""
        weights = np.zeros(spec.n_params, dtype=bool)
        for s in spec.layout():
            weights[s.w_start:s.w_stop] = True
        return weights

    def _dropout(self) -> tuple[float, ...]:
        hidden = self._hidden()
        rates = (tuple(float(r) for r in self.dropout)
                 if isinstance(self.dropout, Sequence) else (float(self.dropout),) * len(hidden))
        if len(rates) != len(hidden):
            raise ValueError(f"dropout needs a float or one rate per hidden layer "
                             f"({len(hidden)}), got {self.dropout!r}")
        return () if not any(rates) else rates

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
        previous: TrainState | None = getattr(self, "_partial_state", None)
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
        # what a later partial_fit continues from (scikit-learn keeps its _optimizer too)
        self._partial_state = (result.state._replace(history=[], cursors=None)
                               if result.state.opt_state is not None
                               or result.state.local_states is not None else None)
        self.params_ = to_host(result.params)
        self.spec_ = spec
        layers = nn.unpack(spec, self.params_)
        self.coefs_ = [np.asarray(W) for W, _ in layers]
        self.intercepts_ = [np.asarray(b) for _, b in layers]
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
        self.n_layers_ = len(spec.layer_sizes)
        self.out_activation_ = {"binary_log_loss": "logistic", "log_loss": "softmax",
                                "squared_error": "identity"}[spec.loss]
        self.history_ = list(result.history)
        self.train_summary_ = {
            "run_id": result.run_id, "seconds": result.seconds, "rounds": result.rounds,
            "retries": result.retries, "recovery_seconds": result.recovery_seconds,
            "n_partitions": len(blocks.futures),
            "n_samples": blocks.n_samples, "stopped_early": result.stopped_early,
        }
        self.optimizer_state_ = result.state.opt_state
        columns = getattr(X, "columns", None)
        if columns is not None:
            self.feature_names_in_ = np.asarray([str(c) for c in columns], dtype=object)

    # ------------------------------------------------------------------ prediction ------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )

    def _map(self, X: Any, func: Any, n_out: int | None, dtype: Any, **kwargs: Any) -> Any:
        """Apply ``func`` to every partition lazily (dask in, dask out); eager for NumPy/pandas."""
        self._check_fitted()
        np_dtype = np.dtype(self.dtype)
        if not _is_dask(X):
            if hasattr(X, "shape") and len(X.shape) == 2 and X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input"
                )
            return to_host(func(X, self.params_, self.spec_, np_dtype, **kwargs))
        import dask.array as da
        import dask.dataframe as dd

        arr = X.to_dask_array() if isinstance(X, dd.DataFrame) else X
        if not isinstance(arr, da.Array):
            raise TypeError(f"expected a dask DataFrame or Array, got {type(X).__name__}")
        if arr.ndim == 2 and len(arr.chunks[1]) > 1:
            arr = arr.rechunk({1: -1})
        if arr.ndim == 2 and arr.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {arr.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        xp = namespace(arr._meta)
        dtype = np.dtype(dtype)
        if n_out is None:
            meta = (xp.zeros((0,), dtype=dtype) if dtype.kind in "biuf"
                    else np.empty((0,), dtype=dtype))
            return arr.map_blocks(func, self.params_, self.spec_, np_dtype, drop_axis=1,
                                  dtype=dtype, meta=meta,
                                  name=f"{func.__name__.lstrip('_')}", **kwargs)
        return arr.map_blocks(func, self.params_, self.spec_, np_dtype,
                              chunks=(arr.chunks[0], (n_out,)), dtype=dtype,
                              name=f"{func.__name__.lstrip('_')}", **kwargs)

    def _score_blocks(self, X: Any, y: Any, client: Any = None) -> dict[str, float]:
        self._check_fitted()
        client = current_client(client)
        blocks = self._blocks(client, X, y, classes=getattr(self, "classes_", None))
        try:
            return evaluate(client, blocks, self.params_, self.spec_,
                            split_every=self.split_every)
        finally:
            client.cancel(blocks.futures)

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


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained data-parallel on Dask.

    Same parameters as :class:`sklearn.neural_network.MLPClassifier`, plus:

    sync : {"average", "gradient"}
        ``"average"`` (default): local SGD over ``replicas`` model replicas with ``local_steps``
        inner steps per round, far fewer rounds. ``"gradient"``: one exact synchronous step per
        mini-batch (scikit-learn's semantics).
    replicas : "auto", int or None
        ``sync="average"``: ``"auto"`` = one replica per worker when ``fit`` starts; an int
        makes the model independent of the cluster size; ``None`` = one per block.
    local_steps, outer_learning_rate, outer_momentum
        Local-SGD settings: ``local_steps="auto"`` ≈ 16,384 rows per replica per round;
        ``outer_momentum > 0`` gives DiLoCo-style Nesterov outer steps (default 0.5).
    weight_decay, warmup_fraction, clip_norm, dropout
        AdamW's decoupled weight decay (``solver="adamw"``), linear warm-up over a fraction of
        the run's updates, global gradient-norm clipping, dropout after each hidden layer.
    balance : {"none", "throughput"}
        ``"throughput"`` (with ``sync="average"``): blocks on slower workers (a CPU worker next
        to a GPU worker, a loaded machine) take proportionally fewer local steps per round,
        re-estimated every round; the row weighting keeps the average unbiased. Not
        bit-reproducible (it follows measured speed); ``"none"`` is.
    rounds_ahead : int
        ``sync="gradient"``: rounds in flight at once. The optimizer update runs as a task on
        the cluster, so round r+1 is queued before round r's result reaches the client; the
        client gathers only the loss per round. Same bits as ``rounds_ahead=1``.
    split_every : int
        Fan-in of the tree that combines the blocks' gradients.
    min_block_rows : int or None
        Consecutive partitions are coalesced into training blocks of at least this many rows
        (a function of the data only, so the model does not depend on the cluster size).
    dtype : {"float32", "float64"}
        Training precision of the blocks and parameters.
    block_store : {"memory", "disk", "stream", "auto"}
        Where the training blocks live between epochs (:mod:`pipeline.stores`): worker memory,
        the workers' local disks (data larger than memory), re-read from the source every epoch,
        or memory when they fit comfortably, else disk. Same parameters, bit for bit, in every
        store; disk files are removed when the fit ends.

    Examples
    --------
    >>> import pipeline as pl                                           # doctest: +SKIP
    >>> client = pl.connect()                                           # doctest: +SKIP
    >>> clf = pl.MLPClassifier(hidden_layer_sizes=(64,), max_iter=20).fit(X, y)  # doctest: +SKIP
    >>> proba = clf.predict_proba(X_new)   # a lazy dask Array          # doctest: +SKIP
    """

    def _blocks(self, client: Any, X: Any, y: Any, classes: Any = None) -> BlockSet:
        return to_blocks(client, X, y, classification=True, classes=classes, dtype=self.dtype,
                         min_block_rows=self.min_block_rows, block_store=self.block_store)

    def _spec(self, n_features: int, n_outputs: int) -> nn.MLPSpec:
        loss = "binary_log_loss" if n_outputs == 1 else "log_loss"
        return nn.MLPSpec((n_features, *self._hidden(), n_outputs), self.activation, loss,
                          self._dropout())

    def fit(self, X: Any, y: Any, **kwargs: Any) -> MLPClassifier:  # type: ignore[override]
        super().fit(X, y, **kwargs)
        return self

    def _set_fitted(self, result: TrainResult, spec: nn.MLPSpec, blocks: BlockSet,
                    X: Any) -> None:
        self.classes_ = blocks.classes
        super()._set_fitted(result, spec, blocks, X)

    @releasing
    def partial_fit(self, X: Any, y: Any, classes: Any = None, **kwargs: Any) -> MLPClassifier:
        """One more epoch from the current weights (``classes`` required on the first call)."""
        if not hasattr(self, "params_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
        saved = (self.max_iter, self.warm_start)
        self.max_iter, self.warm_start = 1, True
        try:
            client = current_client(kwargs.pop("client", None))
            ensure_monitor(client)
            cls = self.classes_ if hasattr(self, "classes_") else np.unique(to_host(classes))
            blocks = to_blocks(client, X, y, classification=True, classes=cls, dtype=self.dtype,
                               min_block_rows=self.min_block_rows, block_store=self.block_store)
            self._partial_fit_blocks(client, blocks, X, "MLPClassifier.partial_fit")
        finally:
            self.max_iter, self.warm_start = saved
        return self

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, ``(n, n_classes)``; a lazy dask Array for dask input."""
        return self._map(X, _predict_proba_block, len(self.classes_), np.dtype(self.dtype))

    def predict_log_proba(self, X: Any) -> Any:
        proba = self.predict_proba(X)
        if _is_dask(proba):
            import dask.array as da

            return da.log(proba)
        return np.log(proba)

    def predict(self, X: Any) -> Any:
        """Predicted class labels, ``(n,)``; a lazy dask Array for dask input."""
        self._check_fitted()
        return self._map(X, _predict_class_block, None, self.classes_.dtype,
                         classes=self.classes_)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy, computed on the workers from per-partition counts."""
        if sample_weight is not None:
            raise NotImplementedError("sample_weight is not supported by score yet")
        return float(self._score_blocks(X, y)["accuracy"])


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor (squared error) trained data-parallel on Dask.

    Same parameters as :class:`sklearn.neural_network.MLPRegressor`, plus the Dask-specific ones
    documented on :class:`MLPClassifier`.
    """

    _loss = "squared_error"

    def _blocks(self, client: Any, X: Any, y: Any, classes: Any = None) -> BlockSet:
        return to_blocks(client, X, y, classification=False, dtype=self.dtype,
                         min_block_rows=self.min_block_rows, block_store=self.block_store)

    def fit(self, X: Any, y: Any, **kwargs: Any) -> MLPRegressor:  # type: ignore[override]
        super().fit(X, y, **kwargs)
        return self

    @releasing
    def partial_fit(self, X: Any, y: Any, **kwargs: Any) -> MLPRegressor:
        """One more epoch from the current weights and optimizer state."""
        saved = self.max_iter
        self.max_iter = 1
        try:
            client = current_client(kwargs.pop("client", None))
            blocks = self._blocks(client, X, y)
            self._partial_fit_blocks(client, blocks, X, "MLPRegressor.partial_fit")
        finally:
            self.max_iter = saved
        return self

    def predict(self, X: Any) -> Any:
        """Predictions ``(n,)`` (or ``(n, n_outputs)``); a lazy dask Array for dask input."""
        self._check_fitted()
        if self.n_outputs_ == 1:
            return self._map(X, _predict_value_block, None, np.dtype(self.dtype))
        return self._map(X, _predict_value_block, self.n_outputs_, np.dtype(self.dtype))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² (uniform average over outputs), computed on the workers from partial sums."""
        if sample_weight is not None:
            raise NotImplementedError("sample_weight is not supported by score yet")
        return float(self._score_blocks(X, y)["r2"])


def saveable_classes() -> dict[str, type]:
    """The allow-list of classes model files and checkpoints may hold, by name: the estimators,
    the network spec, the optimizer states, the trainer's state and the preprocessing."""
    from . import preprocessing as pp
    from .sketch import QuantileSketch
    from .tabular import TabularClassifier, TabularRegressor
    from .tabular_prep import TabularPreprocessor

    classes: dict[str, type] = {
        "MLPClassifier": MLPClassifier,
        "MLPRegressor": MLPRegressor,
        "MLPSpec": nn.MLPSpec,
        "TrainState": TrainState,
    }
    # optimizer states, chained ones included (a chain's state is a tuple of these)
    classes.update({cls.__name__: cls for cls in optim.STATE_TYPES})
    for cls in (pp.Preprocessor, pp.Moments, pp.Counts, pp.StatsSpec, pp.PartialStats,
                QuantileSketch, TabularPreprocessor, TabularClassifier, TabularRegressor):
        classes[cls.__name__] = cls
    from .image_estimator import ImageClassifier, saveable_layers

    classes["ImageClassifier"] = ImageClassifier
    classes.update({cls.__name__: cls for cls in saveable_layers()})
    return classes
