"""From an estimator's scikit-learn-style parameters to what the training core takes: the
:class:`~pipeline.train.TrainConfig`, the inner optimizer, the network's hidden sizes and
dropout rates. Pure functions of the parameters (and, for ``replicas="auto"``, of the cluster
size), so the estimators stay a thin facade over :func:`pipeline.train.train`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import optim
from .cluster import workers_info
from .train import TrainConfig, make_strategy

__all__ = ["AUTO_ROWS_PER_ROUND", "AUTO_WARMUP_EPOCHS", "AUTO_WARMUP_MAX_FRACTION", "LR_SCALINGS",
           "dropout_rates", "hidden_sizes", "inner_optimizer", "local_steps_for", "rate_scaling",
           "replicas_for", "seed_of", "train_config", "weight_mask"]

# Rows each replica trains on between two averagings when local_steps="auto". A round on the
# workers' mesh (pipeline.train.mesh_local) costs ~1-2 ms beyond compute, so 16,384 rows (~25 ms
# of a small MLP's compute per worker on this 2-core machine) keeps it under ~10%, and averaging
# this often keeps each epoch closer to one replica's sequential training. Measured
# (benchmarks/where_time_goes.md, "Rows per local-SGD round on the mesh": local_steps 32/64/128
# and the former 65,536 rows at batch 200, 3 seeds, 3 datasets): test accuracy after the first
# epoch went up on all three (synthetic 0.8913 -> 0.8921-0.8925, demo 0.8489 -> 0.8496-0.8504,
# diamonds 0.648 -> 0.675-0.687 means), seconds per epoch within 0-15%. Through Dask (a TLS
# cluster, or pipeline.train.mesh off) a round costs ~40 ms: there set local_steps higher.
AUTO_ROWS_PER_ROUND = 16_384

LR_SCALINGS = ("linear", "sqrt")
# The warm-up lr_scaling adds when the rate grows and warmup_fraction is 0: Goyal et al. 2017
# (large-batch SGD, "gradual warmup") ramp the rate up over 5 epochs; our runs are often short,
# so at most a tenth of the run's updates.
AUTO_WARMUP_EPOCHS = 5
AUTO_WARMUP_MAX_FRACTION = 0.1


def hidden_sizes(hidden_layer_sizes: Any) -> tuple[int, ...]:
    """``hidden_layer_sizes`` (an int or a sequence) as a tuple of positive ints."""
    h = hidden_layer_sizes
    if isinstance(h, numbers.Integral):
        h = (int(h),)
    h = tuple(int(v) for v in h)
    if any(v < 1 for v in h):
        raise ValueError(f"hidden_layer_sizes must be positive, got {hidden_layer_sizes}")
    return h


def seed_of(random_state: Any) -> int:
    """The run's seed: the int itself, one drawn from a RandomState, or fresh entropy."""
    rs = random_state
    if rs is None:
        return int(np.random.SeedSequence().entropy % (2**31))
    if isinstance(rs, numbers.Integral):
        return int(rs)
    if isinstance(rs, np.random.RandomState):
        return int(rs.randint(2**31 - 1))
    raise ValueError(f"random_state must be an int, None or a RandomState, got {rs!r}")


def train_config(est: Any, n_samples: int, seed: int, client: Any = None) -> TrainConfig:
    """The training configuration of estimator ``est`` for ``n_samples`` rows."""
    if est.dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {est.dtype!r}")
    bs = est.batch_size
    if bs == "auto":
        bs = min(200, n_samples)
    elif bs is not None:
        if not isinstance(bs, numbers.Integral) or bs < 1:
            raise ValueError(f"batch_size must be 'auto', None or a positive int, got {bs!r}")
        bs = min(int(bs), n_samples)
    replicas = replicas_for(est.replicas, client)
    scale, warmup = rate_scaling(est, bs, n_samples, replicas)
    return TrainConfig(
        solver=est.solver, learning_rate=est.learning_rate,
        learning_rate_init=est.learning_rate_init * scale, power_t=est.power_t,
        momentum=est.momentum, nesterovs_momentum=est.nesterovs_momentum,
        beta_1=est.beta_1, beta_2=est.beta_2, epsilon=est.epsilon, alpha=est.alpha,
        batch_size=bs, max_iter=est.max_iter, max_fun=est.max_fun, shuffle=est.shuffle,
        tol=est.tol, n_iter_no_change=est.n_iter_no_change,
        early_stopping=est.early_stopping, sync=est.sync,
        local_steps=local_steps_for(est.local_steps, bs),
        outer_learning_rate=est.outer_learning_rate, outer_momentum=est.outer_momentum,
        split_every=est.split_every, random_state=seed, balance=est.balance,
        rounds_ahead=est.rounds_ahead,
        scheduled_rate=est.learning_rate == "cosine" or bool(warmup),
        replicas=replicas,
    )


def rate_scaling(est: Any, batch_size: int | None, n_samples: int,
                 replicas: int | None) -> tuple[float, float]:
    """``(multiplier of learning_rate_init, warmup_fraction)`` under ``est.lr_scaling``.

    ``lr_scaling="linear"`` multiplies the rate by ``B / reference_batch_size`` (Goyal et al.
    2017), ``"sqrt"`` by its square root (Krizhevsky 2014; often better for Adam); ``B`` is the
    batch one optimizer step sees: ``batch_size`` rows (the global mini-batch with
    ``sync="gradient"``, each replica's with ``sync="average"``; ``None``: all ``n_samples``).
    When the run's rate grows (the multiplier, times the replicas that ``sync="average"``
    already scales by, is above 1) and ``warmup_fraction`` is 0, the rate warms up linearly
    from 0 over :data:`AUTO_WARMUP_EPOCHS` epochs, at most :data:`AUTO_WARMUP_MAX_FRACTION` of
    the run's updates. ``lr_scaling=None`` (default): ``(1.0, warmup_fraction)``, unchanged.
    """
    # estimators without the parameter (ImageClassifier) train unscaled
    scaling = getattr(est, "lr_scaling", None)
    warmup = float(est.warmup_fraction)
    if scaling is None:
        return 1.0, warmup
    if scaling not in LR_SCALINGS:
        raise ValueError(f"lr_scaling must be one of {LR_SCALINGS} or None, got {scaling!r}")
    ref = est.reference_batch_size
    if not isinstance(ref, numbers.Integral) or ref < 1:
        raise ValueError(f"reference_batch_size must be a positive int, got {ref!r}")
    ratio = (n_samples if batch_size is None else batch_size) / int(ref)
    scale = ratio if scaling == "linear" else float(np.sqrt(ratio))
    averaged = (replicas or 1) if est.sync == "average" else 1  # LocalSGD's own factor
    grows = scale * averaged > 1
    if warmup == 0 and grows:
        warmup = min(AUTO_WARMUP_EPOCHS / max(int(est.max_iter), 1), AUTO_WARMUP_MAX_FRACTION)
    return scale, warmup


def local_steps_for(local_steps: Any, batch_size: int | None) -> int | None:
    """``"auto"``: about :data:`AUTO_ROWS_PER_ROUND` rows per replica per round."""
    if local_steps != "auto":
        if local_steps is not None and (
                not isinstance(local_steps, numbers.Integral) or local_steps < 1):
            raise ValueError(f"local_steps must be 'auto', None or a positive int, got "
                             f"{local_steps!r}")
        return local_steps
    if batch_size is None:
        return None
    return max(1, -(-AUTO_ROWS_PER_ROUND // batch_size))


def replicas_for(replicas: Any, client: Any) -> int | None:
    """``"auto"``: one replica per worker of the cluster when the fit starts."""
    if replicas != "auto":
        if replicas is not None and (
                not isinstance(replicas, numbers.Integral) or replicas < 1):
            raise ValueError(f"replicas must be 'auto', None or a positive int, got "
                             f"{replicas!r}")
        return replicas
    workers = len(workers_info(client)) if client is not None else 1
    return max(1, workers)


def inner_optimizer(est: Any, config: TrainConfig, rows: Sequence[int],
                    weights: np.ndarray) -> optim.GradientTransformation | None:
    """The inner optimizer of ``est``: scikit-learn's SGD/Adam (bit for bit with its options
    alone), or AdamW, with optional clipping, warm-up and cosine decay over the run's updates;
    weight decay on the ``weights`` mask (weights, not biases). A fixed pruning mask
    (:func:`pipeline.compress.fine_tune`) is chained last. None for L-BFGS."""
    if config.solver == "lbfgs":
        return None
    if not 0 <= est.warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {est.warmup_fraction!r}")
    _, warmup = rate_scaling(est, config.batch_size, int(sum(rows)), config.replicas)
    if est.weight_decay and est.solver != "adamw":
        raise ValueError("weight_decay is decoupled weight decay for solver='adamw'; "
                         "use alpha for scikit-learn's L2 penalty")
    total = make_strategy(config, optim.sgd()).steps_per_epoch(rows) * config.max_iter
    opt = optim.from_sklearn(
        est.solver, learning_rate_init=config.learning_rate_init,
        learning_rate=est.learning_rate, momentum=est.momentum,
        nesterovs_momentum=est.nesterovs_momentum, beta_1=est.beta_1, beta_2=est.beta_2,
        epsilon=est.epsilon, weight_decay=est.weight_decay, clip_norm=est.clip_norm,
        warmup_steps=round(warmup * total), total_steps=total,
        weight_mask=weights if est.weight_decay else None)
    mask = getattr(est, "_fixed_mask", None)
    return opt if mask is None else optim.masked(opt, mask)


def weight_mask(spec: Any) -> np.ndarray:
    """True at the flat positions of weights (what weight decay covers), not biases."""
    weights = np.zeros(spec.n_params, dtype=bool)
    for s in spec.layout():
        weights[s.w_start:s.w_stop] = True
    return weights


def dropout_rates(dropout: Any, n_hidden: int) -> tuple[float, ...]:
    """A float (every hidden layer) or one rate per hidden layer; ``()`` when all are 0."""
    rates = (tuple(float(r) for r in dropout)
             if isinstance(dropout, Sequence) else (float(dropout),) * n_hidden)
    if len(rates) != n_hidden:
        raise ValueError(f"dropout needs a float or one rate per hidden layer "
                         f"({n_hidden}), got {dropout!r}")
    return () if not any(rates) else rates
