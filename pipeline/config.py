"""Run configuration: one YAML or TOML file describes a whole job (``pipeline run CONFIG``).

Every section is a frozen dataclass; :func:`load_config` checks every key and type and names the
offending key and the allowed values in its error. ``pipeline demo`` runs the bundled
``configs/demo.yaml`` with command-line overrides.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OutputConfig",
    "PreprocessConfig",
    "RunConfig",
    "SplitConfig",
    "TrainSection",
    "bundled_config",
    "load_config",
]


class ConfigError(ValueError):
    """A configuration key is unknown, missing or of the wrong type/value."""


@dataclass(frozen=True)
class ClusterConfig:
    kind: Literal["local", "address", "kubernetes", "slurm"] = "local"
    address: str | None = None
    n_workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str | None = None  # per local worker, e.g. "2GiB" (None: Dask's "auto")
    device: Literal["auto", "cpu", "gpu"] = "auto"
    dashboard_address: str = "127.0.0.1:8787"
    # kubernetes: the DaskCluster resource to connect to; slurm: dask-jobqueue settings
    kubernetes_cluster: str | None = None
    namespace: str | None = None
    jobqueue: dict[str, Any] = field(default_factory=dict)
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True)
class GenerateConfig:
    rows: int = 1_000_000
    partitions: int = 16
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    path: str | None = None
    # "images": path is a folder of class sub-folders (pipeline.read_images); the label is the
    # folder name and the job trains model.type "image_classifier"
    format: Literal["csv", "parquet", "images"] | None = None
    label: str = "y"
    categorical: list[str] = field(default_factory=list)
    on_bad_rows: Literal["raise", "quarantine"] = "raise"
    quarantine_path: str | None = None
    generate: GenerateConfig | None = None


@dataclass(frozen=True)
class SplitConfig:
    test_size: float = 0.1
    valid_size: float | None = 0.1
    random_state: int = 0


@dataclass(frozen=True)
class PreprocessConfig:
    impute: Literal["mean", "median", "constant", "most_frequent"] | None = "mean"
    fill_value: float | None = None
    scale: bool = True
    max_categories: int = 1000
    add_indicator: bool = False


@dataclass(frozen=True)
class ModelConfig:
    type: Literal["classifier", "regressor", "image_classifier"] = "classifier"
    # "tabular": TabularClassifier/Regressor on the raw columns (own preprocessing, defaults)
    estimator: Literal["mlp", "tabular"] = "mlp"
    hidden_layer_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: Literal["relu", "tanh", "logistic", "identity"] = "relu"
    solver: Literal["adam", "sgd", "lbfgs"] = "adam"
    alpha: float = 1e-4
    learning_rate: Literal["constant", "invscaling", "adaptive"] = "constant"
    learning_rate_init: float = 1e-3
    momentum: float = 0.9
    dtype: Literal["float32", "float64"] = "float32"
    # image_classifier: the layers between input normalisation and output, each a mapping
    # {type: Conv2D | MaxPool2D | Dense | ReLU | ..., <constructor arguments>}; null: the default
    layers: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class TrainSection:
    max_iter: int = 10
    batch_size: int | None = 1024
    sync: Literal["gradient", "average"] = "average"
    local_steps: int | Literal["auto"] | None = "auto"
    replicas: int | Literal["auto"] | None = "auto"
    outer_learning_rate: float = 1.0
    outer_momentum: float = 0.5
    lr_scaling: Literal["linear", "sqrt"] | None = None  # large batches: scale the rate
    reference_batch_size: int = 256
    balance: Literal["none", "throughput"] = "none"
    split_every: int = 8
    block_store: Literal["memory", "disk", "stream", "auto"] = "memory"
    early_stopping: bool = False
    n_iter_no_change: int = 10
    tol: float = 1e-4
    random_state: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    resume: bool = False


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "pipeline-output"
    model: str = "model"
    report: str | None = "report.html"
    profile: str | None = "profile.html"
    predictions: str | None = None


@dataclass(frozen=True)
class RunConfig:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {_type_name(tp)}")
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} is not a {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {[f.name for f in fields(tp)]}")
        return _build(tp, value, key)
    if origin is list:
        (item,) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {_type_name(item)}, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _build(cls: Any, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]!s}; allowed keys"
            f"{' in ' + prefix if prefix else ''}: {sorted(known)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} not found")
    text = p.read_text()
    if p.suffix in (".toml", ".tml"):
        import tomllib

        data = tomllib.loads(text)
    elif p.suffix in (".yaml", ".yml", ".json"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        raise ConfigError(f"{p}: config files are .yaml, .yml, .json or .toml")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    source: str | os.PathLike[str] | dict[str, Any],
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Read and validate a run configuration (file path or mapping), with nested overrides."""
    data = dict(source) if isinstance(source, dict) else _read(source)
    if overrides:
        data = _merge(data, overrides)
    return _build(RunConfig, data)


def bundled_config(name: str = "demo.yaml") -> Path:
    """Path of a configuration shipped with the package (``configs/demo.yaml``)."""
    return Path(str(resources.files("pipeline") / "configs" / name))
