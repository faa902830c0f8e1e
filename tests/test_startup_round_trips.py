"""Fewer scheduler round trips before and after training, same answers: placement's one-call
layout equals ``who_has`` and the worker groups asked separately; a one-block ``to_blocks``
needs no placement call at all; events published in one batch are the events the per-event
emitters publish, in order; a fused fit's replay builds the history the per-epoch loop built."""

from __future__ import annotations

import time
import uuid

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from pipeline import events
from pipeline.blocks import to_blocks
from pipeline.placement import block_workers, layout, worker_groups
from pipeline.train.fused import EpochRecord, replay
from pipeline.train.tasks import Partial


def test_layout_is_who_has_and_worker_groups_in_one_call(client):
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    futures = [client.scatter(np.arange(3) + i, workers=[workers[i % len(workers)]])
               for i in range(4)]
    # a task no worker can run (a resource none has): never computed, and it occupies no
    # worker thread of the session's cluster (a sleeping task would, for its whole duration)
    missing = client.submit(np.zeros, 3, key=f"not-done-{uuid.uuid4().hex}",
                            resources={"no-such-resource": 1})
    holders, groups = layout(client, [*futures, missing])
    assert holders == block_workers(client, [*futures, missing])
    assert holders[:4] == [workers[i % len(workers)] for i in range(4)]
    assert holders[4] is None
    assert groups == worker_groups(client)
    client.cancel(missing)


def test_one_block_to_blocks_asks_the_scheduler_nothing_about_placement(client, monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = rng.integers(0, 3, 300)

    def refuse(*args, **kwargs):
        raise AssertionError("a one-block layout is known: no placement call")

    monkeypatch.setattr(client, "who_has", refuse)
    monkeypatch.setattr(client, "run_on_scheduler", refuse)
    blocks = to_blocks(client, da.from_array(X, chunks=(300, 4)), da.from_array(y, chunks=300),
                       classification=True)
    monkeypatch.undo()
    (block,) = client.gather(blocks.futures)
    assert blocks.rows == [300]
    assert np.array_equal(block.X, X.astype("float32"))
    assert np.array_equal(block.Y, (y[:, None] == np.arange(3)).astype("float32"))


def _mine(client, run, n):
    mine = []
    for _ in range(200):
        mine = [m for _, m in client.get_events(events.TOPIC) if m.get("run") == run]
        if len(mine) >= n:
            break
        time.sleep(0.05)
    return mine


def _without_time(msgs):
    # the scheduler's messages hold tuples where the sender had lists (msgpack), either way
    return [{k: list(v) if isinstance(v, tuple) else v for k, v in m.items()
             if k not in ("time", "run")} for m in msgs]


def test_emit_many_publishes_what_the_emitters_publish_in_order(client):
    one, many = f"one-{uuid.uuid4().hex[:8]}", f"many-{uuid.uuid4().hex[:8]}"
    rounds = [dict(round=r, epoch=r, loss=1.0 / r, samples=100, round_seconds=0.1,
                   samples_per_s=1000.0, partition_seconds=[0.05], partition_workers=["w"])
              for r in (1, 2, 3)]
    epochs = [dict(epoch=r, round=r, loss=0.9 / r, validation_score=0.5 + r / 10,
                   samples_per_s=900.0, seconds=0.11, learning_rate=1e-3, rounds=1,
                   round_seconds_median=0.1, local_steps=[4]) for r in (1, 2, 3)]
    msgs = []
    for r, e in zip(rounds, epochs, strict=True):
        events.emit_round(client, one, **r)
        events.emit_epoch(client, one, **e)
        msgs += [events.round_message(many, **r), events.epoch_message(many, **e)]
    events.emit_many(client, msgs)
    expected, got = _mine(client, one, 6), _mine(client, many, 6)
    assert [m["event"] for m in got] == ["round", "epoch"] * 3
    assert _without_time(got) == _without_time(expected)


def test_emit_many_falls_back_to_one_event_per_call():
    class OldScheduler:
        def __init__(self):
            self.logged = []

        def run_on_scheduler(self, *args, **kwargs):
            raise RuntimeError("cannot import pipeline on the scheduler")

        def log_event(self, topic, msg):
            self.logged.append((topic, msg))

    c = OldScheduler()
    msgs = [{"event": "round", "run": "r", "round": i} for i in range(3)]
    events.emit_many(c, msgs)
    assert c.logged == [(events.TOPIC, m) for m in msgs]


def test_replay_builds_the_history_of_the_per_epoch_loop(client):
    recs = [EpochRecord(Partial(float(10 * i), None, 50 + i, ((0, 0.01 * i, "w"),)),
                        0.5 / i, (0.6 + i / 100 if i != 2 else None), 1e-3 * i, 0.02 * i,
                        0.01 * i) for i in (1, 2, 3)]
    run = f"replay-{uuid.uuid4().hex[:8]}"
    out = replay(client, run, recs, 7, [0.9], [0.55], [{"epoch": 1}], 100, 4, 1)
    # the per-epoch loop, written out
    loss_curve, scores, history = [0.9], [0.55], [{"epoch": 1}]
    t, round_no, epoch, sent = 100, 4, 1, []
    for rec in recs:
        round_no, epoch, t = round_no + 1, epoch + 1, t + rec.part.n
        loss_curve.append(rec.loss)
        if rec.score is not None:
            scores.append(rec.score)
        record = {"epoch": epoch, "loss": rec.loss, "validation_score": rec.score,
                  "samples_per_s": rec.part.n / rec.seconds, "seconds": rec.seconds,
                  "learning_rate": rec.learning_rate, "rounds": 1,
                  "round_seconds_median": rec.round_seconds, "local_steps": [7]}
        history.append(record)
        sent += [{"event": "round", "round": round_no, "epoch": epoch,
                  "loss": rec.part.loss / rec.part.n, "samples": rec.part.n,
                  "round_seconds": rec.round_seconds,
                  "samples_per_s": rec.part.n / rec.round_seconds,
                  "partition_seconds": [t_[1] for t_ in rec.part.timings],
                  "partition_workers": [t_[2] for t_ in rec.part.timings]},
                 {"event": "epoch", "round": round_no, **record}]
    assert out.loss_curve == loss_curve and out.validation_scores == scores
    assert out.history == history
    assert (out.t, out.rounds, out.epoch) == (t, round_no, epoch)
    assert _without_time(_mine(client, run, 6)) == sent


def test_replicas_are_colocated_with_the_epochs_look_at_the_cluster(client, monkeypatch):
    """The first epoch's look at the cluster (keep_spread: workers and who holds each block,
    one call) places the replicas too: colocating asks the scheduler nothing more, and the
    fit's blocks end on the workers a fresh look would choose."""
    import pipeline as pl
    from pipeline import placement

    asked = []
    real = placement.layout
    monkeypatch.setattr(placement, "layout", lambda *a, **k: asked.append(1) or real(*a, **k))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 4))
    y = (X[:, 0] > 0).astype(int)
    with pytest.warns(ConvergenceWarning):  # max_iter=1: one epoch is the point
        model = pl.MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0,
                                 min_block_rows=250).fit(
            da.from_array(X, chunks=(250, 4)), da.from_array(y, chunks=250), client=client)
    assert asked == []  # the declared-lengths blocks ask through blocks_declared's own import
    monkeypatch.undo()
    assert model.n_iter_ == 1
    blocks = to_blocks(client, da.from_array(X, chunks=(250, 4)), da.from_array(y, chunks=250),
                       classification=True, min_block_rows=250)
    units = [[0, 1, 2, 3], [4, 5, 6, 7]]
    fresh = placement.colocate(client, blocks, units)
    looked = placement.colocate(client, blocks, units,
                                look=placement.layout(client, blocks.futures))
    assert block_workers(client, fresh.futures) == block_workers(client, looked.futures)
