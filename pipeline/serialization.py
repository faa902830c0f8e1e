"""The on-disk format shared by model files and checkpoints, without pickle.

The lowest persistence layer: it knows the format, not the classes. Whoever saves or loads passes
the *registry* (``{class name: class}``, an allow-list: nothing is imported by name from a
file), so this module never imports the estimators, the trainer or the optimizers that use it.

A saved object set is a directory:

``model.json``
    ``{"format": "dask-pipeline", "format_version": 1, "kind": "model", "versions": {...},
    "objects": {"model": {...}, "preprocessor": {...}}, "sha256": {"arrays.npz": "..."}}``.
    Each object records its class (one of an allow-list: nothing is imported by name from the
    file), its ``get_params()`` and its fitted attributes. JSON-able values are stored inline;
    arrays are stored in ``arrays.npz`` under ``"<object>/<attribute>[/<index>]"`` and referenced as
    ``{"__array__": name}``.
``arrays.npz``
    NumPy arrays (numeric or fixed-width string), read with ``allow_pickle=False``.

Loading checks the format tag, the version and the SHA-256 of ``arrays.npz``, so a foreign or
tampered file is refused with a clear error instead of being half-read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFormatError", "atomic_write", "dump_objects",
           "read_dir", "read_objects", "write_dir"]

Registry = dict[str, type]

FORMAT = "dask-pipeline"
FORMAT_VERSION = 1
MANIFEST = "model.json"
ARRAYS = "arrays.npz"


class ModelFormatError(ValueError):
    """The file is not a model saved by this library, or it was modified after saving."""


def _versions() -> dict[str, str]:
    import dask
    import sklearn

    from . import __version__

    return {
        "dask-pipeline": __version__,
        "numpy": np.__version__,
        "dask": dask.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


class _Encoder:
    """Turns attribute values into JSON plus named arrays, and back."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.arrays: dict[str, np.ndarray] = {}

    def encode(self, value: Any, name: str) -> Any:
        from .backend import to_host

        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            f = float(value)
            return f if np.isfinite(f) else {"__float__": repr(f)}
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # NamedTuple (MLPSpec is not)
            return {
                "__namedtuple__": type(value).__name__,
                "fields": {k: self.encode(v, f"{name}/{k}") for k, v in value._asdict().items()},
            }
        if hasattr(value, "get_config") and self.registry.get(type(value).__name__) is type(value):
            # a layer (pipeline.nn.Layer): its class name and constructor arguments
            return {"__config__": type(value).__name__,
                    "fields": self.encode(value.get_config(), f"{name}/config")}
        if hasattr(value, "__dataclass_fields__"):
            return {
                "__dataclass__": type(value).__name__,
                "fields": {
                    k: self.encode(getattr(value, k), f"{name}/{k}")
                    for k in value.__dataclass_fields__
                },
            }
        if hasattr(value, "get_params") and self.registry.get(type(value).__name__) is type(value):
            return {"__estimator__": _object_record(value, name, self)}  # a fitted sub-estimator
        if isinstance(value, (list, tuple)):
            items = [self.encode(v, f"{name}/{i}") for i, v in enumerate(value)]
            return items if isinstance(value, list) else {"__tuple__": items}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                return {"__dict_items__": [[self.encode(k, f"{name}/k{i}"),
                                            self.encode(v, f"{name}/v{i}")]
                                           for i, (k, v) in enumerate(value.items())]}
            return {"__dict__": {k: self.encode(v, f"{name}/{k}") for k, v in value.items()}}
        if isinstance(value, pd.Series):
            return {"__series__": {
                "index": self.encode(np.asarray(value.index, dtype=object), f"{name}/index"),
                "values": self.encode(value.to_numpy(), f"{name}/values"),
                "name": self.encode(value.name, f"{name}/name"),
            }}
        if (hasattr(value, "shape") and hasattr(value, "dtype")) or isinstance(value, np.ndarray):
            arr = np.asarray(to_host(value))
            strings = False
            if arr.dtype.kind == "O":
                kinds = {type(v) for v in arr.ravel().tolist()}
                if kinds <= {str}:
                    arr, strings = arr.astype(str), True
                else:
                    return {"__objarray__": [self.encode(v, f"{name}/{i}")
                                             for i, v in enumerate(arr.ravel().tolist())],
                            "shape": list(arr.shape)}
            self.arrays[name] = np.array(arr, order="C", copy=True)  # keeps 0-d arrays 0-d
            # object arrays of str (column names, string classes) come back as such, not as
            # np.str_ elements (which print as np.str_('x') in messages)
            return {"__array__": name, "str_objects": True} if strings else {"__array__": name}
        raise TypeError(f"cannot save attribute {name!r} of type {type(value).__name__}")

    def decode(self, value: Any, arrays: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v, arrays) for v in value]
        if not isinstance(value, dict):
            return value
        if "__array__" in value:
            arr = arrays[value["__array__"]]
            return arr.astype(object) if value.get("str_objects") else arr
        if "__estimator__" in value:
            return _restore(value["__estimator__"], self, arrays)
        if "__float__" in value:
            return float(value["__float__"])
        if "__tuple__" in value:
            return tuple(self.decode(v, arrays) for v in value["__tuple__"])
        if "__dict__" in value:
            return {k: self.decode(v, arrays) for k, v in value["__dict__"].items()}
        if "__dict_items__" in value:
            return {self.decode(k, arrays): self.decode(v, arrays)
                    for k, v in value["__dict_items__"]}
        if "__series__" in value:
            parts = {k: self.decode(v, arrays) for k, v in value["__series__"].items()}
            index = np.asarray(parts["index"])
            return pd.Series(parts["values"], index=pd.Index(index, dtype=index.dtype),
                             name=parts["name"])
        if "__objarray__" in value:
            flat = [self.decode(v, arrays) for v in value["__objarray__"]]
            out = np.empty(len(flat), dtype=object)
            out[:] = flat
            return out.reshape(value["shape"])
        if "__config__" in value:
            cls = self.registry.get(value["__config__"])
            if cls is None or not hasattr(cls, "get_config"):
                raise ModelFormatError(f"unknown layer type {value['__config__']!r} in the "
                                       "saved model")
            return cls(**self.decode(value["fields"], arrays))
        for tag in ("__namedtuple__", "__dataclass__"):
            if tag in value:
                cls = self.registry.get(value[tag])
                if cls is None:
                    raise ModelFormatError(f"unknown type {value[tag]!r} in the saved model")
                fields = {k: self.decode(v, arrays) for k, v in value["fields"].items()}
                return cls(**fields)
        raise ModelFormatError(f"unrecognised value in the saved model: {sorted(value)}")


def _object_record(obj: Any, key: str, enc: _Encoder) -> dict[str, Any]:
    cls = type(obj).__name__
    if enc.registry.get(cls) is not type(obj):
        raise TypeError(f"cannot save a {cls}: only this library's estimators are supported")
    fitted = {k: v for k, v in vars(obj).items() if k.endswith("_") and not k.startswith("__")}
    return {
        "class": cls,
        "params": enc.encode(obj.get_params(deep=False), f"{key}/params"),
        "fitted": {k: enc.encode(v, f"{key}/{k}") for k, v in fitted.items()},
    }


def _restore(record: dict[str, Any], enc: _Encoder, arrays: Any) -> Any:
    cls = enc.registry.get(record.get("class", ""))
    if cls is None:
        raise ModelFormatError(f"unknown estimator class {record.get('class')!r}")
    obj = cls(**enc.decode(record["params"], arrays))
    for k, v in record["fitted"].items():
        setattr(obj, k, enc.decode(v, arrays))
    return obj


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dump_objects(objects: dict[str, Any], registry: Registry,
                 extra: dict[str, Any] | None = None,
                 kind: str = "model") -> tuple[bytes, bytes]:
    """Serialise ``{name: estimator}`` to (manifest JSON bytes, npz bytes)."""
    enc = _Encoder(registry)
    records = {name: _object_record(obj, name, enc) for name, obj in objects.items()
               if obj is not None}
    extra_json = enc.encode(extra or {}, "extra")
    buf = io.BytesIO()
    np.savez(buf, **enc.arrays)
    npz = buf.getvalue()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "versions": _versions(),
        "objects": records,
        "extra": extra_json,
        "sha256": {ARRAYS: hashlib.sha256(npz).hexdigest()},
    }
    return json.dumps(manifest, indent=1, sort_keys=True).encode(), npz


def write_dir(path: str | os.PathLike[str], manifest: bytes, npz: bytes) -> str:
    """Write a manifest + arrays pair into ``path`` (created if needed), each file atomically;
    the manifest is written last, so a reader never sees a manifest without its arrays."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / ARRAYS, npz)
    atomic_write(out / MANIFEST, manifest)
    return str(out)


def read_dir(path: str | os.PathLike[str], kind: str = "model") -> tuple[dict[str, Any],
                                                                          dict[str, Any]]:
    """Read and verify a saved directory; returns (manifest, arrays)."""
    src = Path(path)
    manifest_path = src / MANIFEST if src.is_dir() else src
    src = manifest_path.parent
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} not found: {path} is not a saved model")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{manifest_path} is not a dask-pipeline manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFormatError(f"{manifest_path} was not written by dask-pipeline")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{manifest_path} has format version {manifest.get('format_version')}; this "
            f"version of dask-pipeline reads version {FORMAT_VERSION}"
        )
    if manifest.get("kind") != kind:
        raise ModelFormatError(f"{manifest_path} holds a {manifest.get('kind')!r}, not a {kind!r}")
    arrays_path = src / ARRAYS
    if not arrays_path.exists():
        raise ModelFormatError(f"{arrays_path} is missing")
    raw = arrays_path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != manifest.get("sha256", {}).get(ARRAYS):
        raise ModelFormatError(
            f"{arrays_path} does not match the checksum in {manifest_path}: the file was "
            "modified or corrupted after saving"
        )
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as exc:  # object arrays would need pickle: refuse
        raise ModelFormatError(f"{arrays_path} holds data that would need pickle: {exc}") from exc
    return manifest, arrays


def read_objects(path: str | os.PathLike[str], registry: Registry, kind: str = "model",
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Read and verify ``path``; returns (objects by name, decoded extra, manifest)."""
    manifest, arrays = read_dir(path, kind=kind)
    enc = _Encoder(registry)
    objects = {name: _restore(rec, enc, arrays)
               for name, rec in manifest.get("objects", {}).items()}
    return objects, enc.decode(manifest.get("extra", {}), arrays), manifest


def write_model(path: str | os.PathLike[str], model: Any, registry: Registry, *,
                preprocessor: Any = None, metadata: dict[str, Any] | None = None) -> str:
    """Save a fitted model (and its preprocessor) to the directory ``path``. No pickle."""
    if not hasattr(model, "params_"):
        raise ValueError("only a fitted model can be saved: call fit first")
    manifest, npz = dump_objects({"model": model, "preprocessor": preprocessor}, registry,
                                 extra=metadata)
    return write_dir(path, manifest, npz)
