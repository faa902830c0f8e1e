"""What a worker ships in a pipelined ``sync="gradient"`` round when it holds a run of
consecutive blocks (pipeline.placement_plan): the complete subtrees of the fixed reduction tree,
folded, not one partial per block; and the numbers do not depend on where the blocks are."""

import dask.array as da
import numpy as np
import pytest
from distributed import wait

from pipeline import nn, optim
from pipeline.blocks import Block, to_blocks
from pipeline.placement import block_workers, place
from pipeline.train import TrainConfig, train
from pipeline.train.ahead import StepArgs, _step, step_and_partition_grads
from pipeline.train.tasks import Partial, Rate, StepState, gradient_step, partition_grad

N_BLOCKS, SPLIT = 64, 8
SPEC = nn.MLPSpec((5, 3, 1), "tanh", "binary_log_loss")


def _blocks(rng):
    out = []
    for _ in range(N_BLOCKS):
        X = rng.standard_normal((4, 5))
        out.append(Block(X, (X[:, :1] > 0).astype(np.float64)))
    return out


def _setup(rng):
    params = SPEC.init_params(0, dtype=np.float64)
    opt = optim.adam(1e-2)
    args = StepArgs(SPEC, opt, 1e-4, Rate(1e-2), N_BLOCKS, SPLIT)
    return params, opt, args, StepState(params, opt.init(params), 0.0, 0, ())


def _leaves(blocks, params, step=0, what="vector"):
    return [getattr(partition_grad(b, params, SPEC, i, 0, step, 2, 0, False), what)
            for i, b in enumerate(blocks)]


def _sum_in_order(vectors):
    """Plain NumPy, written out: left to right, as the tree's combine adds its group."""
    total = vectors[0].copy()
    for v in vectors[1:]:
        total = total + v
    return total


def test_a_worker_ships_its_runs_subtrees_folded(rng):
    blocks = _blocks(rng)
    params, _, args, start = _setup(rng)
    leaves = _leaves(blocks, params)
    rows = _leaves(blocks, params, what="n")
    out = step_and_partition_grads(start, 0, args, 1, blocks[:32], list(range(32)), 0, 0, 2, 0,
                                   False)
    # blocks 0..31 of 64 (fan-in 8): the level-1 nodes 0..3, each the sum of its 8 leaves
    assert out.packed.places == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert out.packed.rows == [sum(rows[8 * k:8 * k + 8]) for k in range(4)]
    for k in range(4):
        expected = _sum_in_order(leaves[8 * k:8 * k + 8])
        assert np.array_equal(out.packed.vectors[k], expected)  # bit for bit
        np.testing.assert_allclose(expected, np.sum(leaves[8 * k:8 * k + 8], axis=0),
                                   rtol=1e-12, atol=1e-15)
    # the same blocks held every other position: no complete subtree, one node per block
    spread = step_and_partition_grads(start, 0, args, 1, blocks[::2],
                                      list(range(0, N_BLOCKS, 2)), 0, 0, 2, 0, False)
    assert spread.packed.places == [(0, i) for i in range(0, N_BLOCKS, 2)]


def test_the_step_from_two_runs_equals_the_whole_tree_written_out(rng):
    blocks = _blocks(rng)
    params, opt, args, start = _setup(rng)
    outs = [step_and_partition_grads(start, w, args, 1, blocks[32 * w:32 * w + 32],
                                     list(range(32 * w, 32 * w + 32)), 0, 0, 2, 0, False)
            for w in (0, 1)]
    state = _step(outs, 1, args, 1)
    # the oracle: the fixed tree over all 64 leaves, level by level, in plain NumPy
    leaves = _leaves(blocks, params)
    level1 = [_sum_in_order(leaves[8 * k:8 * k + 8]) for k in range(8)]
    grad = _sum_in_order(level1)
    n = sum(_leaves(blocks, params, what="n"))
    expected = gradient_step(Partial(0.0, grad, n, ()), params, start.opt_state, SPEC, opt,
                             1e-4, Rate(1e-2))[0]
    assert np.array_equal(state.params, expected)
    assert state.n == n


@pytest.mark.timeout(180)
def test_fit_is_the_same_with_blocks_in_runs_or_interleaved(client, rng):
    workers = sorted(client.scheduler_info()["workers"])
    X = rng.standard_normal((16 * 24, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    blocks = to_blocks(client, da.from_array(X, chunks=(24, -1)), da.from_array(y, chunks=24),
                       classification=True, dtype="float64")
    held = block_workers(client, blocks.futures)
    assert held == [workers[0]] * 8 + [workers[1]] * 8 or held == [workers[1]] * 8 + [
        workers[0]] * 8  # placed in runs
    interleaved = place(client, blocks, [workers[i % 2] for i in range(16)], name="interleave")
    wait(interleaved.futures)
    assert block_workers(client, interleaved.futures) == [workers[i % 2] for i in range(16)]
    cfg = TrainConfig(batch_size=32, max_iter=2, random_state=0)
    a = train(client, blocks, model=SPEC, config=cfg)
    b = train(client, interleaved, model=SPEC, config=cfg)
    assert np.array_equal(a.params, b.params)
    assert a.state.loss_curve == b.state.loss_curve


def test_one_round_at_a_time_ships_folded_runs_and_folds_to_the_same_bits(rng):
    """rounds_ahead=1: each worker's partition_grads folds its run's subtrees too; the root
    folds the nodes to the written-out tree sum, as it folds per-block partials."""
    from pipeline.train.tasks import fold_partials, partition_grads

    blocks = _blocks(rng)
    params = SPEC.init_params(0, dtype=np.float64)
    runs = [list(range(40)), list(range(40, N_BLOCKS))]  # 40 = 5 subtrees of 8; 24 = 3
    nodes = [partition_grads([blocks[i] for i in run], run, params, SPEC, 0, 0, 2, 0, False,
                             N_BLOCKS, SPLIT) for run in runs]
    assert [[(d, i) for d, i, _ in g] for g in nodes] == [[(1, k) for k in range(5)],
                                                          [(1, k) for k in range(5, 8)]]
    pairs = [partition_grads([blocks[i] for i in run], run, params, SPEC, 0, 0, 2, 0, False)
             for run in runs]
    leaves = _leaves(blocks, params)
    expected = _sum_in_order([_sum_in_order(leaves[8 * k:8 * k + 8]) for k in range(8)])
    folded = fold_partials(nodes, SPLIT, N_BLOCKS)
    assert np.array_equal(folded.vector, expected)
    assert np.array_equal(fold_partials(pairs, SPLIT).vector, expected)
    assert folded.n == sum(_leaves(blocks, params, what="n"))
    assert sorted(t[0] for t in folded.timings) == list(range(N_BLOCKS))  # every block's record
