"""``train()``: the functional core behind the estimators.

It builds the sync strategy, then runs epochs: the strategy runs the epoch's rounds
(:mod:`pipeline.train.strategies`) on the round runner (:mod:`pipeline.train.rounds`); the
validation blocks are scored; the pure stopping rule (:mod:`pipeline.train.stopping`) decides
what comes next; events (:mod:`pipeline.train.events`) tell the dashboard. L-BFGS has its own
driver (:mod:`pipeline.train.lbfgs`).
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import dask
import numpy as np
from dask.utils import parse_bytes

from .. import events, optim
from ..backend import to_host
from ..blocks import BlockSet
from .lbfgs import run_lbfgs
from .rounds import Rounds
from .run_ahead import RunAhead, epoch_loss, epoch_rate
from .scores import SCORINGS, score_value
from .stopping import Progress, StoppingRule
from .strategies import GradientSync, LocalSGD, SyncState

__all__ = ["SOLVERS", "SYNC_MODES", "TrainConfig", "TrainResult", "TrainState", "evaluate",
           "make_strategy", "train"]

SYNC_MODES = ("gradient", "average")
SOLVERS = ("sgd", "adam", "adamw", "lbfgs")
LEARNING_RATES = ("constant", "invscaling", "adaptive", "cosine")
BALANCE_MODES = ("none", "throughput")


@dataclass(frozen=True)
class TrainConfig:
    """What determines a training run besides the model and the optimizer (hashed for
    checkpoints). The optimizer fields (``solver`` .. ``epsilon``) build the default optimizer
    when ``train`` is not given one; the estimators build theirs once and pass it."""

    solver: str = "adam"
    learning_rate: str = "constant"
    learning_rate_init: float = 1e-3
    power_t: float = 0.5
    momentum: float = 0.9
    nesterovs_momentum: bool = True
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    alpha: float = 1e-4
    batch_size: int | None = 200
    max_iter: int = 200
    max_fun: int = 15000
    shuffle: bool = True
    tol: float = 1e-4
    n_iter_no_change: int = 10
    early_stopping: bool = False
    sync: str = "gradient"
    local_steps: int | None = None
    outer_learning_rate: float = 1.0
    outer_momentum: float = 0.0
    split_every: int = 8
    random_state: int = 0
    balance: str = "none"
    rounds_ahead: int = 4
    scheduled_rate: bool = False  # the optimizer follows its own schedule (warm-up, cosine)
    replicas: int | None = None  # sync="average": contiguous runs of blocks per replica
    # early stopping's validation score: "score" (accuracy / R², scikit-learn's) or
    # "neg_log_loss" (classification: minus the log loss of the predicted probabilities)
    validation_scoring: str = "score"
    # the epochs' parameter average the run is judged by and ends with (train.stopping); 0: none
    ema_decay: float = 0.0

    def validate(self) -> None:
        checks = [
            (self.solver in SOLVERS, f"solver must be one of {SOLVERS}, got {self.solver!r}"),
            (self.sync in SYNC_MODES, f"sync must be one of {SYNC_MODES}, got {self.sync!r}"),
            (
                self.learning_rate in LEARNING_RATES,
                f"learning_rate must be one of {LEARNING_RATES}, got {self.learning_rate!r}",
            ),
            (self.max_iter >= 1, f"max_iter must be >= 1, got {self.max_iter}"),
            (
                self.batch_size is None or self.batch_size >= 1,
                f"batch_size must be >= 1 or None, got {self.batch_size}",
            ),
            (self.learning_rate_init > 0, "learning_rate_init must be > 0"),
            (self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}"),
            (self.split_every >= 2, f"split_every must be >= 2, got {self.split_every}"),
            (
                self.local_steps is None or self.local_steps >= 1,
                f"local_steps must be >= 1 or None, got {self.local_steps}",
            ),
            (self.n_iter_no_change >= 1, "n_iter_no_change must be >= 1"),
            (0.0 <= self.ema_decay < 1.0,
             f"ema_decay must be in [0, 1), got {self.ema_decay!r}"),
            (self.rounds_ahead >= 1, f"rounds_ahead must be >= 1, got {self.rounds_ahead}"),
            (self.replicas is None or self.replicas >= 1,
             f"replicas must be >= 1 or None, got {self.replicas}"),
            (self.validation_scoring in SCORINGS,
             f"validation_scoring must be one of {SCORINGS}, got {self.validation_scoring!r}"),
            (self.balance in BALANCE_MODES,
             f"balance must be one of {BALANCE_MODES}, got {self.balance!r}"),
            (self.balance == "none" or self.sync == "average",
             "balance='throughput' needs sync='average' (gradient mode is exact by design)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def inner_optimizer(self) -> optim.GradientTransformation:
        """The optimizer these fields describe (scikit-learn's SGD or Adam, or AdamW)."""
        return optim.from_sklearn(
            self.solver, learning_rate_init=self.learning_rate_init,
            learning_rate="constant" if self.learning_rate == "cosine" else self.learning_rate,
            momentum=self.momentum, nesterovs_momentum=self.nesterovs_momentum,
            beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)


class TrainState(NamedTuple):
    """Where a run stands after an epoch: enough to resume it exactly."""

    params: np.ndarray
    opt_state: Any  # global optimizer state (sync="gradient"), host arrays
    local_states: list[Any] | None  # per-block inner optimizer states (sync="average"), host
    outer_state: Any  # outer optimizer state (sync="average" with momentum)
    epoch: int  # epochs completed
    t: int  # samples seen
    learning_rate: float
    loss_curve: list[float]
    validation_scores: list[float]
    best_loss: float
    best_validation_score: float
    no_improvement_count: int
    best_params: np.ndarray | None
    history: list[dict[str, Any]]
    rounds: int
    cursors: list[int] | None = None  # sync="average": local steps each block has taken
    average: np.ndarray | None = None  # the epochs' parameter average (ema_decay > 0)


@dataclass
class TrainResult:
    params: np.ndarray
    state: TrainState
    n_iter: int
    loss: float
    stopped_early: bool
    run_id: str
    seconds: float
    rounds: int
    retries: int = 0  # disrupted rounds recovered (lost workers, resubmitted rounds)
    history: list[dict[str, Any]] = field(default_factory=list)
    recovery_seconds: float = 0.0  # time the disrupted rounds took beyond a typical round
    # train(valid_outputs=True), a fused run: per validation block, (outputs of ``params``,
    # targets), host arrays; None otherwise
    valid_outputs: list[tuple[np.ndarray, np.ndarray]] | None = None


def make_strategy(config: TrainConfig,
                  optimizer: optim.GradientTransformation) -> GradientSync | LocalSGD:
    """The sync strategy ``config.sync`` names, driving ``optimizer``."""
    if config.sync == "gradient":
        return GradientSync(optimizer, config.alpha, config.batch_size, config.rounds_ahead)
    return LocalSGD(optimizer, config.alpha, config.batch_size, config.local_steps,
                    config.outer_learning_rate, config.outer_momentum, config.balance,
                    config.replicas)


def _stopping_rule(config: TrainConfig) -> StoppingRule:
    # scikit-learn applies invscaling and adaptive to SGD only
    rule = config.learning_rate if config.solver == "sgd" else "constant"
    return StoppingRule(config.tol, config.n_iter_no_change, config.early_stopping, rule,
                        config.learning_rate_init, config.power_t, config.validation_scoring,
                        config.ema_decay)


def initial_state(params: np.ndarray, config: TrainConfig, n_blocks: int,
                  optimizer: optim.GradientTransformation | None = None) -> TrainState:
    sync = SyncState()
    if config.solver != "lbfgs":
        sync = make_strategy(config, optimizer or config.inner_optimizer()).init(params,
                                                                                  n_blocks)
    return TrainState(params=params, opt_state=sync.opt_state, local_states=sync.local_states,
                      outer_state=sync.outer_state, epoch=0, t=0,
                      learning_rate=config.learning_rate_init, loss_curve=[],
                      validation_scores=[], best_loss=math.inf,
                      best_validation_score=-math.inf, no_improvement_count=0,
                      best_params=None, history=[], rounds=0)


def _span(run_id: str) -> Any:
    """``distributed.span`` named after the run, so the dashboard groups the fit's tasks."""
    try:
        from distributed import span

        return span(run_id)
    except ImportError:  # pragma: no cover - older distributed
        return contextlib.nullcontext()


def train(
    client: Any,
    blocks: BlockSet,
    *,
    model: Any,
    config: TrainConfig,
    optimizer: optim.GradientTransformation | None = None,
    params: np.ndarray | None = None,
    validation: BlockSet | None = None,
    state: TrainState | None = None,
    on_epoch_end: Callable[[TrainState], None] | None = None,
    run_name: str = "fit",
    fuse_epochs: bool = False,
    workers: list[str] | None = None,
    valid_outputs: bool = False,
) -> TrainResult:
    """Train ``model`` on ``blocks`` data-parallel; returns the final parameters and history.

    Parameters
    ----------
    blocks : BlockSet
        Training blocks (see :func:`pipeline.blocks.to_blocks`), resident on the workers.
    model
        The network: anything with ``n_params``, ``loss``, ``init_params``, ``forward``,
        ``loss_and_grad`` and ``l2_penalty`` (an :class:`pipeline.nn.MLPSpec`).
    config : TrainConfig
        Batch size (global, in rows), epochs, sync mode and stopping rules.
    optimizer : GradientTransformation, optional
        The (inner) optimizer; built from ``config``'s solver fields when omitted.
    params : ndarray, optional
        Starting flat parameters (host); initialised from ``random_state`` when omitted.
    validation : BlockSet, optional
        Scored after every epoch (accuracy or R²); drives ``early_stopping``.
    state : TrainState, optional
        Resume from a checkpointed state: the run continues exactly where it stopped.
    on_epoch_end : callable, optional
        Called with the :class:`TrainState` after every epoch (checkpointing hook).
    fuse_epochs : bool
        Run every epoch in one task when the run allows it (one block, ``sync="average"``
        without replicas, balancing or outer optimizer, no ``on_epoch_end``): the same
        parameters, bit for bit, without the client between epochs; the per-epoch events
        and history are published when the task returns (:mod:`pipeline.train.fused`).
    workers : list of str, optional
        Where a one-block run's rounds (or its fused task) should run, by preference (the
        block travels there if it lives elsewhere): :mod:`pipeline.train.members` puts
        concurrent runs on different workers. Ignored with several blocks, whose tasks go
        where their blocks are.
    valid_outputs : bool
        A fused run also returns the validation blocks' outputs at the final parameters
        (``TrainResult.valid_outputs``), computed in its task; other runs return None.
    """
    config.validate()
    dtype = np.dtype(blocks.dtype)
    if optimizer is None and config.solver != "lbfgs":
        optimizer = config.inner_optimizer()
    if state is None:
        if params is None:
            params = model.init_params(config.random_state, dtype=dtype)
        # the caller's params may live on a GPU: np.asarray refuses CuPy, to_host copies
        state = initial_state(to_host(params).astype(dtype, copy=False), config,
                              len(blocks.futures), optimizer)
    if config.early_stopping and validation is None:
        raise ValueError("early_stopping=True needs validation data")
    run_id = f"{run_name}-{uuid.uuid4().hex[:8]}"
    rounds = Rounds(client, blocks, model, split_every=config.split_every, run_id=run_id)
    rounds.round = state.rounds
    rounds.workers = list(workers) if workers and len(blocks.futures) == 1 else None
    started = time.time()
    events.emit_start(client, run_id, config=asdict(config),
                 n_partitions=len(blocks.futures), n_samples=blocks.n_samples,
                 n_features=blocks.n_features, n_params=model.n_params, sync=config.sync,
                 estimator=run_name)
    outbox = events.Outbox(client)  # the epochs' round and epoch events
    try:
        with _span(run_id):
            if config.solver == "lbfgs":
                result = _train_lbfgs(client, rounds, config, state, validation, run_id)
            else:
                assert optimizer is not None
                strategy = make_strategy(config, optimizer)
                if fuse_epochs and _fusable(strategy, rounds, config, state, on_epoch_end):
                    result = _train_fused(client, rounds, strategy, _stopping_rule(config),
                                          config, state, validation, run_id, valid_outputs)
                else:
                    result = _train_epochs(client, rounds, strategy, _stopping_rule(config),
                                           config, state, validation, on_epoch_end, run_id,
                                           outbox)
    except BaseException as exc:
        events.emit_end(client, run_id, status="failed", n_iter=0, rounds=0,
                        seconds=time.time() - started, error=repr(exc), outbox=outbox)
        raise
    result.seconds = time.time() - started
    result.recovery_seconds = rounds.recovery_seconds
    events.emit_end(client, run_id, status="stopped_early" if result.stopped_early else "finished",
                    n_iter=result.n_iter, rounds=result.rounds, seconds=result.seconds,
                    error=None, outbox=outbox)
    return result


def _train_epochs(client: Any, rounds: Rounds, strategy: GradientSync | LocalSGD,
                  rule: StoppingRule, config: TrainConfig, state: TrainState,
                  validation: BlockSet | None, on_epoch_end: Callable[[TrainState], None] | None,
                  run_id: str, outbox: events.Outbox) -> TrainResult:
    model = rounds.model
    params = state.params
    sync = SyncState(state.opt_state, state.local_states, state.outer_state, state.cursors)
    progress = Progress(state.best_loss, state.best_validation_score,
                        state.no_improvement_count, state.best_params, state.learning_rate,
                        average=state.average)
    loss_curve, val_scores = list(state.loss_curve), list(state.validation_scores)
    history = list(state.history)
    t, round_no, epoch = state.t, state.rounds, state.epoch
    last_event = [0.0]
    # nothing needs the client between epochs: a mesh segment may run on into the next ones
    # (validation scores and the stopping rule on the workers, :mod:`.run_ahead`)
    run_ahead = on_epoch_end is None
    keep_bytes = parse_bytes(dask.config.get("pipeline.train.mesh-ahead-bytes", "64MiB"))

    while epoch < config.max_iter:
        epoch_start = time.perf_counter()
        if not strategy.ran_ahead(epoch):
            rounds.refresh_placement()
            rounds.keep_spread()
        first_round = round_no

        def on_round(part: Any, seconds: float, loss: float, last: bool,
                     _epoch: int = epoch) -> None:
            nonlocal round_no
            round_no += 1
            now = time.perf_counter()
            if now - last_event[0] > 0.25 or last:
                outbox.add(events.round_message(run_id, **events.round_fields(
                    round_no, _epoch + 1, part, seconds, loss)))
                last_event[0] = now

        rate = epoch_rate(progress, config.scheduled_rate, config.learning_rate_init)
        ahead = RunAhead(rule, progress, t, config.max_iter, config.scheduled_rate,
                         config.learning_rate_init, validation, keep_bytes) if run_ahead else None
        out = strategy.run_epoch(rounds, params, sync, rate, epoch,
                                 first_round, config.random_state, config.shuffle, on_round,
                                 ahead)
        params, sync = out.params, out.state
        epoch += 1
        t += out.rows
        loss = epoch_loss(out.loss_sum, out.rows)
        loss_curve.append(loss)
        score = None
        progress, judged = rule.average(progress, params)
        if validation is not None:
            score = out.score if out.score is not None else score_value(
                rounds.score(validation, judged, (epoch, "val"), with_loss=False), model.loss,
                rule.scoring)
            val_scores.append(score)
        lr = progress.learning_rate
        progress = rule.update(progress, loss=loss, score=score, params=judged, samples_seen=t)
        epoch_seconds = (out.seconds if out.seconds is not None
                         else time.perf_counter() - epoch_start)
        record = {
            "epoch": epoch, "loss": loss, "validation_score": score,
            "samples_per_s": out.rows / epoch_seconds if epoch_seconds > 0 else None,
            "seconds": epoch_seconds, "learning_rate": lr, "rounds": len(out.round_seconds),
            "round_seconds_median": float(np.median(out.round_seconds)),
        }
        if out.local_steps is not None:
            record["local_steps"] = out.local_steps
        history.append(record)
        outbox.add(events.epoch_message(run_id, round=round_no, **record))
        state = TrainState(params, sync.opt_state, sync.local_states, sync.outer_state, epoch, t,
                           progress.learning_rate, loss_curve, val_scores, progress.best_loss,
                           progress.best_validation_score, progress.no_improvement_count,
                           progress.best_params, history, round_no, sync.cursors,
                           progress.average)
        if on_epoch_end is not None:
            on_epoch_end(state)
        if progress.stopped:
            break
    if strategy.ran_ahead(epoch):  # the workers' rule and this loop's disagree: a bug
        raise RuntimeError(f"the mesh ran epoch {epoch + 1}, past the run's end at epoch "
                           f"{epoch}")
    final = rule.final(progress, params)
    return TrainResult(final, state, epoch, loss_curve[-1] if loss_curve else math.nan,
                       progress.stopped, run_id, 0.0, round_no, rounds.retries, history)


def _fusable(strategy: Any, rounds: Rounds, config: TrainConfig, state: TrainState,
             on_epoch_end: Any) -> bool:
    from .fused import can_fuse

    steps = strategy.steps_per_epoch(rounds.blocks.rows)
    return (can_fuse(strategy, len(rounds.blocks.futures), config.local_steps, on_epoch_end)
            and (state.cursors is None or list(state.cursors) == [state.epoch * steps]))


def _train_fused(client: Any, rounds: Rounds, strategy: LocalSGD, rule: StoppingRule,
                 config: TrainConfig, state: TrainState, validation: BlockSet | None,
                 run_id: str, valid_outputs: bool = False) -> TrainResult:
    """:func:`_train_epochs` for a one-block local-SGD run, every epoch in one task
    (:func:`pipeline.train.fused.fused_epochs`); events and history replayed afterwards."""
    from .fused import FusedResult, fused_epochs, replay
    from .rounds import _literal

    steps = strategy.steps_per_epoch(rounds.blocks.rows)
    progress = Progress(state.best_loss, state.best_validation_score,
                        state.no_improvement_count, state.best_params, state.learning_rate,
                        average=state.average)
    local_state = state.local_states[0] if state.local_states else None
    key = f"fused_epochs-{rounds._token('fused', state.epoch)}"
    vfutures = list(validation.futures) if validation is not None else []
    dsk = {key: (fused_epochs, rounds.block_keys[0], vfutures, _literal(state.params),
                 _literal(local_state), _literal(rounds.model), _literal(strategy.optimizer),
                 strategy.alpha, int(rounds.blocks.rows[0]), steps, _literal(rule),
                 _literal(progress), config.scheduled_rate, config.learning_rate_init,
                 state.epoch, config.max_iter, state.rounds, state.t, config.random_state,
                 config.shuffle, rounds.split_every, valid_outputs)}
    res: FusedResult
    (res,) = rounds.run(dsk, [key], "average")
    r = replay(client, run_id, res.records, steps, state.loss_curve, state.validation_scores,
               state.history, state.t, state.rounds, state.epoch)
    loss_curve, val_scores, history = r.loss_curve, r.validation_scores, r.history
    t, round_no, epoch = r.t, r.rounds, r.epoch
    progress = res.progress
    params = res.params
    new_state = TrainState(params, None, [res.local_state], state.outer_state, epoch, t,
                           progress.learning_rate, loss_curve, val_scores, progress.best_loss,
                           progress.best_validation_score, progress.no_improvement_count,
                           progress.best_params, history, round_no, [res.cursor],
                           progress.average)
    final = rule.final(progress, params)
    return TrainResult(final, new_state, epoch, loss_curve[-1] if loss_curve else math.nan,
                       progress.stopped, run_id, 0.0, round_no, rounds.retries, history,
                       valid_outputs=res.valid_outputs)


def _train_lbfgs(client: Any, rounds: Rounds, config: TrainConfig, state: TrainState,
                 validation: BlockSet | None, run_id: str) -> TrainResult:
    out = run_lbfgs(client, rounds, params=state.params, alpha=config.alpha,
                    max_iter=config.max_iter, max_fun=config.max_fun, tol=config.tol,
                    validation=validation, run_id=run_id, first_round=state.rounds,
                    seed=config.random_state, shuffle=config.shuffle)
    new_state = state._replace(params=out["params"], epoch=out["nit"],
                               t=rounds.blocks.n_samples * out["nfev"],
                               loss_curve=out["loss_curve"],
                               validation_scores=out["validation_scores"],
                               history=out["history"], rounds=out["rounds"])
    return TrainResult(out["params"], new_state, out["nit"], out["loss"], False, run_id, 0.0,
                       out["rounds"], rounds.retries, out["history"])


def evaluate(client: Any, blocks: BlockSet, params: np.ndarray, model: Any, *,
             split_every: int = 8) -> dict[str, float]:
    """Mean loss and accuracy (classification) or R² (regression) of ``params`` on ``blocks``."""
    rounds = Rounds(client, blocks, model, split_every=split_every,
                    run_id=f"evaluate-{uuid.uuid4().hex[:8]}")
    s = rounds.score(blocks, params, "evaluate")
    name = "r2" if model.loss == "squared_error" else "accuracy"
    return {"loss": s.loss / max(s.n, 1), name: score_value(s, model.loss), "n": s.n}
