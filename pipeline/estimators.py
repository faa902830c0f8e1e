"""scikit-learn estimators over the functional training core (:func:`pipeline.train.train`).

``MLPClassifier`` and ``MLPRegressor`` take scikit-learn's parameter names and defaults, accept
dask DataFrames/Arrays (and pandas/NumPy for convenience), train data-parallel on the current Dask
cluster and predict lazily, partition by partition, on the workers. The shared machinery is in
:mod:`pipeline.mlp_base`, the parameter translation in :mod:`pipeline.mlp_config`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin

from . import nn
from .backend import to_host
from .blocks import BlockSet, to_blocks
from .cluster import current_client
from .events import ensure_monitor
from .mlp_base import _BaseMLP
from .predict_blocks import is_dask, predict_class_block, predict_proba_block, predict_value_block
from .registry import saveable_classes
from .store_blocks import releasing
from .train import TrainResult

__all__ = ["MLPClassifier", "MLPRegressor", "saveable_classes"]


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
    lr_scaling : {None, "linear", "sqrt"}
        Large batches: multiply ``learning_rate_init`` by ``batch_size / reference_batch_size``
        (``"linear"``, Goyal et al. 2017) or its square root (``"sqrt"``, often better for
        Adam); ``batch_size`` is the global mini-batch with ``sync="gradient"``, each replica's
        with ``sync="average"``. When the rate grows and ``warmup_fraction`` is 0, it warms up
        linearly from 0 over 5 epochs, at most a tenth of the run (with ``sync="average"`` the
        replicas' own linear factor counts too). ``None`` (default): no scaling.
    reference_batch_size : int
        The batch at which ``learning_rate_init`` is right (default 256).
    balance : {"none", "throughput"}
        ``"throughput"`` (with ``sync="average"``): blocks on slower workers (a CPU worker next
        to a GPU worker, a loaded machine) take proportionally fewer local steps per round,
        re-estimated every round; the row weighting keeps the average unbiased. Not
        bit-reproducible (it follows measured speed); ``"none"`` is.
    rounds_ahead : int
        ``sync="gradient"``: rounds in flight at once. The optimizer update runs on the cluster
        (each worker folds all gradients and updates its own copy of the parameters, the same
        bits on every worker), so round r+1 is queued before round r's result reaches the
        client; the client gathers only the loss per round. Same bits as ``rounds_ahead=1``.
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
        return self._map(X, predict_proba_block, len(self.classes_), np.dtype(self.dtype))

    def predict_log_proba(self, X: Any) -> Any:
        proba = self.predict_proba(X)
        if is_dask(proba):
            import dask.array as da

            return da.log(proba)
        return np.log(proba)

    def predict(self, X: Any) -> Any:
        """Predicted class labels, ``(n,)``; a lazy dask Array for dask input."""
        self._check_fitted()
        return self._map(X, predict_class_block, None, self.classes_.dtype,
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
            return self._map(X, predict_value_block, None, np.dtype(self.dtype))
        return self._map(X, predict_value_block, self.n_outputs_, np.dtype(self.dtype))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² (uniform average over outputs), computed on the workers from partial sums."""
        if sample_weight is not None:
            raise NotImplementedError("sample_weight is not supported by score yet")
        return float(self._score_blocks(X, y)["r2"])
