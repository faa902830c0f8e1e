"""Per-epoch checkpoints and exact resume.

A checkpoint directory holds one sub-directory per saved epoch (``epoch-000003/``, written with
:mod:`pipeline.persist`: JSON manifest + ``.npz``, no pickle, checksummed) and a ``LATEST`` file
naming the newest complete one. ``LATEST`` is replaced atomically only after its checkpoint is fully
on disk, so a crash mid-write never leaves a corrupt latest checkpoint.

A checkpoint holds the parameters, the optimizer state(s), the epoch/round cursor, the stopping
bookkeeping and the seed: the per-epoch shuffles are derived from ``(seed, block, epoch)``, so a
resumed run replays exactly the rows an uninterrupted run would have seen and ends with the same
parameters bit for bit. It also records a description of the run (configuration, network, data
layout, preprocessing); resuming with a different one is refused with a message that says what
differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .serialization import Registry, atomic_write, dump_objects, read_objects, write_dir

__all__ = ["CheckpointMismatchError", "Checkpointer", "latest_checkpoint"]

LATEST = "LATEST"


class CheckpointMismatchError(ValueError):
    """The checkpoint belongs to a different configuration or data schema."""


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint in ``directory``, or None."""
    pointer = Path(directory) / LATEST
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    path = Path(directory) / name
    return path if path.exists() else None


def _describe(config: Any, spec: Any, blocks: Any, preprocessor: Any) -> dict[str, Any]:
    # max_iter is left out on purpose: resuming with more epochs continues the same run.
    cfg = {k: v for k, v in asdict(config).items() if k != "max_iter"}
    desc: dict[str, Any] = {
        "config": json.loads(json.dumps(cfg, default=str)),
        "network": spec.describe() if hasattr(spec, "describe") else {
            "layer_sizes": list(spec.layer_sizes), "activation": spec.activation,
            "loss": spec.loss},
        "data": {"blocks": len(blocks.rows), "rows": [int(r) for r in blocks.rows],
                 "n_features": int(blocks.n_features), "dtype": str(blocks.dtype),
                 "classes": None if blocks.classes is None else
                 [str(c) for c in np.asarray(blocks.classes).tolist()]},
    }
    if preprocessor is not None and hasattr(preprocessor, "get_feature_names_out"):
        desc["preprocessing"] = {
            "features": [str(f) for f in preprocessor.get_feature_names_out()],
            "params": json.loads(json.dumps(preprocessor.get_params(deep=False), default=str)),
        }
    return desc


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            out += _differences(saved.get(key), current.get(key), f"{prefix}{key}.")
        return out
    if saved != current:
        return [f"{prefix.rstrip('.')}: checkpoint has {saved!r}, this run has {current!r}"]
    return []


class Checkpointer:
    """Saves a :class:`~pipeline.train.TrainState` every ``every`` epochs; restores the latest.

    Parameters
    ----------
    directory : path
        Where checkpoints go (created if needed).
    every : int
        Epochs between checkpoints; the last epoch is always saved.
    keep : int
        How many checkpoints to keep (older ones are deleted after a new one is complete).
    """

    def __init__(self, directory: str | os.PathLike[str], *, every: int = 1, estimator: Any,
                 config: Any, spec: Any, blocks: Any, registry: Registry,
                 preprocessor: Any = None, keep: int = 2):
        if every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {every}")
        self.directory = Path(directory)
        self.registry = registry  # the classes a checkpoint may hold (passed in: no cycle)
        self.every = every
        self.keep = keep
        self.estimator = estimator
        self.preprocessor = preprocessor
        self.max_iter = config.max_iter
        self.description = _describe(config, spec, blocks, preprocessor)
        self.fingerprint = hashlib.sha256(
            json.dumps(self.description, sort_keys=True).encode()
        ).hexdigest()

    def save(self, state: Any) -> None:
        """Write ``state`` if this epoch is due (the hook :func:`pipeline.train.train` calls)."""
        if state.epoch % self.every and state.epoch < self.max_iter:
            return
        self.write(state)

    def write(self, state: Any) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{state.epoch:06d}"
        manifest, npz = dump_objects(
            {"preprocessor": self.preprocessor}, self.registry,
            extra={"state": state, "fingerprint": self.fingerprint,
                   "description": self.description,
                   "estimator": type(self.estimator).__name__,
                   "estimator_params": self.estimator.get_params(deep=False)},
            kind="checkpoint",
        )
        tmp = self.directory / f".{name}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        write_dir(tmp, manifest, npz)
        final = self.directory / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write(self.directory / LATEST, name.encode())
        self._prune(keep_name=name)
        return final

    def _prune(self, keep_name: str) -> None:
        done = sorted(p for p in self.directory.glob("epoch-*") if p.is_dir())
        for old in done[: max(0, len(done) - self.keep)]:
            if old.name != keep_name:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self) -> Any:
        """The latest saved :class:`TrainState`, or None when there is no checkpoint yet.

        Raises :class:`CheckpointMismatchError` naming every difference when the checkpoint was
        written by a run with another configuration, network, data layout or preprocessing.
        """
        path = latest_checkpoint(self.directory)
        if path is None:
            return None
        _, extra, _ = read_objects(path, self.registry, kind="checkpoint")
        if extra["fingerprint"] != self.fingerprint:
            diffs = _differences(extra["description"], self.description)
            raise CheckpointMismatchError(
                f"cannot resume from {path}: it was written by a different run:\n  "
                + "\n  ".join(diffs or ["(description differs)"])
            )
        return extra["state"]

    @staticmethod
    def saved_seed(directory: str | os.PathLike[str], registry: Registry) -> int | None:
        """The seed a checkpointed run used (to resume a run started with random_state=None)."""
        path = latest_checkpoint(directory)
        if path is None:
            return None
        _, extra, _ = read_objects(path, registry, kind="checkpoint")
        return int(extra["description"]["config"]["random_state"])

    def restore_preprocessor(self) -> Any:
        path = latest_checkpoint(self.directory)
        if path is None:
            return None
        objects, _, _ = read_objects(path, self.registry, kind="checkpoint")
        return objects.get("preprocessor")
