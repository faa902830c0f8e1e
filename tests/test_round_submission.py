"""How the round runner talks to the cluster: graphs submitted without tokenising their
contents, one round trip for the epoch's look at the cluster."""

import dask.array as da
import numpy as np
import pytest

from pipeline import nn
from pipeline.blocks import to_blocks
from pipeline.train.rounds import Rounds, submit


class _NoTokenize:
    """An argument dask cannot tokenise: normalising it raises."""

    def __init__(self, value):
        self.value = value

    def __dask_tokenize__(self):
        raise AssertionError("the graph's contents were tokenised")


def _unwrap(x):
    return x.value + 1


def test_submit_runs_the_graph_without_tokenising_its_contents(client):
    dsk = {"plus-one-a": (_unwrap, _NoTokenize(41)), "plus-one-b": (sum, ["plus-one-a", 1])}
    # the oracle: client.get on the same dict must tokenise the argument, so it refuses
    with pytest.raises(AssertionError, match="tokenised"):
        client.get(dsk, ["plus-one-b"], sync=False)
    futures = submit(client, dsk, ["plus-one-b", "plus-one-a"])
    assert client.gather(futures) == [43, 42]


def _blocks(client, n_blocks=6):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12 * n_blocks, 5))
    y = (X[:, 0] > 0).astype(int)
    return to_blocks(client, da.from_array(X, chunks=(12, -1)), da.from_array(y, chunks=12),
                     classification=True, dtype="float64")


def test_epoch_look_groups_blocks_by_holder_as_who_has_does(client):
    blocks = _blocks(client)
    spec = nn.MLPSpec((5, 3, 1), "tanh", "binary_log_loss")
    rounds = Rounds(client, blocks, spec, split_every=4, run_id="look-test")
    rounds.keep_spread()  # first look: the grouping comes with the worker list
    grouped = rounds.groups(rounds.block_keys)
    who = client.who_has(rounds.block_keys)  # the oracle: the client's own who_has
    expected: dict[str, list[int]] = {}
    for i, f in enumerate(rounds.block_keys):
        expected.setdefault(sorted(who[f.key])[0], []).append(i)
    assert grouped == [expected[w] for w in sorted(expected)]
    assert sorted(i for g in grouped for i in g) == list(range(len(blocks.futures)))


def test_a_repeated_round_at_new_parameters_is_computed_again(client, monkeypatch):
    """L-BFGS evaluates the same ``(epoch, step)`` at new parameters many times. When the
    scheduler still holds the previous evaluation's keys (here: a future kept on purpose; in a
    fit: a release that has not reached the scheduler yet, seen under load as L-BFGS fits
    that stopped at their initial parameters), a graph reusing those keys is answered with the
    old values. Every graph must get keys of its own."""
    import pipeline.train.rounds as rounds_module

    blocks = _blocks(client, n_blocks=2)
    spec = nn.MLPSpec((5, 3, 1), "tanh", "binary_log_loss")
    rounds = Rounds(client, blocks, spec, split_every=4, run_id="repeat-test")
    held = []
    real_submit = rounds_module.submit

    def submit_and_hold(c, dsk, keys, workers=None):
        futures = real_submit(c, dsk, keys, workers)
        held.extend(futures)  # the previous evaluation's keys stay alive on the scheduler
        return futures

    monkeypatch.setattr(rounds_module, "submit", submit_and_hold)
    p0 = spec.init_params(0, np.float64)
    p1 = p0 + 0.5
    first = rounds.gradient(p0, 0, 0, 1, 0, False)
    second = rounds.gradient(p1, 0, 0, 1, 0, False)
    again = rounds.gradient(p0, 0, 0, 1, 0, False)
    assert len({f.key for f in held}) == len(held)
    # the oracle: the same evaluation at p0 twice agrees; at p1 it is another loss
    assert again.loss == first.loss
    np.testing.assert_array_equal(np.asarray(again.vector), np.asarray(first.vector))
    assert second.loss != first.loss
