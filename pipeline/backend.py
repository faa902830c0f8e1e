"""Array and dataframe namespaces: the one place that knows NumPy from CuPy and pandas from cuDF.

Numeric code elsewhere asks the data for its namespace (``xp = namespace(X)``) and creates new
arrays on the input's device. Moving data between devices happens only here, in :func:`to_host`
and :func:`to_device_of`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
from array_api_compat import (
    array_namespace,
    device,
    is_array_api_obj,
    is_cupy_array,
    is_numpy_array,
)

__all__ = [
    "aligned",
    "astype",
    "clip",
    "device",
    "elementwise",
    "frame_to_array",
    "gpu_count",
    "is_cudf",
    "masked",
    "matmul",
    "namespace",
    "on_one_device",
    "owned",
    "preferred_device",
    "reduce",
    "supports_out",
    "take_rows",
    "to_device_of",
    "to_host",
    "to_worker_device",
    "total",
    "uint64_bits",
    "values_of",
    "worker_device",
]

DEVICE_ENV = "PIPELINE_DEVICE"


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


def to_host(x: Any) -> np.ndarray:
    """Copy an array to host memory as a NumPy array (no copy if it already is one).

    This is the named boundary where device data meets the host: gradients from CuPy blocks
    cross here when a round mixes devices, and results cross here before they reach the client.
    """
    if is_numpy_array(x) or np.isscalar(x):
        return np.asarray(x)
    if is_cupy_array(x):
        return x.get()
    if hasattr(x, "to_pandas"):  # cudf Series/DataFrame
        return x.to_pandas().to_numpy()
    # array_api_strict and other standard arrays: go through DLPack / buffer protocol.
    try:
        return np.from_dlpack(x)
    except (TypeError, RuntimeError, BufferError, AttributeError):
        return np.asarray(x)


def aligned(x: Any) -> Any:
    """``x``, copied if it is a NumPy array that is not aligned for its dtype.

    Arrays that Dask deserializes on a worker are often views into message frames at arbitrary
    byte offsets. NumPy's ``matmul`` hands only aligned arrays to BLAS and uses its own loop for
    the others, which rounds differently: without this copy, a model's bits would depend on where
    the parameters landed in a message (and the fallback is several times slower).
    """
    if is_numpy_array(x) and not x.flags.aligned:
        return np.array(x, copy=True)
    return x


def owned(x: Any) -> Any:
    """``x`` as an array that owns aligned, C-contiguous memory (copied once if it does not).

    Long-lived training blocks go through this: a block built from client data arrives as a view
    into the Dask message it came in, at an arbitrary byte offset, and every later mini-batch
    ``take`` from such a view costs ~40x more and leaves BLAS. Other namespaces (CuPy allocates
    aligned device memory) only need contiguity.
    """
    if is_numpy_array(x):
        if x.flags.c_contiguous and x.flags.aligned and x.flags.owndata:
            return x
        out = np.empty(x.shape, dtype=x.dtype)  # NumPy's allocator aligns (64 bytes here)
        out[...] = x
        return out
    if is_cupy_array(x):
        return x if x.flags.c_contiguous else x.copy()
    return x


def to_device_of(x: Any, like: Any, dtype: Any = None) -> Any:
    """``x`` (host or device, any namespace) as an array of ``like``'s namespace on ``like``'s
    device, cast to ``dtype`` when given.

    An array of another namespace crosses through the host first: NumPy cannot read CuPy
    memory (``np.asarray`` on a CuPy array raises), so a CuPy parameter vector meeting NumPy
    data, or CuPy predictions meeting host labels, must be copied back explicitly. NumPy input
    (and Python sequences) go straight to ``like``'s namespace, which reads host memory.
    """
    xp = namespace(like)
    if is_array_api_obj(x) and not is_numpy_array(x) and namespace(x) is not xp:
        x = to_host(x)
    return xp.asarray(x, dtype=dtype, device=device(like))


def on_one_device(*arrays: Any) -> tuple[Any, ...]:
    """``arrays`` (``None`` passes through) in one namespace on one device.

    Unchanged if they already share one. Otherwise host arrays of numbers (or booleans) join
    the device arrays when those share one device; if any array cannot go there (strings, which
    CuPy cannot hold) or the device arrays disagree, all meet on the host as NumPy arrays. The
    meeting point of, e.g., string labels kept on the host and scores computed on a GPU.
    """
    present = [a for a in arrays if a is not None]
    if _one_device(present):
        return arrays
    on_device = [a for a in present if not is_numpy_array(a)]
    numeric_host = all(a.dtype.kind in "biuf" for a in present if is_numpy_array(a))
    if on_device and numeric_host and _one_device(on_device):
        like = on_device[0]
        return tuple(to_device_of(a, like) if is_numpy_array(a) else a for a in arrays)
    return tuple(None if a is None else to_host(a) for a in arrays)


def _one_device(arrays: list[Any]) -> bool:
    if len(arrays) <= 1:
        return True
    try:
        namespace(*arrays)
    except TypeError:  # several namespaces
        return False
    return len({repr(device(a)) for a in arrays}) <= 1


def is_cudf(obj: Any) -> bool:
    """True for cuDF DataFrames/Series, without importing cudf."""
    return type(obj).__module__.split(".")[0] == "cudf"


def _device_resident(frame: Any) -> bool:
    """True if every column of a cuDF Series/DataFrame can become a CuPy array as it is:
    numeric or boolean, without nulls (CuPy has no strings, categoricals or missing values)."""
    columns = [frame] if not hasattr(frame, "columns") else [frame[c] for c in frame.columns]
    return all(isinstance(c.dtype, np.dtype) and c.dtype.kind in "biuf" and not c.null_count
               for c in columns)


def _c_contiguous(arr: Any) -> Any:
    if is_cupy_array(arr) and not arr.flags.c_contiguous:
        return arr.copy(order="C")  # DataFrame.to_cupy may hand back a column-major matrix
    return arr


def frame_to_array(frame: Any, dtype: Any = np.float32, na_value: Any = None) -> Any:
    """A pandas/cuDF DataFrame or Series as one contiguous 2-D array (NumPy or CuPy).

    A Series becomes an ``(n, 1)`` column. Never a view on the frame: the result owns its memory.
    ``na_value`` (e.g. ``np.nan``) replaces missing values (cuDF nulls, pandas ``NA``); without
    it a float column's NaN stays NaN and other missing values raise, as in pandas.
    """
    if is_cudf(frame):
        # Cast the columns first, then convert: each column is cast directly (as pandas does),
        # and to_cupy(dtype=...) returned corrupted data on multi-column frames before cuDF
        # 26.06 (rapidsai/cudf#22136).
        arr = _c_contiguous(frame.astype(dtype).to_cupy(na_value=na_value))
    elif na_value is not None:
        arr = np.ascontiguousarray(frame.to_numpy(dtype=dtype, na_value=na_value))
    else:
        arr = np.ascontiguousarray(np.asarray(frame, dtype=dtype))
    if arr.ndim == 1:
        arr = namespace(arr).reshape(arr, (-1, 1))
    return arr


def values_of(obj: Any) -> Any:
    """The values of a pandas/cuDF Series or DataFrame (labels, targets, metric inputs) as one
    array, on the data's device wherever it can live there; arrays pass through unchanged.

    cuDF numeric and boolean columns without nulls become CuPy arrays. Strings, categoricals
    and columns with nulls come to the host as pandas holds them after ``to_pandas()`` (strings
    and categories as their values, nulls as ``NaN`` in numeric columns, ``None`` in object
    ones): CuPy has no such arrays, and cuDF's ``to_cupy``/``.values`` raise for them. pandas
    objects become ``np.asarray(obj)``.
    """
    if is_cudf(obj):
        if _device_resident(obj):
            return _c_contiguous(obj.to_cupy())
        return np.asarray(obj.to_pandas())
    if hasattr(obj, "iloc") and not is_array_api_obj(obj):  # pandas Series/DataFrame
        return np.asarray(obj)
    return obj


def uint64_bits(x: Any) -> Any:
    """The bit pattern of each element of a numeric array, zero-extended to uint64, in ``x``'s
    namespace and on its device. Reinterpreting bits is not in the array API: NumPy and CuPy
    view the memory; other namespaces go through the host."""
    if is_numpy_array(x) or is_cupy_array(x):
        return x.view(f"u{x.dtype.itemsize}").astype("uint64")
    host = to_host(x)
    return to_device_of(host.view(f"u{host.dtype.itemsize}").astype(np.uint64), x)


def worker_device() -> str:
    """The device this Dask worker trains on: ``"gpu"`` or ``"cpu"``.

    Workers advertise their device with Dask worker resources (``dask worker --resources
    GPU=1``); ``PIPELINE_DEVICE=cpu|gpu`` in the worker's environment overrides. Outside a worker,
    or without either, ``"cpu"`` (data that already lives on a GPU stays there regardless).
    """
    choice = os.environ.get(DEVICE_ENV, "auto").lower()
    if choice in ("cpu", "gpu"):
        return choice
    try:
        from distributed import get_worker

        resources = get_worker().state.total_resources
    except (ValueError, AttributeError):
        return "cpu"
    return "gpu" if resources.get("GPU", 0) > 0 else "cpu"


def to_worker_device(x: Any) -> Any:
    """``x`` on the device of the worker running this task (see :func:`worker_device`).

    The one place where host data moves onto a GPU: a pandas partition read on a GPU worker of
    a mixed CPU+GPU cluster becomes a CuPy block here.
    """
    if x is None or worker_device() == "cpu" or not is_numpy_array(x):
        return x
    if x.dtype.kind not in "biuf":  # labels that are strings stay on the host
        return x
    import cupy  # only on workers that advertise a GPU

    return cupy.asarray(x)


def gpu_count() -> int:
    """Number of CUDA devices visible to this process, without creating a CUDA context.

    ``PIPELINE_DEVICE=cpu`` forces 0; ``PIPELINE_DEVICE=gpu`` forces at least 1.
    """
    choice = os.environ.get(DEVICE_ENV, "auto").lower()
    if choice == "cpu":
        return 0
    try:
        from distributed.diagnostics.nvml import device_get_count

        count = int(device_get_count())
    except Exception:  # no pynvml, no driver: a CPU machine
        count = 0
    if choice == "gpu":
        return max(count, 1)
    return count


def preferred_device() -> str:
    """``"gpu"`` if this process sees a CUDA device (or is told to), else ``"cpu"``."""
    return "gpu" if gpu_count() > 0 else "cpu"


# ---------------------------------------------------------------------------------------------
# Writing into preallocated buffers. The one place that knows which namespaces take ``out=``:
# NumPy and CuPy write results straight into a reused buffer (no fresh memory, so no page
# faults in a worker started with MALLOC_TRIM_THRESHOLD_); other array-API namespaces compute
# the plain expression and copy it into ``out``. With ``out=None`` every helper is exactly the
# plain expression, so a caller without buffers gets the bits it always got.


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
