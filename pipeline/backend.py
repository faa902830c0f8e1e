"""Array and dataframe namespaces: the one place that knows NumPy from CuPy and pandas from cuDF.

Numeric code elsewhere asks the data for its namespace (``xp = namespace(X)``) and creates new
arrays on the input's device. Moving data between devices happens only here, in :func:`to_host`
and :func:`to_device_of`. :func:`namespace` and the ``out=`` helpers (:func:`matmul`,
:func:`take_rows`, ...) are defined in :mod:`pipeline.array_ops` and re-exported here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from array_api_compat import (
    device,
    is_array_api_obj,
    is_cupy_array,
    is_numpy_array,
)

# The namespace lookup and the ``out=`` helpers live in their own module; every name stays
# importable from here (``bk.matmul``, ``backend.take_rows``, ...).
from .array_ops import (
    astype,
    clip,
    column_major,
    elementwise,
    masked,
    matmul,
    namespace,
    permute_dims,
    reduce,
    reshape,
    supports_out,
    take_rows,
    total,
)

__all__ = [
    "aligned",
    "astype",
    "clip",
    "column_major",
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
    "permute_dims",
    "preferred_device",
    "reduce",
    "reshape",
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
