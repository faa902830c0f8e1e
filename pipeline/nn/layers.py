"""Layers: each one's forward next to its backward, as in micrograd.

A layer is stateless apart from what :meth:`Layer.build` records about shapes: its parameters
come in as a list of arrays (views into one flat buffer, see :mod:`pipeline.nn.sequential`) and
its gradients go out by being written into the matching views of the flat gradient. Shapes
exclude the batch axis. Every array op goes through :mod:`pipeline.backend`'s ``out=`` helpers:
with a :class:`~pipeline.nn.workspace.Workspace` in the :class:`Context` the results land in
reused buffers, without one they are fresh arrays, and both are the same bits.

Activation backwards are written in terms of the activation's *output* ``a``, as scikit-learn
does, so the forward pass keeps one array per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend as bk
from ..backend import device, namespace
from .workspace import Workspace

__all__ = [
    "Context",
    "Dense",
    "Dropout",
    "Flatten",
    "Identity",
    "Layer",
    "LayerNorm",
    "Logistic",
    "ReLU",
    "Tanh",
    "logistic",
]

Array = Any
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Context:
    """What a forward/backward pass is for.

    training : bool
        Dropout (and augmentation) act only when True.
    key : tuple of int or None
        ``(seed, block, epoch, step)``: seeds every random draw of the step; chains append the
        layer's index, so two dropout layers draw different masks.
    workspace : Workspace or None
        Reused buffers (see :mod:`pipeline.nn.workspace`); chains hand each layer its child.
    need_input_grad : bool
        False lets the first layer skip ``dLoss/dx``, which nobody reads.
    """

    training: bool = False
    key: tuple[int, ...] | None = None
    workspace: Workspace | None = None
    need_input_grad: bool = True

    def buffer(self, name: str, shape: Shape, like: Array, dtype: Any = None) -> Array:
        """The workspace buffer ``name`` (see :meth:`Workspace.get`), or ``None`` without one:
        helpers given ``out=None`` allocate, so layers write one code path for both."""
        ws = self.workspace
        return None if ws is None else ws.get(name, shape, like, dtype)


_new = object.__new__


def make_context(training: bool, key: tuple[int, ...] | None, workspace: Workspace | None,
                 need_input_grad: bool) -> Context:
    """``Context(training, key, workspace, need_input_grad)``, built without the frozen
    dataclass's checked ``__init__`` (a context per layer per step: ~2.5x cheaper); equal to
    and indistinguishable from the one the constructor builds."""
    ctx = _new(Context)
    d = ctx.__dict__
    d["training"] = training
    d["key"] = key
    d["workspace"] = workspace
    d["need_input_grad"] = need_input_grad
    return ctx


class Layer:
    """Base class. Subclasses override :meth:`build`, :meth:`forward`, :meth:`backward` and,
    if they have parameters, :meth:`init`."""

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        """(parameter shapes in flat-buffer order, output shape); shapes exclude the batch."""
        raise NotImplementedError

    def init(self, rng: np.random.Generator, in_shape: Shape) -> list[np.ndarray]:
        """Fresh float64 host parameter arrays, in :meth:`build` order ([] without params)."""
        return []

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        """Output and the cache :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        """Writes dLoss/dparam into ``grads`` (views into the flat gradient, build() order; every
        element, they are not zeroed first) and returns dLoss/dx, or ``None`` when
        ``ctx.need_input_grad`` is False."""
        raise NotImplementedError

    def penalized(self, param_shapes: list[Shape]) -> list[bool]:
        """Which parameters the L2 penalty covers: weights (2-D and up: dense and conv kernels,
        embedding tables), not biases or normalisation scales/shifts (1-D)."""
        return [len(s) >= 2 for s in param_shapes]

    def get_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments that rebuild this layer (its public attributes):
        ``type(layer)(**layer.get_config())`` is an equal, unbuilt layer. Model files store
        layers this way (:mod:`pipeline.serialization`), never pickled."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({fields})"


def _flat_input(layer: Layer, in_shape: Shape) -> int:
    if len(in_shape) != 1:
        raise ValueError(f"{layer!r} needs inputs of shape (features,), got {in_shape}; "
                         "put a Flatten() before it")
    return int(in_shape[0])


def _matmul(a: Array, b: Array, out: Array) -> Array:
    """``bk.matmul(a, b, out=out)``; for a NumPy ``(m, 1) @ (1, p)`` product (``m, p > 1``: the
    output layer's ``dx`` of a one-output network, the first layer of a one-feature one), or a
    stack of them ``(s, m, 1) @ (s, 1, p)`` (an ensemble's one-output layer), into a NumPy
    buffer, the same numbers ~3-6x faster.

    NumPy computes that shape (a "column @ row" special case of its matmul loop) without BLAS,
    as ``out = 0; out += a * b`` in the arrays' dtype: one rounded product, then ``+ 0``, which
    turns a product of ``-0.0`` into ``+0.0``. ``np.multiply`` then ``np.add(., 0.0)`` are that
    arithmetic, element for element (tests/nn/test_fast_paths.py compares the bits).
    """
    if (a.shape[-1] == 1 and type(out) is np.ndarray and type(a) is np.ndarray
            and type(b) is np.ndarray and a.ndim == b.ndim and a.ndim in (2, 3)
            and a.shape[:-2] == b.shape[:-2] and a.shape[-2] > 1 and b.shape[-1] > 1
            and a.dtype == b.dtype == out.dtype and a.dtype in _FLOATS):
        # (stacked: NumPy's matmul runs that same loop on each matrix of the stack)
        np.multiply(a, b, out=out)
        return np.add(out, 0.0, out=out)
    return bk.matmul(a, b, out=out)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# Dense: y = x W + b, W of shape (fan_in, fan_out) stored row-major, then b.
class Dense(Layer):
    """Fully connected layer with ``units`` outputs.

    ``init`` draws ``W`` then ``b`` from ``uniform(-bound, bound)``, ``bound = sqrt(init_factor
    / (fan_in + fan_out))``: scikit-learn's Glorot init uses factor 2 before logistic units and
    6 otherwise.
    """

    def __init__(self, units: int, init_factor: float = 6.0) -> None:
        if int(units) < 1:
            raise ValueError(f"Dense units must be >= 1, got {units!r}")
        self.units = int(units)
        self.init_factor = float(init_factor)

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        fan_in = _flat_input(self, in_shape)
        return [(fan_in, self.units), (self.units,)], (self.units,)

    def init(self, rng: np.random.Generator, in_shape: Shape) -> list[np.ndarray]:
        fan_in = _flat_input(self, in_shape)
        bound = math.sqrt(self.init_factor / (fan_in + self.units))
        W = rng.uniform(-bound, bound, (fan_in, self.units))
        return [W, rng.uniform(-bound, bound, self.units)]

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        W, b = params
        out = ctx.buffer("z", (x.shape[0], self.units), x)
        return bk.elementwise("add", _matmul(x, W, out), b, out=out), x

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        W, _ = params
        x = cache
        bk.matmul(x.T, dy, out=grads[0])
        bk.reduce("sum", dy, axis=0, out=grads[1])
        if not ctx.need_input_grad:
            return None
        return _matmul(dy, W.T, ctx.buffer("dx", tuple(x.shape), dy))


class _Activation(Layer):
    """Element-wise, no parameters; output shape = input shape."""

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        return [], tuple(in_shape)


# identity: a = z
class Identity(_Activation):
    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        return x, None

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        return dy if ctx.need_input_grad else None


# relu: a = max(z, 0), a' = [a > 0]
class ReLU(_Activation):
    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        out = ctx.buffer("a", tuple(x.shape), x)
        if type(out) is np.ndarray and type(x) is np.ndarray and ctx.workspace is not None:
            # NumPy's maximum against a Python scalar takes its strided loop, ~4x slower than
            # against an array of zeros (the contiguous SIMD loop); the same bits for every
            # float32 (compared exhaustively) and float64 special value (tests/nn/test_fast_paths.py)
            return np.maximum(x, ctx.workspace.zeros(tuple(x.shape), x), out=out), out
        a = bk.elementwise("maximum", x, 0.0, out=out)
        return a, a

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        if not ctx.need_input_grad:
            return None
        a, shape = cache, tuple(cache.shape)
        xp = namespace(a)
        positive = bk.elementwise("greater", a, 0, out=ctx.buffer("mask", shape, a, xp.bool))
        out = ctx.buffer("dx", shape, dy)
        scratch = None if type(out) is np.ndarray else ctx.buffer("maskf", shape, dy)
        return bk.masked(dy, positive, out=out, scratch=scratch)


_EXP_LIMITS: dict[Any, float] = {}  # per array type and dtype: log(largest value) - 1


def logistic(z: Array, out: Array = None) -> Array:
    """``1 / (1 + exp(-z))``, into ``out`` when given."""
    # Clipping keeps exp(-z) finite; it only changes outputs that would be subnormal anyway.
    # (xp.where on the sign of z would be as exact but is ~5x slower in NumPy.)
    kind = (type(z), z.dtype)  # the array type first: dtypes of two libraries never compare
    limit = _EXP_LIMITS.get(kind)
    if limit is None:
        limit = _EXP_LIMITS[kind] = math.log(float(namespace(z).finfo(z.dtype).max)) - 1.0
    t = bk.clip(z, -limit, None, out=out)
    t = bk.elementwise("negative", t, out=out)
    t = bk.elementwise("exp", t, out=out)
    t = bk.elementwise("add", 1.0, t, out=out)
    return bk.elementwise("divide", 1.0, t, out=out)


# logistic: a = 1 / (1 + exp(-z)), a' = a (1 - a)
class Logistic(_Activation):
    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        a = logistic(x, out=ctx.buffer("a", tuple(x.shape), x))
        return a, a

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        if not ctx.need_input_grad:
            return None
        a, shape = cache, tuple(cache.shape)
        out = ctx.buffer("dx", shape, dy)
        dx = bk.elementwise("multiply", dy, a, out=out)
        one_minus_a = bk.elementwise("subtract", 1.0, a, out=ctx.buffer("t", shape, a))
        return bk.elementwise("multiply", dx, one_minus_a, out=out)


# tanh: a = tanh(z), a' = 1 - a²
class Tanh(_Activation):
    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        a = bk.elementwise("tanh", x, out=ctx.buffer("a", tuple(x.shape), x))
        return a, a

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        if not ctx.need_input_grad:
            return None
        a, shape = cache, tuple(cache.shape)
        t = ctx.buffer("t", shape, a)
        slope = bk.elementwise("subtract", 1.0, bk.elementwise("multiply", a, a, out=t), out=t)
        return bk.elementwise("multiply", dy, slope, out=ctx.buffer("dx", shape, dy))


# dropout (inverted): y = x * m / (1 - rate), m ~ Bernoulli(1 - rate), drawn on the host
class Dropout(Layer):
    """Inverted dropout: in training, zeroes each value with probability ``rate`` and scales
    the others by ``1 / (1 - rate)``, so expectations are unchanged; the identity otherwise.

    The mask is drawn on the host from ``np.random.default_rng(ctx.key)`` and moved to the data's
    device: a unit is dropped where its 16 random bits (the generator's raw 64-bit outputs read
    as four little-endian uint16 each) fall below ``round(rate * 65536)``, so the rate is kept
    to 2**-17 and the same key drops the same units in float32 and float64. A fifth of the work
    of float64 uniforms (~0.25 against ~1.1 ms for 1,024 x 256 units; the uniforms were ~12% of
    a tabular step at batch 1,024).
    Inside a :class:`~pipeline.nn.combinators.Chain` (so in any ``Sequential``) the key is the
    step's key with the layer's index appended.
    """

    def __init__(self, rate: float) -> None:
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        return [], tuple(in_shape)

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        if not ctx.training or self.rate == 0.0:
            return x, None
        if ctx.key is None:
            raise ValueError(f"{self!r} in training needs Context.key (seed, block, epoch, step)")
        shape, dtype = tuple(x.shape), x.dtype
        # NumPy data: the mask is drawn into workspace buffers and used where it lies. Other
        # namespaces: drawn into fresh host arrays, then copied to the data's device.
        on_host = isinstance(x, np.ndarray)
        host = ctx if on_host else Context()
        size = math.prod(shape)
        raw = np.random.default_rng(ctx.key).bit_generator.random_raw(-(-size // 4))
        u = raw.view("<u2")[:size].reshape(shape)
        threshold = np.uint16(min(round(self.rate * 65536), 65535))
        scale = host.buffer("scale", shape, x)
        if scale is not None and scale.dtype.kind == "f":
            # the comparison's booleans cast to 0.0/1.0 on the way out: astype's values,
            # without the boolean buffer and its pass
            scale = np.greater_equal(u, threshold, out=scale)
        else:
            keep = np.greater_equal(u, threshold,
                                    out=host.buffer("keep", shape, x, np.bool_))
            scale = bk.astype(keep, dtype if on_host else np.float64, out=scale)
        # scale is this layer's (a buffer or astype's fresh copy): scale it in place.
        scale = np.multiply(scale, scale.dtype.type(1.0 / (1.0 - self.rate)), out=scale)
        if not on_host:
            xp = namespace(x)
            scale = xp.asarray(scale, dtype=dtype, device=device(x))
        return bk.elementwise("multiply", x, scale, out=ctx.buffer("y", shape, x)), scale

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        if not ctx.need_input_grad:
            return None
        if cache is None:
            return dy
        return bk.elementwise("multiply", dy, cache, out=ctx.buffer("dx", tuple(dy.shape), dy))


# layer norm over the last axis: y = (x - mean) / sqrt(var + eps) * gamma + beta
class LayerNorm(Layer):
    """Normalises each sample over the last axis, then scales by ``gamma`` and shifts by
    ``beta`` (learned, shape ``(features,)``, initialised to 1 and 0)."""

    def __init__(self, eps: float = 1e-5) -> None:
        if not eps > 0:
            raise ValueError(f"LayerNorm eps must be > 0, got {eps!r}")
        self.eps = float(eps)

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        if len(in_shape) < 1:
            raise ValueError(f"{self!r} needs at least one feature axis, got {in_shape}")
        d = int(in_shape[-1])
        return [(d,), (d,)], tuple(in_shape)

    def init(self, rng: np.random.Generator, in_shape: Shape) -> list[np.ndarray]:
        d = int(in_shape[-1])
        return [np.ones(d), np.zeros(d)]

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        gamma, beta = params
        shape = tuple(x.shape)
        row = (*shape[:-1], 1)
        mu = bk.reduce("mean", x, axis=-1, keepdims=True, out=ctx.buffer("mu", row, x))
        xc = bk.elementwise("subtract", x, mu, out=ctx.buffer("xc", shape, x))
        t = ctx.buffer("t", shape, x)
        var = bk.reduce("mean", bk.elementwise("multiply", xc, xc, out=t), axis=-1,
                        keepdims=True, out=ctx.buffer("var", row, x))
        r = ctx.buffer("rstd", row, x)
        rstd = bk.elementwise("divide", 1.0, bk.elementwise(
            "sqrt", bk.elementwise("add", var, self.eps, out=r), out=r), out=r)
        xhat = bk.elementwise("multiply", xc, rstd, out=xc)
        y = ctx.buffer("y", shape, x)
        y = bk.elementwise("add", bk.elementwise("multiply", xhat, gamma, out=y), beta, out=y)
        return y, (xhat, rstd)

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        gamma, _ = params
        xhat, rstd = cache
        shape = tuple(dy.shape)
        batch_axes = tuple(range(len(shape) - 1))
        t = ctx.buffer("dt", shape, dy)
        bk.reduce("sum", bk.elementwise("multiply", dy, xhat, out=t), axis=batch_axes,
                  out=grads[0])
        bk.reduce("sum", dy, axis=batch_axes, out=grads[1])
        if not ctx.need_input_grad:
            return None
        # dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy gamma (mean over the last axis)
        row = (*shape[:-1], 1)
        g = bk.elementwise("multiply", dy, gamma, out=ctx.buffer("g", shape, dy))
        m1 = bk.reduce("mean", g, axis=-1, keepdims=True, out=ctx.buffer("m1", row, dy))
        m2 = bk.reduce("mean", bk.elementwise("multiply", g, xhat, out=t), axis=-1,
                       keepdims=True, out=ctx.buffer("m2", row, dy))
        t = bk.elementwise("multiply", xhat, m2, out=t)
        out = ctx.buffer("dx", shape, dy)
        dx = bk.elementwise("subtract", g, m1, out=out)
        dx = bk.elementwise("subtract", dx, t, out=out)
        return bk.elementwise("multiply", dx, rstd, out=out)


class Flatten(Layer):
    """``(batch, *in_shape) -> (batch, prod(in_shape))``: a view, no copy, no parameters."""

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        return [], (math.prod(in_shape),)

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        return bk.reshape(x, (x.shape[0], -1)), tuple(x.shape)

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        return namespace(dy).reshape(dy, cache) if ctx.need_input_grad else None
