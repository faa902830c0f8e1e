"""The tabular training step's cheaper kernels (issue 13) give the bits of the expressions they
replace: the L2 penalty at ``alpha = 0``, ... Oracles: the plain (workspace-free) paths, which
evaluate the textbook expressions, compared bit for bit (``view`` as unsigned integers, so
signed zeros and NaN payload positions count)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from pipeline import backend as bk
from pipeline import nn


def _bits(a):
    a = np.asarray(bk.to_host(a))
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _same(a, b) -> bool:
    return np.array_equal(_bits(a), _bits(b))


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                  math.copysign(1, b))


@pytest.mark.parametrize("alpha", [0.0, -0.0, 1e-4])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf, 2e19, -3e19, 1e19, -0.0])
def test_penalty_at_alpha_zero_is_the_plain_penalty(alpha, bad):
    # 2e19 squared overflows float32 (the float64 total is inf, the penalty 0 * inf = NaN);
    # 1e19 squared does not
    spec = nn.MLPSpec((4, 6, 1), "relu", "squared_error")
    flat = spec.init_params(0, np.float32)
    flat[:5] = -np.abs(flat[:5])  # negative weights: their gradient W * 0.0 is -0.0
    if bad is not None:
        flat[3] = bad
    ws = nn.Workspace()
    ctx = nn.Context(training=True, workspace=ws, need_input_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf * 0, overflowing squares
        want_pen, want_grad = spec.l2_penalty(flat, alpha, 10)
        for _ in range(2):  # the second call reuses the buffers
            pen, grad = spec.l2_penalty(flat, alpha, 10, ctx)
            assert _same_float(pen, want_pen)
            assert _same(grad, want_grad)


def test_penalty_at_alpha_zero_on_every_backend(backend):
    spec = nn.MLPSpec((4, 6, 3, 1), "relu", "binary_log_loss")
    flat = backend.asarray(spec.init_params(1, np.float32))
    ctx = nn.Context(training=True, workspace=nn.Workspace(), need_input_grad=False)
    want_pen, want_grad = spec.l2_penalty(flat, 0.0, 7)
    pen, grad = spec.l2_penalty(flat, 0.0, 7, ctx)
    assert _same_float(pen, want_pen) and want_pen == 0.0
    assert _same(grad, want_grad)
