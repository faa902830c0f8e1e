"""EnsembleDense, Periodic and EnsembleSequential with a step workspace give the bits (and the
memory layouts) of their plain expressions, written out here in NumPy, on every step, and reuse
their buffers; the same layers run on array_api_strict (no buffers) to the same values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from layer_check import small_layout, tabular_rows

from pipeline.backend import to_host
from pipeline.nn import Context, EnsembleDense, Periodic, Workspace
from pipeline.tabular_net import build_network


def flat_views(arrays, fill=None):
    """``arrays`` (or NaNs like them) as views one after the other in one flat vector, as a
    network's parameters and gradients are."""
    flat = np.concatenate([a.reshape(-1) for a in arrays])
    if fill is not None:
        flat[:] = fill
    views, a = [], 0
    for p in arrays:
        views.append(flat[a:a + p.size].reshape(p.shape))
        a += p.size
    return views


def run(layer, params, x, dy, ws, need_input_grad=True, flat=False):
    ctx = Context(training=True, key=(0, 1, 2, 3), workspace=ws, need_input_grad=need_input_grad)
    y, cache = layer.forward(params, x, ctx)
    y_copy = np.array(y, copy=True, order="K")  # the buffer is overwritten by the next step
    strides = y.strides
    # every element must be written
    grads = flat_views(params, np.nan) if flat else [np.full_like(p, np.nan) for p in params]
    dx = layer.backward(params, cache, dy, ctx, grads)
    return y_copy, strides, grads, dx


def same_layout(a, strides, ref):
    """Same strides on every axis longer than 1 (NumPy's strides of a length-1 axis are
    arbitrary and never used)."""
    return all(s == r for s, r, n in zip(strides, ref.strides, ref.shape, strict=True) if n > 1)


def ensemble_dense_reference(W, b, x, dy):
    """The plain NumPy expressions: outputs, gradients and dx, with NumPy's layouts."""
    n, (k, d, u) = x.shape[0], W.shape
    if x.ndim == 2:
        Wcat = np.transpose(W, (1, 0, 2)).reshape(d, k * u)
        y = np.asarray((x @ Wcat).reshape(n, k, u) + b.reshape(1, k, u), copy=True)
        dW = np.transpose((x.T @ dy.reshape(n, k * u)).reshape(d, k, u), (1, 0, 2))
        dx = dy.reshape(n, k * u) @ np.transpose(W, (0, 2, 1)).reshape(k * u, d)
    else:
        z = np.transpose(np.transpose(x, (1, 0, 2)) @ W, (1, 0, 2))
        y = np.asarray(z + b.reshape(1, k, u), copy=True)  # keeps z's member-major layout
        dW = np.transpose(x, (1, 2, 0)) @ np.transpose(dy, (1, 0, 2))
        dx = np.asarray(np.transpose(np.transpose(dy, (1, 0, 2)) @ np.transpose(W, (0, 2, 1)),
                                     (1, 0, 2)), copy=True)
    return y, dW, dy.sum(axis=0), dx


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("members", [1, 2, 3])
def test_ensemble_dense_workspace_is_the_plain_expression(members, shared, rng):
    d, u = 37, 16
    layer = EnsembleDense(members, u)
    in_shape = (d,) if shared else (members, d)
    layer.build(in_shape)
    W = rng.standard_normal((members, d, u)).astype(np.float32)
    b = rng.standard_normal((members, u)).astype(np.float32)
    ws = Workspace()
    for n in (256, 256, 7, 256, 300):
        x = rng.standard_normal((n, *in_shape)).astype(np.float32)
        dy = rng.standard_normal((n, members, u)).astype(np.float32)
        y_ref, dW_ref, db_ref, dx_ref = ensemble_dense_reference(W, b, x, dy)
        for space in (ws, None):
            y, strides, (dW, db), dx = run(layer, [W, b], x, dy, space)
            assert np.array_equal(y, y_ref) and same_layout(y, strides, y_ref)
            assert np.array_equal(dW, dW_ref) and np.array_equal(db, db_ref)
            assert np.array_equal(dx, dx_ref) and same_layout(dx, dx.strides, dx_ref)


def periodic_reference(c, x, dy):
    n, f = x.shape
    k = c.shape[1]
    z = (2 * math.pi) * (x.reshape(n, f, 1) * c.reshape(1, f, k))
    s, co = np.sin(z), np.cos(z)
    y = np.concatenate([s.reshape(n, f * k), co.reshape(n, f * k)], axis=1)
    g = dy.reshape(n, 2, f, k)  # every feature's sines, then every feature's cosines
    dz = g[:, 0] * co - g[:, 1] * s
    dc = (2 * math.pi) * np.sum(dz * x.reshape(n, f, 1), axis=0)
    dx = (2 * math.pi) * np.sum(dz * c.reshape(1, f, k), axis=2)
    return y, dc, dx


def test_periodic_workspace_is_the_plain_expression(rng):
    f, k = 5, 8
    layer = Periodic(k, 0.5)
    layer.build((f,))
    c = rng.normal(0.0, 0.5, (f, k)).astype(np.float32)
    ws = Workspace()
    for n in (256, 256, 3, 256):
        wide = rng.standard_normal((n, f + 2)).astype(np.float32)
        x = wide[:, 1:f + 1]  # a column slice, as ColumnSplit passes it
        # the output's gradient as a column slice too: the next layer's input gradient
        dy = rng.standard_normal((n, f * 2 * k + 3)).astype(np.float32)[:, 1:-2]
        y_ref, dc_ref, dx_ref = periodic_reference(c, x, dy)
        for space in (ws, None):
            y, _, (dc,), dx = run(layer, [c], x, dy, space)
            assert np.array_equal(y, y_ref)
            assert np.array_equal(dc, dc_ref) and np.array_equal(dx, dx_ref)
            _, _, (dc2,), none = run(layer, [c], x, dy, space, need_input_grad=False)
            assert none is None and np.array_equal(dc2, dc_ref)


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("order", ["halves", "groups"])
def test_periodic_of_several_counts_is_the_plain_expression(order, flat, rng):
    """One layer of several frequency counts gives, with and without a workspace, the bits of
    the plain expressions of each run of equal counts (written out here); ``order="groups"``
    gives the bits of the runs as layers of their own side by side, the network that the
    models saved before this layer had (they load into it and predict the same). ``flat``:
    the parameters and gradients are views one after the other in flat vectors (a network's),
    which the layer reads and writes as one span."""
    from pipeline.nn import ColumnSplit

    runs = [(3, 8), (1, 7), (2, 3)]  # (features, k), most frequencies first
    counts = tuple(k for f, k in runs for _ in range(f))
    layer = Periodic(counts, 0.5, order=order)
    layer.build((6,))
    cs = [rng.normal(0.0, 0.5, (f, k)).astype(np.float32) for f, k in runs]
    if flat:
        cs = flat_views(cs)
    old = ColumnSplit([((0, 1, 2), Periodic(8, 0.5)), ((3,), Periodic(7, 0.5)),
                       ((4, 5), Periodic(3, 0.5))])
    old.build((6,))
    ws, ws_old = Workspace(), Workspace()
    w = sum(f * k for f, k in runs)
    for n in (256, 256, 3, 256):
        wide = rng.standard_normal((n, 8)).astype(np.float32)
        x = wide[:, 1:7]  # a column slice, as ColumnSplit passes it
        dy = rng.standard_normal((n, 2 * w + 3)).astype(np.float32)[:, 1:-2]
        pieces, sines, cosines, dcs, dxs, a = [], [], [], [], [], 0
        for (f, k), c in zip(runs, cs, strict=True):
            xr = np.ascontiguousarray(x[:, a:a + f])
            if order == "groups":
                dyr = dy[:, 2 * sum(ff * kk for ff, kk in runs[:len(dcs)]):][:, :2 * f * k]
            else:
                off = sum(ff * kk for ff, kk in runs[:len(dcs)])
                dyr = np.concatenate([dy[:, off:off + f * k], dy[:, w + off:w + off + f * k]],
                                     axis=1)
            y_r, dc_r, dx_r = periodic_reference(c, xr, np.ascontiguousarray(dyr))
            sines.append(y_r[:, :f * k])
            cosines.append(y_r[:, f * k:])
            pieces.append(y_r)
            dcs.append(dc_r)
            dxs.append(dx_r)
            a += f
        y_ref = np.concatenate(pieces if order == "groups" else sines + cosines, axis=1)
        for space in (ws, None):
            y, _, dc, dx = run(layer, cs, x, dy, space, flat=flat)
            assert np.array_equal(y, y_ref)
            assert all(np.array_equal(g, r) for g, r in zip(dc, dcs, strict=True))
            assert np.array_equal(dx, np.concatenate(dxs, axis=1))
            _, _, dc2, none = run(layer, cs, x, dy, space, need_input_grad=False, flat=flat)
            assert none is None and all(np.array_equal(g, r) for g, r in zip(dc2, dcs,
                                                                            strict=True))
        if order == "groups":
            y_old, _, dc_old, _ = run(old, cs, x, dy, ws_old, need_input_grad=False)
            y, _, dc, _ = run(layer, cs, x, dy, ws, need_input_grad=False)
            assert np.array_equal(y, y_old)
            assert all(np.array_equal(g, r) for g, r in zip(dc, dc_old, strict=True))




@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("members", [1, 2, 3])
def test_tabular_network_workspace_same_bits_and_reused(members, layer_norm, rng):
    """With a workspace, the same bits as the plain expressions, but for one sum: with one
    member the first layer's input gradient is column-major (ColumnSplit's column-major
    step), and the periodic frequencies' gradient sums its column of rows pairwise (NumPy's
    sum along a contiguous axis) where the plain expression adds row after row: those agree
    to float rounding."""
    model = build_network(small_layout(), 1, "binary_log_loss", hidden_layer_sizes=(32, 16),
                          dropout=0.2, layer_norm=layer_norm, n_members=members)
    assert model.body.layers[0]._column_major  # (an EnsembleDense follows the ColumnSplit)
    assert isinstance(model.body.layers[0].branches[0][1], Periodic)  # its parameters first
    n_freq = model.unpack(np.zeros(model.n_params, np.float32))[0].size
    flat = model.init_params(0).astype(np.float32)
    ws = Workspace()
    held, first = None, None
    for step, n in enumerate((64, 64, 5, 64)):
        X = tabular_rows(rng, n)
        Y = np.concatenate([rng.integers(0, 2, (n, 1)), rng.uniform(0.5, 2, (n, 1))],
                           axis=1).astype(np.float32)  # label, then row weights
        key = (0, 0, 0, step)
        plain = Context(training=True, key=key, need_input_grad=False)
        buffered = Context(training=True, key=key, workspace=ws, need_input_grad=False)
        loss_a, grad_a = model.loss_and_grad(flat, X, Y, ctx=plain)
        loss_b, grad_b = model.loss_and_grad(flat, X, Y, ctx=buffered)
        assert loss_a == loss_b and np.array_equal(grad_a[n_freq:], grad_b[n_freq:])
        if members > 1:  # (row-major there: the same sums)
            assert np.array_equal(grad_a[:n_freq], grad_b[:n_freq])
        np.testing.assert_allclose(grad_b[:n_freq], grad_a[:n_freq], rtol=1e-5,
                                   atol=1e-6 * float(np.abs(grad_a[:n_freq]).max()))
        if n == 64:
            if first is None:
                first, held = grad_b, ws.nbytes
            assert grad_b is first  # the flat gradient is the workspace's buffer
        assert np.array_equal(model.forward(flat, X), model.forward(flat, X, Context(workspace=ws)))
    assert ws.nbytes > held  # the short batch added its own buffers; the full ones were reused


def test_layers_on_other_namespaces_match_numpy(backend, rng):
    """No buffers there (Workspace.get gives None): the plain expressions, same values."""
    layer = EnsembleDense(2, 8)
    layer.build((2, 5))
    W = rng.standard_normal((2, 5, 8)).astype(np.float32)
    b = rng.standard_normal((2, 8)).astype(np.float32)
    x = rng.standard_normal((9, 2, 5)).astype(np.float32)
    dy = rng.standard_normal((9, 2, 8)).astype(np.float32)
    y_ref, dW_ref, db_ref, dx_ref = ensemble_dense_reference(W, b, x, dy)
    ctx = Context(training=True, key=(0,), workspace=Workspace())
    y, cache = layer.forward([backend.asarray(W), backend.asarray(b)], backend.asarray(x), ctx)
    grads = [backend.xp.zeros(W.shape, dtype=backend.xp.float32, device=backend.device),
             backend.xp.zeros(b.shape, dtype=backend.xp.float32, device=backend.device)]
    dx = layer.backward([backend.asarray(W), backend.asarray(b)], cache, backend.asarray(dy),
                        ctx, grads)
    np.testing.assert_allclose(to_host(y), y_ref, rtol=1e-6)
    np.testing.assert_allclose(to_host(grads[0]), dW_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_host(grads[1]), db_ref, rtol=1e-6)
    np.testing.assert_allclose(to_host(dx), dx_ref, rtol=1e-5, atol=1e-5)
    p = Periodic(4, 0.5)
    p.build((3,))
    c = rng.normal(0.0, 0.5, (3, 4)).astype(np.float32)
    xs = rng.standard_normal((6, 3)).astype(np.float32)
    dys = rng.standard_normal((6, 24)).astype(np.float32)
    ys, cache = p.forward([backend.asarray(c)], backend.asarray(xs), ctx)
    (dc,) = [backend.xp.zeros(c.shape, dtype=backend.xp.float32, device=backend.device)]
    dxs = p.backward([backend.asarray(c)], cache, backend.asarray(dys), ctx, [dc])
    y_ref, dc_ref, dx_ref = periodic_reference(c, xs, dys)
    np.testing.assert_allclose(to_host(ys), y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_host(dc), dc_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_host(dxs), dx_ref, rtol=1e-4, atol=1e-5)


def test_span_is_one_view_of_consecutive_arrays_only():
    from pipeline.nn.workspace import flat_span as _span

    flat = np.arange(20, dtype=np.float32)
    a, b, c = flat[2:8].reshape(2, 3), flat[8:12].reshape(4, 1), flat[12:14]
    span = _span([a, b, c])
    assert span is not None and np.shares_memory(span, flat)
    np.testing.assert_array_equal(span, np.arange(2, 14))
    span[:] = -1  # writes through: a gradient written as one span lands in each array
    assert (a == -1).all() and (c == -1).all() and flat[14] == 14
    assert _span([a, c]) is None  # a gap
    assert _span([b, a]) is None  # out of order
    assert _span([a, flat[8:12].astype(np.float64)]) is None  # another buffer and dtype
    assert _span([flat[2:12:2]]) is None  # not contiguous
    assert _span([np.zeros(3)]) is not None  # one array of its own: itself, flattened


def test_embedding_reads_and_writes_flat_tables_as_one_span(rng):
    """Tables and their gradients as views one after the other in flat vectors (a network's),
    with a workspace (the span path: no concatenation, one rounding copy): the bits of
    separate arrays without one."""
    from pipeline.nn import Embedding

    vocab, dims = (5, 49, 3), (4, 14, 2)
    layer = Embedding(vocab, dims)
    layer.build((3,))
    tables = [rng.standard_normal((v, d)).astype(np.float32) for v, d in zip(vocab, dims,
                                                                            strict=True)]
    flat = flat_views(tables)
    ws = Workspace()
    for n in (64, 64, 5):
        codes = np.stack([rng.integers(0, v, n) for v in vocab], axis=1).astype(np.float32)
        dy = rng.standard_normal((n, sum(dims))).astype(np.float32)
        y_ref, _, g_ref, _ = run(layer, tables, codes, dy, None, need_input_grad=False)
        y, _, g, _ = run(layer, flat, codes, dy, ws, need_input_grad=False, flat=True)
        assert np.array_equal(y, y_ref)
        assert all(np.array_equal(a, b) for a, b in zip(g, g_ref, strict=True))
    # the spans were found (and remembered): the path under test ran
    assert ws.span("tables", flat) is not None and ws._memos[("span", "tables")][1] is not None
