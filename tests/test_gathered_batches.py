"""A replica's mini-batches gathered for many steps at once (``_gathered_batches``) are the rows
the per-step path gives: for every step, each block's rows ``[lo, hi)`` of its epoch order,
joined in block order. The oracle is written out in plain NumPy (``np.concatenate`` of fancy
indexing), over block sizes that leave some steps empty, schedules that cross an epoch, runs cut
short by the row bound, with and without shuffling, 1-D and 2-D targets."""

from __future__ import annotations

import numpy as np
import pytest

import pipeline.train.local_steps as ls
from pipeline.blocks import Block
from pipeline.nn import Workspace
from pipeline.train.order import epoch_order


def oracle(blocks, indices, schedule, steps, seed, shuffle):
    out = []
    for epoch, step, global_rows in schedule:
        xs, ys = [], []
        for (X, Y), i in zip(blocks, indices, strict=True):
            n = X.shape[0]
            lo, hi = (step * n) // steps, ((step + 1) * n) // steps
            rows = np.arange(n) if not shuffle else epoch_order(n, seed, i, epoch, True)
            xs.append(X[rows[lo:hi]])
            ys.append(Y[rows[lo:hi]])
        if sum(x.shape[0] for x in xs):
            out.append((epoch, step, global_rows, np.concatenate(xs), np.concatenate(ys)))
    return out


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("sizes", [[500], [300, 7, 0, 128], [3, 5], [40_000, 1, 70_000]])
@pytest.mark.parametrize("y_2d", [False, True])
@pytest.mark.parametrize("gather_rows", [1 << 16, 50])
@pytest.mark.parametrize("schedule", [
    # a round that starts mid-epoch and crosses into the next one
    tuple((e, s, 17) for e, s in [(2, k) for k in range(5, 9)] + [(3, k) for k in range(7)]),
    # steps that are not consecutive (a run must not span the gap)
    ((3, 0, 5), (3, 2, 5), (3, 3, 5), (3, 8, 5)),
], ids=["crossing", "gaps"])
def test_gathered_batches_are_the_per_step_rows(monkeypatch, shuffle, sizes, y_2d, gather_rows,
                                                schedule):
    monkeypatch.setattr(ls, "GATHER_ROWS", gather_rows)
    rng = np.random.default_rng(len(sizes) + sum(sizes))
    blocks = [Block(rng.standard_normal((n, 3)).astype("float32"),
                    rng.standard_normal((n, 2) if y_2d else n).astype("float32"))
              for n in sizes]
    indices = list(range(4, 4 + len(blocks)))
    steps = 9
    want = oracle(blocks, indices, schedule, steps, 11, shuffle)
    got = [(e, s, g, X.copy(), Y.copy()) for e, s, g, X, Y in
           ls._gathered_batches(blocks, indices, schedule, steps, 11, shuffle, Workspace())]
    assert [w[:3] for w in want] == [g[:3] for g in got]
    for (*_, Xw, Yw), (*_, Xg, Yg) in zip(want, got, strict=True):
        np.testing.assert_array_equal(Xg, Xw)
        np.testing.assert_array_equal(Yg, Yw)
    # and the per-step path (kept for store handles and device arrays) agrees
    per_step = [(e, s, g, X.copy(), Y.copy()) for e, s, g, X, Y in
                ls._step_batches(blocks, indices, schedule, steps, 11, shuffle,
                                 [Workspace() for _ in blocks])]
    assert len(per_step) == len(want)
    for (*_, Xw, Yw), (*_, Xs, Ys) in zip(want, per_step, strict=True):
        np.testing.assert_array_equal(Xs, Xw)
        np.testing.assert_array_equal(Ys, Yw)
