"""Array namespaces and the operations that write into preallocated buffers; re-exported by
:mod:`pipeline.backend`.

:func:`namespace` is the array-API namespace of some arrays, memoised by array type (the hot
loops ask it several times per mini-batch step).

The ``out=`` helpers are the one place that knows which namespaces take ``out=``: NumPy and CuPy
write results straight into a reused buffer (no fresh memory, so no page faults in a worker
started with ``MALLOC_TRIM_THRESHOLD_``); other array-API namespaces compute the plain
expression and copy it into ``out``. With ``out=None`` every helper is exactly the plain
expression, so a caller without buffers gets the bits it always got.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_cupy_array

__all__ = ["astype", "clip", "column_major", "elementwise", "masked", "matmul", "namespace",
           "permute_dims", "reduce", "reshape", "supports_out", "take_rows", "total"]


_NAMESPACES: dict[type, Any] = {}


def namespace(*arrays: Any) -> Any:
    """The array-API namespace of ``arrays`` (numpy, cupy, array_api_strict, ...).

    Memoised by array type: the hot loops ask it several times per mini-batch step, and
    ``array_namespace`` itself costs microseconds per call.
    """
    if len(arrays) == 1:  # the usual call: no generator to build
        xp = _NAMESPACES.get(type(arrays[0]))
        if xp is not None:
            return xp
    kind = type(arrays[0]) if arrays else None
    if kind is not None and all(type(a) is kind for a in arrays[1:]):
        xp = _NAMESPACES.get(kind)
        if xp is None:
            xp = _NAMESPACES[kind] = array_namespace(arrays[0])
        return xp
    return array_namespace(*arrays)


def reshape(x: Any, shape: tuple[int, ...]) -> Any:
    """``xp.reshape(x, shape)``: for a NumPy array its own ``reshape`` (the same view, or copy
    where no view exists, without array_api_compat's wrapper: ~0.15 against ~0.75 us, and a
    network's step makes dozens)."""
    if type(x) is np.ndarray:
        return x.reshape(shape)
    return namespace(x).reshape(x, shape)


def column_major(a: Any) -> bool:
    """``a`` a NumPy matrix laid out column by column (Fortran order; not also row-major, as a
    single row or column is): the input layer's arrays in a column-major step
    (:class:`pipeline.nn.ColumnSplit`)."""
    return type(a) is np.ndarray and a.ndim == 2 and a.flags.f_contiguous \
        and not a.flags.c_contiguous


def permute_dims(x: Any, axes: tuple[int, ...]) -> Any:
    """``xp.permute_dims(x, axes)``: for a NumPy array its own ``transpose`` (the same view)."""
    if type(x) is np.ndarray:
        return x.transpose(axes)
    return namespace(x).permute_dims(x, axes)


# ---------------------------------------------------------------------------------------------
# Writing into preallocated buffers.


def _out_module(x: Any) -> Any:
    """The raw NumPy/CuPy module whose functions accept ``out=`` for ``x``, else ``None``."""
    if isinstance(x, np.ndarray):
        return np
    if is_cupy_array(x):
        return sys.modules["cupy"]  # imported: a CuPy array exists
    return None


def supports_out(x: Any) -> bool:
    """True if ``x``'s namespace writes results into ``out=`` buffers (NumPy, CuPy)."""
    return _out_module(x) is not None


def _store(out: Any, value: Any) -> Any:
    out[...] = value
    return out


# Plain NumPy buffers (the per-step hot path: ~60 calls per mini-batch step) skip the generic
# dispatch and call the ufunc straight away: the same function with the same arguments, so the
# same bits, without a module lookup and a getattr per call.
_NP_FUNCS: dict[str, Any] = {}
_NP_REDUCERS = {"sum": np.add.reduce, "max": np.maximum.reduce, "min": np.minimum.reduce,
                "prod": np.multiply.reduce}  # what np.sum/np.max/... call for an ndarray


def _np_func(name: str) -> Any:
    fn = _NP_FUNCS.get(name)
    if fn is None:
        fn = _NP_FUNCS[name] = getattr(np, name)
    return fn


def matmul(a: Any, b: Any, out: Any = None) -> Any:
    """``a @ b``, written into ``out`` when given (same bits: the same BLAS call)."""
    if out is None:
        return a @ b
    if type(out) is np.ndarray:
        return np.matmul(a, b, out=out)
    mod = _out_module(out)
    return mod.matmul(a, b, out=out) if mod is not None else _store(out, a @ b)


def elementwise(name: str, *args: Any, out: Any = None) -> Any:
    """The array-API element-wise function ``name`` (``"add"``, ``"multiply"``, ``"exp"``, ...)
    of ``args`` (arrays or Python scalars), written into ``out`` when given."""
    if type(out) is np.ndarray:
        return _np_func(name)(*args, out=out)
    mod = None if out is None else _out_module(out)
    if mod is not None:
        return getattr(mod, name)(*args, out=out)
    like = next(a for a in args if not isinstance(a, (int, float, bool)))
    value = getattr(namespace(like), name)(*args)
    return value if out is None else _store(out, value)


def clip(x: Any, lo: float | None, hi: float | None, out: Any = None) -> Any:
    """``clip(x, lo, hi)``, written into ``out`` when given."""
    if out is None:
        return namespace(x).clip(x, lo, hi)
    if type(out) is np.ndarray and type(x) is np.ndarray and x.dtype.kind == "f":
        # what np.clip does for floats with one bound (numpy/_core/_methods.py: _clip)
        if hi is None and lo is not None:
            return np.maximum(x, lo, out=out)
        if lo is None and hi is not None:
            return np.minimum(x, hi, out=out)
    mod = _out_module(out)
    if mod is not None:
        return mod.clip(x, lo, hi, out=out)
    return _store(out, namespace(x).clip(x, lo, hi))


def reduce(name: str, x: Any, axis: int | tuple[int, ...], keepdims: bool = False,
           out: Any = None) -> Any:
    """``xp.sum``/``xp.max``/... of ``x`` over ``axis``, written into ``out`` when given."""
    if out is None:
        return getattr(namespace(x), name)(x, axis=axis, keepdims=keepdims)
    if type(out) is np.ndarray and type(x) is np.ndarray and name in _NP_REDUCERS:
        return _NP_REDUCERS[name](x, axis=axis, out=out, keepdims=keepdims)
    mod = _out_module(out)
    if mod is not None:
        return getattr(mod, name)(x, axis=axis, keepdims=keepdims, out=out)
    return _store(out, getattr(namespace(x), name)(x, axis=axis, keepdims=keepdims))


def masked(x: Any, mask: Any, out: Any = None, scratch: Any = None) -> Any:
    """``x * astype(mask, x.dtype)`` for a boolean ``mask``, written into ``out`` when given.

    NumPy multiplies by the booleans straight away (the ufunc casts each to 0 or 1 in its
    loop: the same products, without the float copy of the mask); other namespaces cast
    ``mask`` first (into ``scratch`` when given), as the array API wants.
    """
    if type(out) is np.ndarray and type(x) is np.ndarray and type(mask) is np.ndarray:
        return np.multiply(x, mask, out=out)
    return elementwise("multiply", x, astype(mask, x.dtype, out=scratch), out=out)


def total(x: Any, dtype: Any) -> float:
    """``float(xp.sum(x, dtype=dtype))``: the sum of every element, accumulated in ``dtype``
    (on NumPy the reduction ``np.sum`` itself calls, without its wrapper)."""
    if type(x) is np.ndarray:
        return float(np.add.reduce(x, axis=None, dtype=dtype))
    return float(namespace(x).sum(x, dtype=dtype))


def astype(x: Any, dtype: Any, out: Any = None) -> Any:
    """``xp.astype(x, dtype)``, written into ``out`` (of that dtype) when given."""
    if out is None:
        return namespace(x).astype(x, dtype)
    if _out_module(out) is not None:
        return _store(out, x)  # NumPy/CuPy assignment casts (unsafely, as astype does)
    return _store(out, namespace(x).astype(x, dtype))


def take_rows(X: Any, idx: Any, out: Any = None, in_range: bool = False) -> Any:
    """``xp.take(X, idx, axis=0)``: the rows ``idx`` of ``X``, written into ``out`` when given.

    ``idx`` holds integer row numbers in ``[0, X.shape[0])``; out-of-range rows raise
    ``IndexError`` on every path. (NumPy's ``take(..., out=)`` in its default ``mode="raise"``
    copies through a fresh temporary, so the ``out=`` path checks the bounds itself and then
    gathers with ``mode="clip"``, which writes in place.) ``in_range=True`` is the caller's
    word that every row number is in range (a permutation of the rows): no check.
    """
    if out is None:
        return namespace(X).take(X, idx, axis=0)
    mod = _out_module(out)
    if mod is None:
        return _store(out, namespace(X).take(X, idx, axis=0))
    n = X.shape[0]
    if not in_range and idx.shape[0] and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"row indices must lie in [0, {n}), got [{int(idx.min())}, "
                         f"{int(idx.max())}]")
    return mod.take(X, idx, axis=0, out=out, mode="clip")
