"""The image variant of a job: read a folder of images → split → ImageClassifier → evaluate →
report. Same config file, same results table as the tabular job (:mod:`pipeline.cli.job`)."""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ..config import RunConfig
from .progress import TrainingProgress, step

__all__ = ["layers_from_config", "run_image_job", "split_images"]


def layers_from_config(specs: list[dict[str, Any]] | None) -> list[Any] | None:
    """``[{type: Conv2D, filters: 32}, {type: ReLU}, ...]`` as layer objects (None: default)."""
    if specs is None:
        return None
    from ..image_estimator import saveable_layers

    known = {cls.__name__: cls for cls in saveable_layers()}
    layers = []
    for i, spec in enumerate(specs):
        kwargs = dict(spec)
        name = kwargs.pop("type", None)
        if name not in known:
            raise ValueError(f"model.layers[{i}].type: {name!r} is not a layer; choose one of "
                             f"{sorted(known)}")
        try:
            layers.append(known[name](**{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in kwargs.items()}))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model.layers[{i}] ({name}): {exc}") from exc
    return layers


def split_images(X: Any, y: Any, *, test_size: float, valid_size: float | None,
                 random_state: int) -> list[tuple[Any, Any]]:
    """Rows split into ``[(train), (valid), (test)]`` (valid only with ``valid_size``) by a
    seeded uniform draw per row position: lazy, partitions filtered in place."""
    if any(np.isnan(c) for c in X.chunks[0]):  # quarantine: lengths known once decoded
        X, y = X.persist(), y.persist()
        X.compute_chunk_sizes()
        y.compute_chunk_sizes()
    u = np.random.default_rng(random_state).random(X.shape[0])
    test = u < test_size
    valid = (u >= test_size) & (u < test_size + (valid_size or 0.0))
    masks = [~(test | valid), *([valid] if valid_size else []), test]
    return [(X[m], y[m]) for m in masks]


def run_image_job(cfg: RunConfig, client: Any, outdir: Path, results: dict[str, Any],
                  err: TextIO, progress: bool) -> None:
    """Fill ``results`` with what :func:`pipeline.cli.job._print_table` shows."""
    from analytics import metrics
    from analytics.report import report

    from ..datasets import write_demo_images
    from ..image_estimator import ImageClassifier
    from ..images import read_images
    from ..persist import save
    from .job import _dashboard_page

    results["dashboard"] = client.dashboard_link
    results["dashboard_page"] = _dashboard_page(client)
    data, m, t = cfg.data, cfg.model, cfg.train
    path = data.path
    if path is None:
        path = str(outdir / "images")
        n = write_demo_images(path)
        step(f"wrote scikit-learn's digits as {n:,} PNG files in class folders under {path}",
             err)
    step(f"reading images from {path}", err)
    X, y = read_images(path, on_bad_rows=data.on_bad_rows, quarantine_path=data.quarantine_path,
                       random_state=cfg.split.random_state)
    # Decoded once, together: later graphs (statistics, blocks, predictions, report) start from
    # these partitions, and X and y never reach the scheduler as two differently fused graphs.
    X, y = client.persist([X, y])
    results["partitions"] = X.numblocks[0]
    sp = cfg.split
    parts = split_images(X, y, test_size=sp.test_size, valid_size=sp.valid_size,
                         random_state=sp.random_state)
    (X_train, y_train), (X_test, y_test) = parts[0], parts[-1]
    validation = parts[1] if len(parts) == 3 else None
    model = ImageClassifier(
        layers=layers_from_config(m.layers), solver=m.solver, alpha=m.alpha,
        learning_rate=m.learning_rate, learning_rate_init=m.learning_rate_init,
        momentum=m.momentum, batch_size=t.batch_size, max_iter=t.max_iter, sync=t.sync,
        local_steps=t.local_steps, outer_learning_rate=t.outer_learning_rate,
        outer_momentum=t.outer_momentum, balance=t.balance, split_every=t.split_every,
        early_stopping=t.early_stopping and validation is not None,
        n_iter_no_change=t.n_iter_no_change, tol=t.tol, random_state=t.random_state)
    step(f"training ImageClassifier ({t.sync} sync, batch {t.batch_size}, {t.max_iter} epochs)",
         err)
    fit_start = time.perf_counter()
    progress_ctx = (TrainingProgress(client, t.max_iter, err) if progress
                    else contextlib.nullcontext())
    with progress_ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the epoch budget is the config's
        model.fit(X_train, y_train, validation_data=validation, client=client,
                  checkpoint_dir=t.checkpoint_dir, checkpoint_every=t.checkpoint_every,
                  resume=t.resume)
    fit_seconds = time.perf_counter() - fit_start
    summary = model.train_summary_
    results.update(train_rows=summary["n_samples"], epochs=model.n_iter_,
                   fit_seconds=fit_seconds, rounds=summary["rounds"],
                   samples_per_s=summary["n_samples"] * model.n_iter_ / summary["seconds"],
                   blocks=summary["n_partitions"])
    step("evaluating on the held-out test split", err)
    proba, y_pred = model.predict_proba(X_test), model.predict(X_test)
    results.update(test_accuracy=float(metrics.accuracy_score(y_test, y_pred)),
                   test_loss=float(metrics.log_loss(y_test, proba, labels=model.classes_)))
    results["model_dir"] = save(outdir / cfg.output.model, model,
                                metadata={"config": asdict(cfg)})
    if cfg.output.report:
        step("writing the training report", err)
        results["report"] = report(model, X_test, y_test, str(outdir / cfg.output.report),
                                   config=asdict(cfg))
    results.setdefault("rows", None)
