"""Workspaces change no bits and, in steady state, allocate nothing: the out= helpers of
pipeline.backend against their plain expressions, a network of every layer kind with and without
a workspace, and page faults counted in a process started as Dask's nanny starts workers."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from layer_check import tabular_data

from pipeline import backend as bk
from pipeline.backend import to_host
from pipeline.nn import (
    LOSSES,
    Chain,
    ColumnSplit,
    Context,
    Dense,
    Dropout,
    Embedding,
    LayerNorm,
    Logistic,
    ReLU,
    Sequential,
    Tanh,
    Workspace,
)

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def every_layer_model(loss, n_outputs):
    encode = ColumnSplit([((0, 2, 1), Chain([Dense(4), ReLU()])),
                          ((3, 4), Embedding((5, 3), (2, 2)))])
    return Sequential([encode, LayerNorm(), Dense(6), Logistic(), Dropout(0.3), Dense(5), Tanh(),
                       Dense(n_outputs)], loss=loss, in_shape=(5,))


@pytest.mark.parametrize("need_input_grad", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", LOSSES)
def test_workspace_gives_the_same_bits(loss, dtype, need_input_grad, rng):
    model = every_layer_model(loss, 3)
    flat = model.init_params(0, dtype)
    ws = Workspace()
    for step, n in enumerate((1, 7, 256, 300, 7, 256)):
        X, Y = tabular_data(rng, n, 3, loss)
        X, Y = X.astype(dtype), Y.astype(dtype)
        sw = rng.uniform(0.5, 2.0, n).astype(dtype) if step % 2 else None
        key = (0, 1, 2, step)
        plain = Context(training=True, key=key, need_input_grad=need_input_grad)
        buffered = Context(training=True, key=key, workspace=ws,
                           need_input_grad=need_input_grad)
        loss_a, grad_a = model.loss_and_grad(flat, X, Y, sw, ctx=plain)
        loss_b, grad_b = model.loss_and_grad(flat, X, Y, sw, ctx=buffered)
        assert loss_a == loss_b
        assert np.array_equal(grad_a, grad_b)
        assert np.array_equal(model.forward(flat, X, plain), model.forward(flat, X, buffered))
        assert np.array_equal(model.forward(flat, X),
                              model.forward(flat, X, Context(workspace=ws)))


def test_buffers_are_reused(rng):
    model = every_layer_model("log_loss", 3)
    flat = model.init_params(0, np.float32)
    ws = Workspace()
    ctx = Context(training=True, key=(0, 0, 0, 0), workspace=ws, need_input_grad=False)
    X, Y = (a.astype(np.float32) for a in tabular_data(rng, 64, 3, "log_loss"))
    _, first = model.loss_and_grad(flat, X, Y, ctx=ctx)
    held = ws.nbytes
    first_copy = first.copy()
    X2, Y2 = (a.astype(np.float32) for a in tabular_data(rng, 64, 3, "log_loss"))
    _, second = model.loss_and_grad(flat, X2, Y2, ctx=ctx)
    assert second is first  # the gradient is a workspace buffer: valid until the next step
    assert not np.array_equal(first_copy, second)
    assert ws.nbytes == held > 0


def test_workspace_bounds_and_namespaces():
    import array_api_strict as xps

    ws = Workspace(max_shapes=2)
    like = np.zeros(3, dtype=np.float32)
    a = ws.get("z", (4, 2), like)
    assert a.dtype == np.float32 and a.shape == (4, 2) and a.flags.aligned
    assert ws.get("z", (4, 2), like) is a
    assert ws.get("z", (4, 2), like, np.float64) is not a
    ws.get("z", (5, 2), like)  # a third shape drops the least recently used, (4, 2) float32
    assert ws.get("z", (4, 2), like) is not a
    assert ws.child("x") is ws.child("x") and ws.child("x") is not ws.child("y")
    # Namespaces without out= get no buffers: layers fall back to plain expressions.
    assert ws.get("z", (4, 2), xps.zeros(3)) is None
    ws.clear()
    assert ws.nbytes == 0
    with pytest.raises(ValueError, match="max_shapes"):
        Workspace(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_helpers_match_plain_expressions(dtype, backend, rng):
    """Each helper with out= (NumPy's in-place kernels, or the copy fallback on other
    namespaces) gives the plain expression's bits."""
    xp = backend.xp
    A = backend.asarray(rng.standard_normal((33, 20)).astype(dtype))
    B = backend.asarray(rng.standard_normal((20, 7)).astype(dtype))
    C = backend.asarray(rng.standard_normal((33, 7)).astype(dtype))

    def buf(shape, kind=A.dtype):
        return xp.empty(shape, dtype=kind, device=backend.device)

    cases = [
        (lambda out: bk.matmul(A, B, out=out), A @ B, (33, 7)),
        (lambda out: bk.matmul(A.T, C, out=out), A.T @ C, (20, 7)),
        (lambda out: bk.elementwise("add", C, 1.0, out=out), C + 1.0, (33, 7)),
        (lambda out: bk.elementwise("subtract", 1.0, C, out=out), 1.0 - C, (33, 7)),
        (lambda out: bk.elementwise("tanh", C, out=out), xp.tanh(C), (33, 7)),
        (lambda out: bk.clip(C, -0.5, None, out=out), xp.clip(C, -0.5, None), (33, 7)),
        (lambda out: bk.reduce("sum", C, axis=0, out=out), xp.sum(C, axis=0), (7,)),
        (lambda out: bk.reduce("max", C, axis=1, keepdims=True, out=out),
         xp.max(C, axis=1, keepdims=True), (33, 1)),
    ]
    for compute, expected, shape in cases:
        assert np.array_equal(to_host(compute(None)), to_host(expected))
        out = buf(shape)
        assert compute(out) is out
        assert np.array_equal(to_host(out), to_host(expected))
    mask = C > 0
    out = buf((33, 7))
    assert bk.astype(mask, A.dtype, out=out) is out
    assert np.array_equal(to_host(out), to_host(xp.astype(mask, A.dtype)))


def test_take_rows(backend, rng):
    xp = backend.xp
    X = backend.asarray(rng.standard_normal((50, 4)).astype(np.float32))
    idx = backend.asarray(rng.permutation(50)[:17])
    expected = xp.take(X, idx, axis=0)
    assert np.array_equal(to_host(bk.take_rows(X, idx)), to_host(expected))
    out = xp.empty((17, 4), dtype=X.dtype, device=backend.device)
    assert bk.take_rows(X, idx, out=out) is out
    assert np.array_equal(to_host(out), to_host(expected))
    ws = Workspace()
    assert np.array_equal(to_host(ws.take_rows("X", X, idx)), to_host(expected))
    bad = backend.asarray(np.array([3, 50]))
    with pytest.raises(IndexError):
        bk.take_rows(X, bad, out=out[:2])
    with pytest.raises(IndexError):
        bk.take_rows(X, bad)


def run_kernel(batch, use_workspace, steps):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_kernel_faults
    finally:
        sys.path.remove(str(BENCHMARKS))
    return bench_kernel_faults.run_child(batch, use_workspace, steps,
                                         bench_kernel_faults.DASK_NANNY_ENV)


def test_workspace_kernel_does_not_fault_in_a_dask_worker_environment():
    """With MALLOC_TRIM_THRESHOLD_ set, every fresh array above 128 KiB is a new mmap whose
    pages fault in: the plain kernel faults hundreds of times per step at batch 1024 (so the
    count can see it), the workspace kernel about never after its warm-up."""
    plain = run_kernel(1024, False, 40)
    buffered = run_kernel(1024, True, 200)
    assert plain["faults_per_step"] > 50
    # ~0 (the plain kernel: ~780 a step). Not exactly 0: small arrays (the optimizer's, ~22 kB)
    # live on the heap, and whether the heap's top crosses glibc's trim threshold after a step
    # depends on its layout, which the hash seed moves (PYTHONHASHSEED=6640: 3 pages a step).
    assert buffered["faults_per_step"] < 0.01 * plain["faults_per_step"]
