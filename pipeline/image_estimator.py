"""``ImageClassifier``: a convolutional network trained data-parallel on Dask, scikit-learn style.

Images come in as ``(N, H, W, C)`` (or ``(N, H, W)`` grayscale) arrays, dask or NumPy, usually
uint8 pixels from :func:`pipeline.read_images`. The training blocks keep the pixels as they are
(:func:`pipeline.blocks.to_blocks` with ``keep_shape=True``); the network's first layer,
:class:`pipeline.nn.Normalize` with per-channel statistics fitted in one Dask pass, turns each
mini-batch into float32. Training is :func:`pipeline.train.train`, as for the MLPs: both sync
modes, checkpoints, early stopping and bit-identical results whatever the number of workers.

The network is rebuilt from the estimator's parameters and a few fitted numbers (image shape,
channel statistics, classes), so model files store no layer objects, only their constructor
arguments (:meth:`pipeline.nn.Layer.get_config`).

Example
-------
>>> import pipeline as pl                                                 # doctest: +SKIP
>>> X, y = pl.read_images("digits/")          # uint8 (N, H, W, C) dask array, labels
>>> clf = pl.ImageClassifier(max_iter=5).fit(X, y)                        # doctest: +SKIP
>>> clf.predict(X[:100]).compute()                                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin

from . import nn
from .backend import namespace, to_host
from .blocks import BlockSet, to_blocks
from .cluster import current_client
from .estimators import MLPClassifier
from .events import ensure_monitor
from .image_prep import fit_normalize
from .mlp_base import _BaseMLP
from .predict_blocks import is_dask
from .store_blocks import releasing
from .train import TrainResult

__all__ = ["ImageClassifier", "ImageNetwork", "default_layers", "saveable_layers"]

PREDICT_ROWS = 1024  # images per forward pass in predict/score: bounds im2col's memory


def default_layers() -> list[nn.Layer]:
    """conv 32 3×3 → ReLU → max-pool 2 → conv 64 3×3 → ReLU → max-pool 2 → dense 128 → ReLU,
    "same" padding; :class:`ImageClassifier` appends the output layer."""
    return [nn.Conv2D(32, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(64, 3), nn.ReLU(),
            nn.MaxPool2D(2), nn.Flatten(), nn.Dense(128), nn.ReLU()]


def saveable_layers() -> list[type]:
    """The layer classes a model file may name in ``ImageClassifier(layers=...)`` (stored as
    their constructor arguments)."""
    return [nn.Augment, nn.AvgPool2D, nn.Conv2D, nn.Dense, nn.Dropout, nn.Flatten,
            nn.GlobalAvgPool2D, nn.GroupNorm, nn.Identity, nn.LayerNorm, nn.Logistic,
            nn.MaxPool2D, nn.Normalize, nn.ReLU, nn.Rescale, nn.Tanh]


class ImageNetwork(nn.Sequential):
    """A :class:`pipeline.nn.Sequential` whose validation scoring goes ``score_rows`` images
    at a time (a convolution's activations are large: see :func:`pipeline.train.tasks`)."""

    score_rows = PREDICT_ROWS


def _as_images(X: Any) -> Any:
    """``X`` as ``(N, H, W, C)``: a grayscale ``(N, H, W)`` array gains a channel axis."""
    if not hasattr(X, "ndim"):
        X = np.asarray(X)
    if X.ndim == 3:
        return X[..., None]
    if X.ndim != 4:
        raise ValueError(f"images must have shape (n, height, width[, channels]), got "
                         f"{tuple(X.shape)}")
    return X


def _proba_block(part: Any, params: np.ndarray, model: ImageNetwork) -> Any:
    xp = namespace(part)
    n = part.shape[0]
    if n == 0:
        return xp.zeros((0, max(model.n_outputs, 2)), dtype=xp.float32)
    out = xp.concat([model.forward(params, part[a:a + PREDICT_ROWS])
                     for a in range(0, n, PREDICT_ROWS)], axis=0)
    if model.loss == "binary_log_loss":
        out = xp.concat([1.0 - out, out], axis=1)
    return out


def _class_block(part: Any, params: np.ndarray, model: ImageNetwork,
                 classes: np.ndarray) -> Any:
    return classes[to_host(namespace(part).argmax(_proba_block(part, params, model), axis=1))]


class ImageClassifier(ClassifierMixin, _BaseMLP):
    """Convolutional image classifier trained data-parallel on Dask.

    Parameters
    ----------
    layers : list of pipeline.nn.Layer, optional
        The network between the input normalisation and the output layer (a ``Dense`` with one
        unit per class, or one for two classes, that the estimator appends). Default:
        :func:`default_layers`. Put :class:`pipeline.nn.Augment` first for seeded random crops
        and flips, :class:`pipeline.nn.Dropout` where wanted. The list is copied, not built.
    normalize : bool
        Start the network with :class:`pipeline.nn.Normalize` fitted on the training images
        (per-channel mean and standard deviation, one Dask pass). False: nothing is prepended
        (then the first of ``layers`` must turn pixels into floats, e.g. ``Rescale()``).
    batch_size, max_iter, learning_rate_init, solver, alpha, ...
        As :class:`pipeline.MLPClassifier` (scikit-learn's names), with image-sized defaults:
        128 images per step, 10 epochs, Adam at 1e-3, ``alpha=0``.
    min_block_rows : int or None
        Consecutive partitions are coalesced into blocks of at least this many images.

    Attributes
    ----------
    classes_, params_, image_shape_ (H, W, C), channel_mean_, channel_std_ (empty without
    ``normalize``), n_iter_, loss_curve_, validation_scores_, history_, train_summary_.
    """

    # Options of the scikit-learn MLP machinery this estimator does not expose.
    power_t = 0.5
    max_fun = 15000
    activation = "relu"
    dtype = "float32"

    def __init__(
        self,
        layers: Sequence[nn.Layer] | None = None,
        *,
        normalize: bool = True,
        solver: str = "adam",
        alpha: float = 0.0,
        batch_size: int | str | None = 128,
        learning_rate: str = "constant",
        learning_rate_init: float = 1e-3,
        max_iter: int = 10,
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
        sync: str = "gradient",
        local_steps: int | None = None,
        outer_learning_rate: float = 1.0,
        outer_momentum: float = 0.0,
        balance: str = "none",
        rounds_ahead: int = 4,
        split_every: int = 8,
        min_block_rows: int | None = 2048,
        weight_decay: float = 0.0,
        warmup_fraction: float = 0.0,
        clip_norm: float | None = None,
        replicas: int | str | None = "auto",
    ):
        self.layers = layers
        self.normalize = normalize
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
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
        self.sync = sync
        self.local_steps = local_steps
        self.outer_learning_rate = outer_learning_rate
        self.outer_momentum = outer_momentum
        self.balance = balance
        self.rounds_ahead = rounds_ahead
        self.split_every = split_every
        self.min_block_rows = min_block_rows
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.clip_norm = clip_norm
        self.replicas = replicas

    block_store = "memory"  # image blocks (uint8, NHWC) live in memory

    # ------------------------------------------------------------------ the network -----------

    def _network(self, image_shape: tuple[int, ...], n_outputs: int, mean: Sequence[float],
                 std: Sequence[float]) -> ImageNetwork:
        body = default_layers() if self.layers is None else list(self.layers)
        if not all(isinstance(layer, nn.Layer) for layer in body):
            raise TypeError(f"layers must be pipeline.nn.Layer objects, got {self.layers!r}")
        # Layers record shapes when built: build copies, so the estimator's own stay unbuilt.
        body = [type(layer)(**layer.get_config()) for layer in body]
        head = [nn.Normalize(tuple(mean), tuple(std))] if self.normalize else []
        loss = "binary_log_loss" if n_outputs == 1 else "log_loss"
        return ImageNetwork([*head, *body, nn.Dense(n_outputs)], loss=loss,
                            in_shape=tuple(image_shape), name=type(self).__name__)

    @property
    def spec_(self) -> ImageNetwork:
        """The fitted network, rebuilt from parameters and fitted statistics (not saved)."""
        self._check_fitted()
        key = (tuple(self.image_shape_), self.n_outputs_, tuple(self.channel_mean_),
               tuple(self.channel_std_), repr(self.layers), self.normalize)
        cached = self.__dict__.get("_network_cache")
        if cached is None or cached[0] != key:
            cached = (key, self._network(*key[:4]))
            self.__dict__["_network_cache"] = cached
        return cached[1]

    def _spec(self, n_features: int, n_outputs: int) -> ImageNetwork:
        shape, mean, std = self._fit_inputs
        return self._network(shape, n_outputs, mean, std)

    def _weight_mask(self, spec: Any) -> np.ndarray:
        weights = np.zeros(spec.n_params, dtype=bool)
        for (a, b), shape in zip(spec.slices, spec.param_shapes, strict=True):
            weights[a:b] = len(shape) >= 2
        return weights

    # ------------------------------------------------------------------ fitting ---------------

    def _blocks(self, client: Any, X: Any, y: Any, classes: Any = None) -> BlockSet:
        X = _as_images(X)
        if is_dask(X) and not is_dask(y):  # labels in memory: cut like the images
            import dask.array as da

            y = da.from_array(np.asarray(y), chunks=(X.chunks[0],))
        return to_blocks(client, X, y, classification=True, classes=classes,
                         dtype=self.dtype, min_block_rows=self.min_block_rows,
                         name="image-block", keep_shape=True)

    def fit(self, X: Any, y: Any, **kwargs: Any) -> ImageClassifier:  # type: ignore[override]
        """Train on images ``X`` and labels ``y``; keyword arguments as
        :meth:`pipeline.MLPClassifier.fit` (``validation_data``, ``client``, checkpoints)."""
        X = _as_images(X)
        mean: tuple[float, ...] = ()
        std: tuple[float, ...] = ()
        if self.normalize:
            client = current_client(kwargs.get("client")) if is_dask(X) else None
            if client is not None:
                # Decoded once, on the cluster that trains: the statistics and the training
                # blocks read the same partitions.
                X, y = client.persist([X, y]) if is_dask(y) else (client.persist(X), y)
            layer = fit_normalize(X, client=client)
            mean, std = layer.mean, layer.std
        self._fit_inputs = (tuple(int(s) for s in X.shape[1:]), mean, std)
        try:
            super().fit(X, y, **kwargs)
        finally:
            del self._fit_inputs
        return self

    @releasing
    def partial_fit(self, X: Any, y: Any, classes: Any = None,
                    client: Any = None) -> ImageClassifier:
        """One more epoch on ``X``, ``y`` from the current weights, continuing the optimizer
        state, ``n_iter_`` and ``t_`` (``classes`` required on the first call), as
        scikit-learn's ``partial_fit``: k calls on the same data are k epochs of one ``fit``.
        The per-channel normalisation is learned from the first call's images and kept."""
        X = _as_images(X)
        first = not hasattr(self, "params_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        client = current_client(client)
        ensure_monitor(client)
        if first:
            mean: tuple[float, ...] = ()
            std: tuple[float, ...] = ()
            if self.normalize:
                layer = fit_normalize(X, client=client if is_dask(X) else None)
                mean, std = layer.mean, layer.std
            self._fit_inputs = (tuple(int(s) for s in X.shape[1:]), mean, std)
            cls = np.unique(to_host(classes))
        else:
            if tuple(X.shape[1:]) != tuple(self.image_shape_):
                raise ValueError(f"X has images of shape {tuple(X.shape[1:])}, but "
                                 f"{type(self).__name__} was fitted on {self.image_shape_}")
            self._fit_inputs = (tuple(self.image_shape_),
                                tuple(float(v) for v in self.channel_mean_),
                                tuple(float(v) for v in self.channel_std_))
            cls = self.classes_
        saved = (self.max_iter, self.warm_start)
        self.max_iter, self.warm_start = 1, True
        try:
            blocks = self._blocks(client, X, y, classes=cls)
            self._partial_fit_blocks(client, blocks, X, "ImageClassifier.partial_fit")
        finally:
            self.max_iter, self.warm_start = saved
            del self._fit_inputs
        return self

    def _set_fitted(self, result: TrainResult, spec: Any, blocks: BlockSet, X: Any) -> None:
        self._set_run_results(result, blocks)
        self.classes_ = blocks.classes
        self.params_ = np.asarray(result.params)
        self.image_shape_ = tuple(spec.in_shape)
        _, mean, std = self._fit_inputs
        self.channel_mean_ = np.asarray(mean, dtype=np.float64)
        self.channel_std_ = np.asarray(std, dtype=np.float64)

    # ------------------------------------------------------------------ prediction ------------

    def _map_images(self, X: Any, func: Any, n_out: int | None, dtype: Any,
                    **kwargs: Any) -> Any:
        """``func`` on every block of images, lazily for dask input (dask in, dask out)."""
        model = self.spec_
        X = _as_images(X)
        if tuple(X.shape[1:]) != tuple(self.image_shape_):
            raise ValueError(f"X has images of shape {tuple(X.shape[1:])}, but "
                             f"{type(self).__name__} was fitted on {tuple(self.image_shape_)}")
        if not is_dask(X):
            return to_host(func(np.asarray(X), self.params_, model, **kwargs))
        if any(n > 1 for n in X.numblocks[1:]):
            X = X.rechunk({1: -1, 2: -1, 3: -1})
        name = func.__name__.lstrip("_").replace("_", "-")
        meta = np.empty((0,) if n_out is None else (0, n_out), dtype=dtype)
        if n_out is None:
            return X.map_blocks(func, self.params_, model, drop_axis=[1, 2, 3], dtype=dtype,
                                meta=meta, name=name, **kwargs)
        return X.map_blocks(func, self.params_, model, drop_axis=[2, 3],
                            chunks=(X.chunks[0], (n_out,)), dtype=dtype, meta=meta,
                            name=name, **kwargs)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(n, n_classes)``; a lazy dask Array for dask input."""
        return self._map_images(X, _proba_block, len(self.classes_), np.float32)

    predict_log_proba = MLPClassifier.predict_log_proba

    def predict(self, X: Any) -> Any:
        """Predicted labels ``(n,)``; a lazy dask Array for dask input."""
        self._check_fitted()
        return self._map_images(X, _class_block, None, self.classes_.dtype,
                                classes=self.classes_)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy, from per-block counts computed on the workers."""
        if sample_weight is not None:
            raise NotImplementedError("sample_weight is not supported by score yet")
        return float(self._score_blocks(X, y)["accuracy"])

    def export_onnx(self, path: str, *, quantize: str | None = None,
                    validation: tuple[Any, Any] | None = None,
                    max_accuracy_drop: float = 0.003, on_drop: str = "raise") -> Any:
        """Write one ONNX graph from uint8 pixels ``image`` ``(N, H, W, C)`` to ``label`` and
        ``probabilities`` (:mod:`pipeline.export.onnx_image`). ``quantize="int8"`` stores the
        convolution and dense weights as int8; ``validation=(images, labels)`` scores the
        graphs on it and guards the int8 accuracy drop: see
        :func:`pipeline.export.export_onnx`. Returns its :class:`~pipeline.export.ExportReport`.
        """
        from .export import export_onnx

        return export_onnx(self, path, quantize=quantize, validation=validation,
                           max_accuracy_drop=max_accuracy_drop, on_drop=on_drop)
