"""Embedding: one learned table per column of integer codes.

Tabular categoricals arrive as float columns holding integer codes ``0 .. vocab_size - 1`` (the
caller decides whether the last code is an "unknown" bucket). Column ``j`` looks its code up in
table ``T_j`` of shape ``(vocab_sizes[j], dims[j])``; the looked-up rows are concatenated into
``(batch, sum(dims))``.

The gradient of a lookup is a scatter-add, which the array API does not have: it is written as
a one-hot matrix product, ``dT_j = onehot(codes_j).T @ dy_j``. That is exact (each sum has one
non-zero term per row) and costs ``batch x vocab`` memory, fine for the small vocabularies of
tabular data (up to a few thousand codes per column). NumPy arrays gather every table's rows in
one take from the tables laid end to end and scatter-add the gradient with one weighted
``np.bincount`` over the same index (:func:`_scatter_add`), O(batch x dims).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend as bk
from ..backend import device, namespace, to_host
from .layers import Context, Layer, Shape

__all__ = ["Embedding"]

Array = Any


class Embedding(Layer):
    """Tables of ``dims[j]``-dimensional vectors for ``vocab_sizes[j]`` codes, per column ``j``.

    Input ``(batch, len(vocab_sizes))`` of integer codes stored as floats; output
    ``(batch, sum(dims))``. ``init`` draws every table from ``normal(0, 1)`` (as PyTorch's
    ``nn.Embedding``): unit scale, like standardized numeric columns.
    """

    def __init__(self, vocab_sizes: tuple[int, ...], dims: tuple[int, ...]) -> None:
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        self.dims = tuple(int(d) for d in dims)
        if len(self.vocab_sizes) != len(self.dims) or not self.dims:
            raise ValueError(f"Embedding needs one dim per vocabulary, got vocab_sizes="
                             f"{self.vocab_sizes} and dims={self.dims}")
        if min(self.vocab_sizes) < 1 or min(self.dims) < 1:
            raise ValueError(f"vocab sizes and dims must be >= 1, got {self.vocab_sizes}, "
                             f"{self.dims}")

    def build(self, in_shape: Shape) -> tuple[list[Shape], Shape]:
        if tuple(in_shape) != (len(self.vocab_sizes),):
            raise ValueError(f"{self!r} needs inputs of shape ({len(self.vocab_sizes)},) "
                             f"(one code column per table), got {tuple(in_shape)}")
        return list(zip(self.vocab_sizes, self.dims, strict=True)), (sum(self.dims),)

    def init(self, rng: np.random.Generator, in_shape: Shape) -> list[np.ndarray]:
        return [rng.normal(0.0, 1.0, (v, d)) for v, d in zip(self.vocab_sizes, self.dims,
                                                                strict=True)]

    def _check_codes(self, x: Array, ctx: Context) -> None:
        if not x.shape[0]:
            return
        vocab = self.__dict__.get("_vocab")
        if vocab is None:
            vocab = self.__dict__["_vocab"] = np.asarray(self.vocab_sizes)
        if type(x) is np.ndarray:
            # every code in [0, vocab) (NaN fails both): two comparisons, where a column-wise
            # min and max of a narrow batch take ~4x as long; the bounds only on failure
            ok = ctx.buffer("in_range", tuple(x.shape), x, np.bool_)
            bounds = self.__dict__.setdefault("_bounds", {})  # per dtype, built once
            bound = bounds.get(x.dtype)
            if bound is None:  # (vocabularies in x's dtype: exact below 2**24)
                bound = bounds[x.dtype] = vocab.astype(x.dtype) if x.dtype.kind == "f" \
                    else vocab
            if np.logical_and.reduce(np.greater_equal(x, 0, out=ok), axis=None) and \
                    np.logical_and.reduce(np.less(x, bound, out=ok), axis=None):
                return
            lo, hi = np.minimum.reduce(x, axis=0), np.maximum.reduce(x, axis=0)
        else:
            xp = namespace(x)
            lo, hi = to_host(xp.min(x, axis=0)), to_host(xp.max(x, axis=0))
            if bool(np.all((lo >= 0) & (hi < vocab))):  # NaN fails too
                return
        for j, v in enumerate(self.vocab_sizes):
            if not (lo[j] >= 0 and hi[j] < v):
                raise ValueError(f"{self!r}: codes of input column {j} must lie in "
                                 f"[0, {v}), got values in [{lo[j]}, {hi[j]}]")

    def _names(self, stem: str) -> list[str]:
        """``stem + str(j)`` for every table ``j`` (buffer names, built once)."""
        names = self.__dict__.setdefault("_buffer_names", {})
        got = names.get(stem)
        if got is None:
            got = names[stem] = [f"{stem}{j}" for j in range(len(self.dims))]
        return got

    def _layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """Per output column: its table and its place within its table's row; per table: its
        width and its start in the tables laid end to end (row-major); and the tables' total
        size. Built once."""
        got = self.__dict__.get("_flat_layout")
        if got is None:
            table = np.repeat(np.arange(len(self.dims)), self.dims)
            within = np.concatenate([np.arange(d) for d in self.dims])
            width = np.asarray(self.dims, dtype=np.int64)
            sizes = np.asarray(self.vocab_sizes, dtype=np.int64) * width
            starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
            got = self.__dict__["_flat_layout"] = (table, within, width, starts,
                                                   int(sizes.sum()))
        return got

    def _host_forward(self, params: list[np.ndarray], x: np.ndarray,
                      ctx: Context) -> tuple[np.ndarray, Any]:
        """NumPy: every table's lookups as one gather from the tables laid end to end. Output
        column ``col`` of row ``i``, of table ``j``, is entry ``starts[j] + code * width[j] +
        within[col]`` of that flat vector (``code`` the row's code for table ``j``): the same
        values as the per-table takes, and the index matrix is the backward's scatter index
        too."""
        n, k = x.shape
        table, within, width, starts, total = self._layout()
        # the tables one after the other in the flat parameters: a view of them, no copy
        flat = None if ctx.workspace is None else ctx.workspace.span("tables", params)
        if flat is None:
            flat = ctx.buffer("tables", (total,), x, params[0].dtype)
            flat = np.concatenate([t.reshape(-1) for t in params], out=flat)
        if ctx.workspace is not None and bk.column_major(x):
            # column-major codes (ColumnSplit's): the same index built on the transposes,
            # where each of its rows is a run (a row gather, not a column one)
            codesT = ctx.buffer("codesT", (k, n), x, np.int64)
            np.copyto(codesT, x.T, casting="unsafe")
            np.multiply(codesT, width[:, None], out=codesT)
            np.add(codesT, starts[:, None], out=codesT)
            idxT = np.take(codesT, table, axis=0,
                           out=ctx.buffer("indexT", (len(table), n), x, np.int64), mode="clip")
            np.add(idxT, within[:, None], out=idxT)
            outT = ctx.buffer("yT", (len(table), n), x, params[0].dtype)
            # in range: _check_codes saw every code lie in [0, vocab)
            return np.take(flat, idxT, out=outT, mode="clip").T, (idxT.T,)
        # each row's start in its table (code * width + the table's start), per code column,
        # then spread over the table's output columns (+ the column's place in the row)
        codes = bk.astype(x, np.int64, out=ctx.buffer("codes", (n, k), x, np.int64))
        codes = np.add(np.multiply(codes, width, out=codes), starts, out=codes)
        idx = np.take(codes, table, axis=1,
                      out=ctx.buffer("index", (n, len(table)), x, np.int64), mode="clip")
        idx = np.add(idx, within, out=idx)
        out = ctx.buffer("y", (n, len(table)), x, params[0].dtype)
        # in range: _check_codes saw every code lie in [0, vocab)
        out = np.take(flat, idx, out=out, mode="clip")
        return out, (idx,)

    def forward(self, params: list[Array], x: Array, ctx: Context) -> tuple[Array, Any]:
        self._check_codes(x, ctx)
        if type(x) is np.ndarray and all(type(t) is np.ndarray and t.dtype == x.dtype
                                          for t in params):
            return self._host_forward(params, x, ctx)
        xp = namespace(x)
        n, k = x.shape
        # Codes as integers, one contiguous row per column (the take index of each table).
        codes = bk.astype(x.T, xp.int64, out=ctx.buffer("codes", (k, n), x, xp.int64))
        out = ctx.buffer("y", (n, sum(self.dims)), x)
        if out is None:
            out = xp.empty((n, sum(self.dims)), dtype=x.dtype, device=device(x))
        start = 0
        for j, (table, dim, name) in enumerate(zip(params, self.dims, self._names("rows"),
                                                   strict=True)):
            # in range: _check_codes saw every code lie in [0, vocab)
            rows = bk.take_rows(table, codes[j, :], out=ctx.buffer(name, (n, dim), x),
                                in_range=True)
            out[:, start:start + dim] = rows
            start += dim
        return out, codes

    def _ids(self, j: int, like: Array, ws: Any) -> Array:
        """``arange(vocab_sizes[j])`` as int64 on ``like``'s device: built once per workspace
        (which may serve another network later: the key names the vocabulary and device)."""
        xp, dev, vocab = namespace(like), device(like), self.vocab_sizes[j]
        build = lambda: xp.arange(vocab, dtype=xp.int64, device=dev)  # noqa: E731
        return build() if ws is None else ws.memo(("ids", vocab, type(like), dev), (), build)

    def backward(self, params: list[Array], cache: Any, dy: Array, ctx: Context,
                 grads: list[Array]) -> Array | None:
        xp = namespace(dy)
        n = dy.shape[0]
        if isinstance(cache, tuple):  # the NumPy forward's (index matrix,)
            idx = cache[0]
            if bk.column_major(idx):
                # (the column-major forward's, with a workspace: the transposes' runs, each
                # bin's entries still in row order, a bin being one column's: the same sums)
                idx, dy = idx.T, dy.T
            _scatter_add(grads, idx, dy, self._layout()[4],
                         ctx.buffer("dy64", tuple(dy.shape), dy, np.float64),
                         None if ctx.workspace is None else ctx.workspace.span("grads", grads))
            if not ctx.need_input_grad:
                return None
            return xp.zeros((n, len(self.vocab_sizes)), dtype=dy.dtype)
        codes = cache
        ws = ctx.workspace
        start = 0
        for j, (vocab, dim) in enumerate(zip(self.vocab_sizes, self.dims, strict=True)):
            ids = self._ids(j, dy, ws)
            col, row = bk.reshape(codes[j, :], (n, 1)), bk.reshape(ids, (1, vocab))
            onehot = ctx.buffer(self._names("onehot")[j], (n, vocab), dy)
            if type(onehot) is np.ndarray:
                # the comparison's booleans cast to 0.0/1.0 on the way out: astype's values
                onehot = np.equal(col, row, out=onehot)
            else:
                hit = bk.elementwise("equal", col, row,
                                     out=ctx.buffer(self._names("hit")[j], (n, vocab), dy,
                                                    xp.bool))
                onehot = bk.astype(hit, dy.dtype, out=onehot)
            bk.matmul(onehot.T, dy[:, start:start + dim], out=grads[j])
            start += dim
        if not ctx.need_input_grad:
            return None
        # Codes are piecewise constant: the loss does not change with them.
        return xp.zeros((n, len(self.vocab_sizes)), dtype=dy.dtype, device=device(dy))


def _scatter_add(grads: list[Any], idx: np.ndarray, dy: np.ndarray, total: int,
                 dy64: np.ndarray | None = None, span: np.ndarray | None = None) -> None:
    """``g_j = 0; g_j[codes_j[i]] += dy_j[i]`` for every table ``j`` and row ``i`` (NumPy), all
    tables at once: ``np.bincount`` of the forward's index matrix (each entry of ``dy`` to its
    table entry in the tables laid end to end), weighted by ``dy``, summed in float64 in row
    order, then each table's part written (rounded) into its gradient. O(batch x dims) work in
    one pass, where a one-hot product is O(batch x vocab x dims) and a sort per table costs a
    few NumPy calls per table (hotel_rates' 9 tables at 432 rows, cProfile of a member's task:
    ~0.08 against ~0.37 ms a step)."""
    if dy64 is not None:  # (a buffer for bincount's float64 weights: no fresh copy)
        np.copyto(dy64, dy)
        dy = dy64
    sums = np.bincount(idx.reshape(-1), weights=dy.reshape(-1), minlength=total)
    if span is not None:  # (the gradients one after the other: one rounding copy)
        np.copyto(span, sums, casting="same_kind")
        return
    start = 0
    for g in grads:
        size = g.size
        np.copyto(g, sums[start:start + size].reshape(g.shape), casting="same_kind")
        start += size
