"""``train(..., fuse_epochs=True)``: every epoch of a one-block local-SGD run in one task gives
the round-by-round loop's results bit for bit (the oracle is that loop), with the same history
and events; runs it cannot reproduce take the loop."""

import time

import dask.array as da
import numpy as np
import pytest

from pipeline import nn, optim
from pipeline.blocks import split_blocks, to_blocks
from pipeline.train import TrainConfig, train


def _blocks(client, n=400, d=6, npartitions=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X[:, 0] - X[:, 1] * X[:, 2] + 0.3 * rng.standard_normal(n) > 0).astype(int)
    return to_blocks(client, da.from_array(X, chunks=(-(-n // npartitions), -1)),
                     da.from_array(y, chunks=-(-n // npartitions)), classification=True,
                     dtype="float32")


def _run(client, blocks, valid, fuse, on_epoch_end=None, **kw):
    model = nn.Sequential([nn.Dense(16), nn.ReLU(), nn.Dropout(0.2), nn.Dense(1)],
                          loss="binary_log_loss", in_shape=(6,))
    cfg = TrainConfig(**{"solver": "adamw", "learning_rate": "cosine", "batch_size": 48,
                         "max_iter": 12, "sync": "average", "early_stopping": valid is not None,
                         "n_iter_no_change": 3, "tol": 0.0, "random_state": 3,
                         "scheduled_rate": True, "alpha": 0.0, **kw})
    opt = optim.from_sklearn("adamw", learning_rate_init=1e-2, learning_rate="cosine",
                             weight_decay=1e-3, clip_norm=1.0, warmup_steps=4, total_steps=96)
    return train(client, blocks, model=model, config=cfg, optimizer=opt, validation=valid,
                   fuse_epochs=fuse, on_epoch_end=on_epoch_end)


def _same(a, b):
    assert np.array_equal(a.params, b.params)
    assert a.n_iter == b.n_iter and a.stopped_early == b.stopped_early
    assert a.rounds == b.rounds
    assert a.state.loss_curve == b.state.loss_curve
    assert a.state.validation_scores == b.state.validation_scores
    assert a.state.best_validation_score == b.state.best_validation_score
    assert a.state.cursors == b.state.cursors
    keep = ("epoch", "loss", "validation_score", "learning_rate", "rounds", "local_steps")
    assert [{k: h.get(k) for k in keep} for h in a.history] == \
        [{k: h.get(k) for k in keep} for h in b.history]


@pytest.mark.parametrize("early", [True, False])
def test_fused_equals_round_by_round(client, early):
    blocks = _blocks(client)
    valid = None
    if early:
        blocks, valid = split_blocks(client, blocks, 0.2, 5)
    # tol=1: no epoch counts as an improvement, so the rule stops the run after 4 epochs (the first sets the best)
    kw = {"tol": 1.0, "n_iter_no_change": 2, "max_iter": 30} if early else {}
    fused = _run(client, blocks, valid, True, **kw)
    loop = _run(client, blocks, valid, False, **kw)
    _same(fused, loop)
    if early:
        assert fused.stopped_early and fused.n_iter == 4  # the rule ran inside the task
    # and it continues from the fused state as the loop does from its own
    steps = -(-blocks.rows[0] // 48)
    assert fused.history[0]["local_steps"] == [steps]
    assert fused.state.cursors == [fused.n_iter * steps]


def test_fused_runs_one_task_and_replays_events(client):
    from distributed import get_task_stream

    from pipeline import events

    blocks, valid = split_blocks(client, _blocks(client), 0.2, 5)
    seen = []
    client.subscribe_topic(events.TOPIC, lambda ev: seen.append(ev[1]))
    try:
        with get_task_stream(client) as ts:
            fused = _run(client, blocks, valid, True)
        deadline = time.time() + 10
        while time.time() < deadline:
            epochs = [e for e in seen
                      if e.get("event") == "epoch" and e.get("run") == fused.run_id]
            if len(epochs) == fused.n_iter:
                break
            time.sleep(0.05)
    finally:
        client.unsubscribe_topic(events.TOPIC)
    names = [str(t["key"]) for t in ts.data]
    assert sum("fused_epochs" in k for k in names) == 1
    assert not any("partition_local_steps" in k or "partition_scores" in k for k in names)
    assert [e["epoch"] for e in epochs] == list(range(1, fused.n_iter + 1))
    assert [e["validation_score"] for e in epochs] == fused.state.validation_scores


def test_not_fused_when_the_loop_is_needed(client):
    """Two blocks, or a per-epoch hook (checkpoints): the loop runs, and the hook is called
    after every epoch."""
    from distributed import get_task_stream

    blocks = _blocks(client, npartitions=2)
    one = _blocks(client)
    calls = []
    with get_task_stream(client) as ts:
        two = _run(client, blocks, None, True, max_iter=3)
        hooked = _run(client, one, None, True, on_epoch_end=calls.append, max_iter=3)
    names = [str(t["key"]) for t in ts.data]
    assert not any("fused_epochs" in k for k in names)
    # at least one local-steps task per epoch of each run (one per worker holding blocks)
    assert sum("partition_local_steps" in k for k in names) >= 3 + 3
    assert len(two.history) == 3
    assert [s.epoch for s in calls] == [1, 2, 3]
    plain = _run(client, one, None, False, max_iter=3)
    _same(hooked, plain)


@pytest.mark.parametrize("loss", ["squared_error", "log_loss", "binary_log_loss"])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_buffered_scoring_is_the_plain_scoring(loss, layer_norm):
    """The fused loop scores its validation blocks with the forward pass in a workspace: the
    sums (accuracy counts, per-output squared errors) are the bits of the plain forward pass,
    for the tabular network (periodic embeddings, categorical embeddings, ensemble members,
    LayerNorm) and a Sequential with dropout, again and again on the same buffers."""
    import pandas as pd

    from pipeline.blocks import Block
    from pipeline.tabular_net import build_network
    from pipeline.tabular_prep import TabularPreprocessor
    from pipeline.train.scores import partition_scores

    rng = np.random.default_rng(11)
    n = 300
    frame = pd.DataFrame({"a": rng.standard_normal(n), "b": rng.exponential(size=n),
                          "c": pd.Categorical(rng.choice(list("pqrst"), n))})
    frame.loc[::17, "a"] = np.nan
    prep = TabularPreprocessor(add_indicator=True).fit(frame)
    X = np.ascontiguousarray(prep.transform_array(frame), dtype=np.float32)
    k = 3 if loss == "log_loss" else 1
    Y = (rng.standard_normal((n, k)) if loss == "squared_error" else
         np.eye(k, dtype=np.float32)[rng.integers(0, k, n)] if k > 1 else
         (rng.random((n, 1)) < 0.4)).astype(np.float32)
    models = [build_network(prep.layout_, k, loss, hidden_layer_sizes=(32, 16), dropout=0.1,
                            layer_norm=layer_norm, n_members=3, numeric_embedding="auto"),
              nn.Sequential([nn.Dense(24), nn.ReLU(), nn.Dropout(0.2), nn.Dense(k)], loss=loss,
                            in_shape=(X.shape[1],))]
    blocks = [Block(X[:200], Y[:200]), Block(X[200:], Y[200:])]
    for model in models:
        for seed in range(3):
            params = model.init_params(seed, dtype=np.float32)
            plain = partition_scores(blocks, [0, 1], params, model, False)
            buffered = partition_scores(blocks, [0, 1], params, model, False, buffered=True)
            for (i, p), (j, b) in zip(plain, buffered, strict=True):
                assert i == j and p.n == b.n and p.correct == b.correct and p.loss == b.loss
                for f in ("sse", "sum_y", "sum_y2"):
                    assert getattr(p, f).tobytes() == getattr(b, f).tobytes()
