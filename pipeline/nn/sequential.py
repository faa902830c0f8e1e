"""A network: layers in a chain, a loss, and every parameter in one flat 1-D buffer.

Layer after layer, each layer's parameters (in its ``build()`` order) sit in ``flat`` as
row-major blocks; the layers see them as views. A flat buffer is one message to ship, one array
to reduce and one array to checkpoint; the flat gradient has the same layout.

:class:`Sequential` is the *model protocol* the trainer uses: ``n_params``, ``n_outputs``,
``loss`` (a name), ``init_params``, ``forward``, ``decision_function``, ``loss_and_grad`` and
``l2_penalty``. :class:`pipeline.nn.MLPSpec` offers the same protocol.

Example
-------
>>> import numpy as np
>>> from pipeline.nn import Dense, ReLU, Workspace, Context
>>> model = Sequential([Dense(8), ReLU(), Dense(1)], loss="binary_log_loss", in_shape=(3,))
>>> flat = model.init_params(random_state=0)
>>> X, Y = np.ones((5, 3), np.float32), np.ones((5, 1), np.float32)
>>> loss, grad = model.loss_and_grad(flat, X, Y)
>>> ctx = Context(training=True, workspace=Workspace(), need_input_grad=False)
>>> loss2, grad2 = model.loss_and_grad(flat, X, Y, ctx=ctx)
>>> loss == loss2 and bool(np.array_equal(grad, grad2)), grad.shape == (model.n_params,)
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import backend as bk
from ..backend import aligned as _aligned_any
from ..backend import device, namespace, to_device_of
from .combinators import Chain
from .layers import Context, Layer, Shape
from .losses import get_loss

__all__ = ["Sequential"]

Array = Any

_PREDICT = Context(training=False)
_TRAIN = Context(training=True, need_input_grad=False)


def aligned(x: Array) -> Array:
    """:func:`pipeline.backend.aligned`, with the NumPy test first (twice per training step)."""
    if type(x) is np.ndarray:
        return x if x.flags.aligned else np.array(x, copy=True)
    return _aligned_any(x)


def _unpack(model: Sequential, flat: Array) -> list[Array]:
    return model.unpack(flat)


class Sequential:
    """``layers`` applied in order to inputs of shape ``(n, *in_shape)``, trained on ``loss``.

    Parameters
    ----------
    layers : sequence of Layer
        The last one gives the raw outputs ``z``, shape ``(n, n_outputs)``; the loss's output
        activation (logistic, softmax or identity) is applied by :meth:`forward`.
    loss : str
        ``"binary_log_loss"``, ``"log_loss"`` or ``"squared_error"`` (see
        :mod:`pipeline.nn.losses`).
    in_shape : int or tuple of int
        Shape of one sample.
    name : str, optional
        How error messages call the model.
    """

    def __init__(self, layers: Sequence[Layer], *, loss: str, in_shape: int | Shape,
                 name: str | None = None) -> None:
        self.body = Chain(layers)
        self.loss = get_loss(loss).name
        self._loss = get_loss(loss)
        self.in_shape = (int(in_shape),) if isinstance(in_shape, int) else tuple(
            int(s) for s in in_shape)
        shapes, out = self.body.build(self.in_shape)
        if len(out) != 1:
            raise ValueError(f"the last layer must output (n_outputs,), got {out}")
        self.n_outputs = int(out[0])
        self.param_shapes = shapes
        self._penalized = self.body.penalized(shapes)
        self.slices: list[tuple[int, int]] = []
        start = 0
        for shape in shapes:
            self.slices.append((start, start + math.prod(shape)))
            start += math.prod(shape)
        self.n_params = start
        self.name = name or f"Sequential({self.body.layers!r})"

    @property
    def layers(self) -> list[Layer]:
        return self.body.layers

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (what a checkpoint compares before resuming)."""
        return {"layers": [repr(layer) for layer in self.layers], "loss": self.loss,
                "in_shape": list(self.in_shape)}

    def __repr__(self) -> str:
        return (f"Sequential({self.body.layers!r}, loss={self.loss!r}, "
                f"in_shape={self.in_shape!r})")

    # --- parameters ---------------------------------------------------------------------------

    def init_params(self, random_state: Any = None, dtype: Any = np.float32) -> np.ndarray:
        """A fresh host NumPy flat buffer: each layer's ``init`` in order, all drawn from one
        ``np.random.default_rng(random_state)`` (advanced if a Generator), in float64, then
        cast to ``dtype``."""
        rng = np.random.default_rng(random_state)
        pieces = [np.asarray(p, dtype=np.float64).ravel()
                  for p in self.body.init(rng, self.in_shape)]
        flat = np.concatenate(pieces) if pieces else np.zeros(0)
        return flat.astype(dtype, copy=False)

    def _check_flat(self, flat: Array) -> None:
        if tuple(flat.shape) != (self.n_params,):
            raise ValueError(f"flat parameters must have shape ({self.n_params},) for "
                             f"{self.name}, got {tuple(flat.shape)}")

    def unpack(self, flat: Array) -> list[Array]:
        """Every parameter as a view of ``flat`` (NumPy, CuPy), in flat-buffer order."""
        self._check_flat(flat)
        return [bk.reshape(flat[a:b], s)
                for (a, b), s in zip(self.slices, self.param_shapes, strict=True)]

    def _views(self, name: str, flat: Array, ws: Any) -> list[Array]:
        """:meth:`unpack`, kept in workspace ``ws`` (if any) while ``flat`` and this model stay
        the same objects: a step reuses the views of its buffers instead of rebuilding them.
        The list is shared: read it, do not change it."""
        if ws is None:
            return self.unpack(flat)
        return ws.memo(name, (self, flat), _unpack)

    @staticmethod
    def compute_dtype(X: Array) -> Any:
        """The dtype parameters, activations and gradients take for inputs ``X``: X's own if it
        is floating point, else float32 (integer pixels, which the first layers convert)."""
        if type(X) is np.ndarray:  # NumPy's "real floating" dtypes are its kind "f"
            return X.dtype if X.dtype.kind == "f" else np.float32
        xp = namespace(X)
        return X.dtype if xp.isdtype(X.dtype, "real floating") else xp.float32

    def _params_like(self, flat: Array, X: Array, ctx: Context) -> list[Array]:
        """``flat`` (host or device) as parameter views in X's namespace and device, in
        :meth:`compute_dtype`."""
        dtype = self.compute_dtype(X)
        self._check_flat(flat)
        if type(flat) is np.ndarray and type(X) is np.ndarray and flat.dtype == dtype:
            # host parameters for host data, already in the compute dtype: used as they are
            # (what to_device_of returns for them), views kept while flat is the same array
            return self._views("params", aligned(flat), ctx.workspace)
        if (isinstance(flat, np.ndarray) and isinstance(X, np.ndarray)
                and flat.dtype != dtype and ctx.workspace is not None):
            # Host float64 parameters for float32 data: cast into a reused buffer (the same
            # rounding as asarray's cast).
            buf = ctx.buffer("params", (self.n_params,), X, dtype)
            np.copyto(buf, flat, casting="unsafe")
            flat = buf
        else:
            # through the host when flat is on another device (CuPy parameters, NumPy data)
            flat = to_device_of(flat, X, dtype=dtype)
        return self._views("params", aligned(flat), ctx.workspace)

    # --- forward ------------------------------------------------------------------------------

    def _check_X(self, X: Array) -> None:
        if X.ndim != 1 + len(self.in_shape) or tuple(X.shape[1:]) != self.in_shape:
            want = ", ".join(str(s) for s in self.in_shape)
            raise ValueError(f"X must have shape (n_samples, {want}), got {tuple(X.shape)}")

    def decision_function(self, flat: Array, X: Array, ctx: Context | None = None) -> Array:
        """Raw outputs ``z``, shape ``(n_samples, n_outputs)``, in X's namespace and dtype.

        ``ctx`` defaults to prediction (``training=False``, no workspace); with a workspace the
        result is a buffer of it, valid until its next use."""
        self._check_X(X)
        ctx = _PREDICT if ctx is None else ctx
        params = self._params_like(flat, X, ctx)
        # BLAS, not NumPy's fallback loop: same bits wherever X was deserialized.
        return self.body.forward(params, aligned(X), ctx)[0]

    def forward(self, flat: Array, X: Array, ctx: Context | None = None) -> Array:
        """Outputs after the loss's output activation: probabilities for the log losses,
        predictions for ``squared_error``; shape ``(n_samples, n_outputs)``."""
        return self._loss.output(self.decision_function(flat, X, ctx))

    # --- training -----------------------------------------------------------------------------

    def loss_and_grad(self, flat: Array, X: Array, Y: Array, sample_weight: Array | None = None,
                      ctx: Context | None = None) -> tuple[float, Array]:
        """Summed data loss over the rows of ``X`` and its gradient w.r.t. the flat parameters.

        ``loss`` is ``Σ_rows w_i ℓ_i`` (a sum, not a mean, no L2 penalty: partitions' losses and
        gradients add up), accumulated in float64. ``grad`` has shape ``(n_params,)`` in X's
        namespace, device and dtype. ``flat`` may be on any namespace/device; ``Y`` is
        ``(n_samples, n_outputs)`` floats (0/1 columns, one-hot rows or values);
        ``sample_weight`` ``(n_samples,)`` multiplies each row's loss.

        ``ctx`` defaults to training mode without a workspace. With ``ctx.workspace`` every
        array of the step, ``grad`` included, is a workspace buffer (the same bits), valid until
        the next call with that workspace.
        """
        xp = namespace(X)
        ctx = _TRAIN if ctx is None else ctx
        self._check_X(X)
        n = X.shape[0]
        if tuple(Y.shape) != (n, self.n_outputs):
            raise ValueError(f"Y must have shape ({n}, {self.n_outputs}) to match X, got "
                             f"{tuple(Y.shape)}")
        ws = ctx.workspace
        params = self._params_like(flat, X, ctx)
        dtype = self.compute_dtype(X)
        if n == 0:
            return 0.0, xp.zeros((self.n_params,), dtype=dtype, device=device(X))
        if not (type(Y) is np.ndarray and type(X) is np.ndarray and Y.dtype == dtype):
            Y = to_device_of(Y, X, dtype=dtype)  # (what it returns for host Y of that dtype: Y)

        z, cache = self.body.forward(params, aligned(X), ctx)
        row_loss, dz = self._loss.row_loss_and_delta(z, Y, None if ws is None else
                                                     ws.child("loss"))
        if sample_weight is not None:
            sw = to_device_of(sample_weight, X, dtype=dtype)
            if tuple(sw.shape) != (n,):
                raise ValueError(f"sample_weight must have shape ({n},), got {tuple(sw.shape)}")
            # row_loss and dz are this step's own arrays (fresh or workspace): scale in place
            # when buffered.
            row_loss = bk.elementwise("multiply", row_loss, sw,
                                      out=None if ws is None else row_loss)
            dz = bk.elementwise("multiply", dz, bk.reshape(sw, (-1, 1)),
                                out=None if ws is None else dz)
        loss = bk.total(row_loss, xp.float64)

        grad = ctx.buffer("grad", (self.n_params,), X, dtype)
        if grad is None:
            grad = xp.zeros((self.n_params,), dtype=dtype, device=device(X))
        self.body.backward(params, cache, dz, ctx, self._views("grad", grad, ws))
        return loss, grad

    def l2_penalty(self, flat: Array, alpha: float, n_samples: float,
                   ctx: Context | None = None) -> tuple[float, Array]:
        """scikit-learn's penalty ``0.5 * alpha * Σ W² / n_samples`` and its gradient.

        Weights only (parameters of 2 or more dimensions: dense kernels, embedding tables), not
        biases or normalisation parameters. ``n_samples`` is the number of rows (or total
        sample weight) the data loss is divided by. The gradient is ``alpha * W / n_samples``
        at weight positions and 0 elsewhere, in ``flat``'s namespace, device and dtype.

        With ``ctx.workspace`` (NumPy, CuPy) the gradient is a workspace buffer, valid until
        the next call with that workspace (the same bits: the same operations, written into
        reused buffers; the zeros at unpenalised positions are written once per buffer).
        """
        xp = namespace(flat)
        if not n_samples > 0:
            raise ValueError(f"n_samples must be > 0, got {n_samples!r}")
        scale = float(alpha) / float(n_samples)
        total = 0.0
        ws = None if ctx is None else ctx.workspace
        grad = None if ws is None else ws.get("l2_grad", (self.n_params,), flat)
        if ws is None or grad is None:
            grad = xp.zeros_like(flat)
            for (a, b), W, penalized in zip(self.slices, self.unpack(flat), self._penalized,
                                            strict=True):
                if penalized:
                    total += float(xp.sum(W * W, dtype=xp.float64))
                    grad[a:b] = bk.reshape(W, (-1,)) * scale
            return 0.5 * scale * total, grad
        pairs = [(W, G) for W, G, penalized in zip(
            self._views("params", flat, ws), ws.memo("l2_grad", (self, grad), _zeroed_views),
            self._penalized, strict=True) if penalized]
        if scale == 0.0 and pairs:
            # alpha = 0 (the tabular default): the penalty 0.0 * total is 0.0 when total is
            # finite, else NaN; total (float64 sums of the float32 squares W * W: no overflow
            # in float64) is finite exactly when every square is, and so is the largest square
            # (NaN if any is), which answers without the float64 sums: 0.0 * it is the same
            # value. The gradient is W * 0.0 as below, signed zeros and NaNs included.
            for W, G in pairs:
                bk.elementwise("multiply", W, W, out=G)
            top = float(bk.reduce("max", grad, axis=0, out=ws.get("l2_top", (), grad)))
            for W, G in pairs:
                bk.elementwise("multiply", W, scale, out=G)
            return 0.5 * scale * top, grad
        for W, G in pairs:  # W * W goes through G, then W * scale overwrites it
            total += bk.total(bk.elementwise("multiply", W, W, out=G), xp.float64)
            bk.elementwise("multiply", W, scale, out=G)
        return 0.5 * scale * total, grad


def _zeroed_views(model: Sequential, grad: Array) -> list[Array]:
    """``model.unpack(grad)``, with the positions the penalty leaves alone set to 0."""
    views = model.unpack(grad)
    for G, penalized in zip(views, model._penalized, strict=True):
        if not penalized:
            G[...] = 0
    return views
