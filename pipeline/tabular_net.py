"""The network of :class:`pipeline.TabularClassifier`/``TabularRegressor``, built from a
:class:`pipeline.tabular_prep.TabularLayout` and the estimator's hyperparameters.

    [numeric | indicators | codes] --ColumnSplit--> [numeric | indicators | one-hot | embeddings]
        --> k x (Dense -> ReLU -> Dropout [-> LayerNorm]) x depth --> k x Dense(n_outputs)

Numeric columns (quantile-normal or piecewise-linear encoded by the preprocessor) and the
missing indicators pass through as they are (with ``numeric_embedding="periodic"`` the numeric
columns go through :class:`pipeline.nn.Periodic` first, with as many frequencies as their
values need, :func:`periodic_frequencies`); categorical code columns go through one-hot
(vocabularies of at most 3 codes, per the layout) or learned embeddings (fastai's width rule);
the k members (:class:`pipeline.nn.EnsembleDense`) share that input encoding, as TabM's members
share theirs, and are otherwise independent networks in one flat buffer.

The network is a pure function of ``(layout, n_outputs, loss, hyperparameters)``, so a saved
estimator stores those and rebuilds it (:func:`build_network`); the weights are the flat buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import device, namespace
from .nn import (
    ColumnSplit,
    Context,
    Dropout,
    Embedding,
    EnsembleDense,
    EnsembleSequential,
    Flatten,
    Identity,
    Layer,
    LayerNorm,
    Periodic,
    ReLU,
)

if TYPE_CHECKING:  # (an annotation only: tabular_prep brings scikit-learn and dask.dataframe,
    # ~1.4 s of a fresh worker's first fit, to the worker that unpickles the network)
    from .tabular_prep import TabularLayout

__all__ = ["OneHot", "build_network", "periodic_frequencies", "weight_mask"]

Array = Any


class OneHot(Layer):
    """Integer codes ``(batch, len(vocab_sizes))`` stored as floats -> concatenated one-hot
    vectors ``(batch, sum(vocab_sizes))``. No parameters; codes carry no gradient."""

    def __init__(self, vocab_sizes: tuple[int, ...]) -> None:
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        if not self.vocab_sizes or min(self.vocab_sizes) < 1:
            raise ValueError(f"OneHot needs vocab sizes >= 1, got {self.vocab_sizes}")

    def build(self, in_shape: tuple[int, ...]) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
        if tuple(in_shape) != (len(self.vocab_sizes),):
            raise ValueError(f"{self!r} needs inputs of shape ({len(self.vocab_sizes)},), got "
                             f"{tuple(in_shape)}")
        return [], (sum(self.vocab_sizes),)

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        xp = namespace(x)
        n = x.shape[0]
        out = ctx.buffer("y", (n, sum(self.vocab_sizes)), x)
        if type(out) is np.ndarray and type(x) is np.ndarray:
            # each comparison's booleans written as 0.0/1.0 straight into the output: the
            # values astype and concat give, without the pieces
            ws, start = ctx.workspace, 0
            for j, v in enumerate(self.vocab_sizes):
                # (keyed by the vocabulary: the workspace may serve another network later)
                ids = ws.memo(("ids", v, x.dtype), (),
                              lambda v=v: np.arange(v, dtype=x.dtype)[None, :])
                np.equal(x[:, j:j + 1], ids, out=out[:, start:start + v])
                start += v
            return out, n
        pieces = []
        for j, v in enumerate(self.vocab_sizes):
            ids = xp.reshape(xp.arange(v, dtype=x.dtype, device=device(x)), (1, v))
            pieces.append(xp.astype(xp.reshape(x[:, j], (n, 1)) == ids, x.dtype))
        return xp.concat(pieces, axis=1), n

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        if not ctx.need_input_grad:
            return None
        xp = namespace(dy)
        return xp.zeros((cache, len(self.vocab_sizes)), dtype=dy.dtype, device=device(dy))


PERIODIC_FREQUENCIES, PERIODIC_SIGMA = 8, 0.1  # numeric_embedding="periodic"


def periodic_frequencies(levels: int) -> int:
    """Periodic frequencies for a numeric feature of ``levels`` distinct values (0: many).

    On ``v`` points, every function of the feature is a vector of ``v`` values, so ``v``
    columns can express any of them: ``ceil(v / 2)`` frequencies (``2 ceil(v / 2) >= v`` sines
    and cosines) up to :data:`PERIODIC_FREQUENCIES`. A feature of two values gets 0: any
    function of it is affine in it, so it passes through as one column, itself (Gorishniy et
    al. keep binary features out of the numeric embeddings too); a feature constant at fit
    (one value) is left out of the network (nothing was learned about it). On the quality
    benchmark this cut the first layer's inputs and the fits' epochs at the same test metrics
    (``benchmarks/results/evidence/periodic_frequencies_by_levels.md``).
    """
    if levels <= 0:
        return PERIODIC_FREQUENCIES
    return 0 if levels <= 2 else min(PERIODIC_FREQUENCIES, -(-int(levels) // 2))


def build_network(layout: TabularLayout, n_outputs: int, loss: str, *,
                  hidden_layer_sizes: tuple[int, ...], dropout: float, layer_norm: bool,
                  n_members: int, numeric_embedding: str = "auto",
                  periodic_order: str = "halves") -> EnsembleSequential:
    """The estimator's network for inputs laid out as ``layout`` (see the module docstring).
    ``periodic_order``: the periodic embedding's output order (:class:`pipeline.nn.Periodic`;
    ``"groups"`` for the models saved when each frequency count was a layer of its own)."""
    if numeric_embedding not in ("auto", "none", "periodic"):
        raise ValueError(f"numeric_embedding must be 'auto', 'none' or 'periodic', got "
                         f"{numeric_embedding!r}")
    branches: list[tuple[tuple[int, ...], Layer]] = []
    numeric_cols = tuple(range(*layout.numeric))
    if numeric_embedding == "auto":  # periodic where a feature is one column (not PLE)
        numeric_embedding = "periodic" if layout.numeric_width == 1 else "none"
    if numeric_embedding == "periodic" and numeric_cols:
        if layout.numeric_width != 1:
            raise ValueError("numeric_embedding='periodic' embeds one column per numeric "
                             f"feature; numeric={layout.numeric_encoding!r} has "
                             f"{layout.numeric_width}")
        # as many frequencies as a feature's values need: one layer, its features grouped by
        # count, most first
        levels = layout.numeric_levels or (0,) * len(numeric_cols)
        ks = [periodic_frequencies(v) for v in levels]
        groups = [(k, tuple(c for c, kc in zip(numeric_cols, ks, strict=True) if kc == k))
                  for k in sorted(set(ks) - {0}, reverse=True)]
        if groups:
            counts = tuple(k for k, cols in groups for _ in cols)
            branches.append((tuple(c for _, cols in groups for c in cols),
                             Periodic(counts[0] if len(groups) == 1 else counts,
                                      PERIODIC_SIGMA, periodic_order)))
        # (two values: as they are; constant at fit: left out, its missing indicator kept)
        dense_cols = tuple(c for c, kc, v in zip(numeric_cols, ks, levels, strict=True)
                           if kc == 0 and v != 1) + tuple(range(*layout.indicators))
    else:
        dense_cols = tuple(range(layout.numeric[0], layout.indicators[1]))
    if dense_cols:
        branches.append((dense_cols, Identity()))
    c0 = layout.categorical[0]
    hot = [j for j, h in enumerate(layout.one_hot) if h]
    emb = [j for j, h in enumerate(layout.one_hot) if not h]
    if hot:
        branches.append((tuple(c0 + j for j in hot),
                         OneHot(tuple(layout.cardinalities[j] for j in hot))))
    if emb:
        branches.append((tuple(c0 + j for j in emb),
                         Embedding(tuple(layout.cardinalities[j] for j in emb),
                                   tuple(layout.embedding_dims[j] for j in emb))))
    if not branches:  # every feature constant at fit: they enter as they are (a network
        # needs an input; it learns the mean)
        branches.append((numeric_cols, Identity()))
    layers: list[Layer] = [ColumnSplit(branches)]
    for units in hidden_layer_sizes:
        layers += [EnsembleDense(n_members, int(units)), ReLU()]
        if dropout:
            layers.append(Dropout(dropout))
        if layer_norm:
            layers.append(LayerNorm())
    layers += [EnsembleDense(n_members, n_outputs), Flatten()]
    return EnsembleSequential(layers, members=n_members, loss=loss,
                              in_shape=(layout.n_features,))


def weight_mask(model: EnsembleSequential) -> np.ndarray:
    """Which entries of the flat buffer are weights (kernels, embedding tables), the ones
    AdamW's decoupled weight decay acts on; biases and normalisation parameters do not decay."""
    mask = np.zeros(model.n_params, dtype=bool)
    for (a, b), flag in zip(model.slices, model._penalized, strict=True):
        mask[a:b] = flag
    return mask
