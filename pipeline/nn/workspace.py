"""Buffers reused from one training step to the next.

A training step at a fixed batch size needs the same arrays every time: the gathered batch, each
layer's activations and deltas, the flat gradient. Allocating them afresh is costly on a Dask
worker: the nanny sets ``MALLOC_TRIM_THRESHOLD_``, which pins glibc's mmap threshold at 128 KiB,
so every array above it is a fresh ``mmap`` whose pages fault in again on every step. A
:class:`Workspace` hands out the same buffer for the same ``(name, shape, dtype)`` each time.

Only namespaces that write into ``out=`` buffers get buffers (NumPy, CuPy; see
:func:`pipeline.backend.supports_out`); for the others :meth:`Workspace.get` returns ``None`` and
the layers evaluate plain expressions. Either way the results are the same bits.

A buffer is overwritten by the next step that asks for it: whatever a step returns from a
workspace (outputs, the flat gradient) is valid until the next call with the same workspace.

Example
-------
>>> import numpy as np
>>> ws = Workspace()
>>> X = np.arange(12.0).reshape(6, 2)
>>> a = ws.take_rows("X", X, np.array([5, 0, 2]))
>>> b = ws.take_rows("X", X, np.array([1, 1, 1]))
>>> a is b, b[:, 0].tolist()
(True, [2.0, 2.0, 2.0])
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from ..backend import device, namespace, supports_out, take_rows

__all__ = ["Workspace", "flat_span"]

Array = Any


def flat_span(arrays: Any) -> np.ndarray | None:
    """One 1-D view over the NumPy ``arrays`` when they lie one after the other in one
    buffer, each contiguous and of one dtype (a layer's parameters, or its gradients, in a flat
    vector), in order; ``None`` otherwise. Reading the span reads them all; writing it writes
    them all."""
    first = arrays[0]
    if type(first) is not np.ndarray:
        return None
    start = first.__array_interface__["data"][0]
    end, size = start, 0
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != first.dtype or not a.flags.c_contiguous \
                or a.__array_interface__["data"][0] != end:
            return None
        end += a.nbytes
        size += a.size
    base = first.base if first.base is not None else first
    if base is first:
        return first.reshape(-1) if len(arrays) == 1 else None
    if type(base) is not np.ndarray or not base.flags.c_contiguous:
        return None
    offset = start - base.__array_interface__["data"][0]
    flat = base.reshape(-1)
    if offset % first.itemsize or flat.dtype != first.dtype:
        return None
    i = offset // first.itemsize
    return flat[i:i + size] if 0 <= i and i + size <= flat.size else None


class Workspace:
    """Named buffers, one per ``(name, shape, dtype)``, plus memoised child workspaces.

    Parameters
    ----------
    max_shapes : int
        How many shapes one name keeps (least recently used dropped first). Training sees two
        shapes per buffer (full batches and the last, shorter one); evaluation may add more.
    """

    def __init__(self, max_shapes: int = 4) -> None:
        if max_shapes < 1:
            raise ValueError(f"max_shapes must be >= 1, got {max_shapes!r}")
        self.max_shapes = int(max_shapes)
        self._buffers: dict[str, OrderedDict[tuple[Any, ...], Array]] = {}
        self._children: dict[Any, Workspace] = {}
        self._memos: dict[Any, tuple[Any, Any]] = {}
        # per name, the key and buffer of its last get(): already the most recent of its
        # shapes, so a repeat (every step) needs no LRU bookkeeping
        self._last: dict[str, tuple[tuple[Any, ...], Array]] = {}
        self._zeros: dict[tuple[Any, ...], Array] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Array, dtype: Any = None) -> Array:
        """An uninitialised buffer of ``shape`` and ``dtype`` (default ``like.dtype``) on
        ``like``'s namespace and device, the same one each time; ``None`` if that namespace
        cannot write into ``out=`` buffers."""
        if type(like) is not np.ndarray and not supports_out(like):
            return None
        dtype = like.dtype if dtype is None else dtype
        key = (shape if type(shape) is tuple else tuple(shape), dtype, type(like))
        last = self._last.get(name)
        if last is not None and last[0] == key:
            return last[1]
        by_shape = self._buffers.get(name)
        if by_shape is None:
            by_shape = self._buffers[name] = OrderedDict()
        buf = by_shape.get(key)
        if buf is None:
            xp = namespace(like)
            # Fresh NumPy allocations are aligned, as BLAS needs (see backend.aligned).
            buf = by_shape[key] = xp.empty(key[0], dtype=dtype, device=device(like))
            while len(by_shape) > self.max_shapes:
                by_shape.popitem(last=False)
        elif len(by_shape) > 1:
            by_shape.move_to_end(key)
        self._last[name] = (key, buf)
        return buf

    def zeros(self, shape: tuple[int, ...], like: Array) -> Array:
        """A buffer of zeros of ``shape`` and ``like.dtype`` (NumPy, CuPy; ``None`` for other
        namespaces), the same one each time: read it, never write into it."""
        key = (shape, like.dtype, type(like))
        buf = self._zeros.get(key)
        if buf is None:
            if type(like) is not np.ndarray and not supports_out(like):
                return None
            while len(self._zeros) >= self.max_shapes:
                self._zeros.pop(next(iter(self._zeros)))
            xp = namespace(like)
            buf = self._zeros[key] = xp.zeros(shape, dtype=like.dtype, device=device(like))
        return buf

    def memo(self, key: Any, sources: tuple[Any, ...], build: Any) -> Any:
        """``build(*sources)``, computed again only when ``sources`` are not the very objects
        of the previous call with ``key`` (views of a buffer, which a step would otherwise
        rebuild every time). One entry per key: it keeps ``sources`` alive until others come.
        """
        hit = self._memos.get(key)
        if hit is not None and len(hit[0]) == len(sources):
            for a, b in zip(hit[0], sources, strict=True):
                if a is not b:
                    break
            else:
                return hit[1]
        value = build(*sources)
        self._memos[key] = (sources, value)
        return value

    def span(self, name: str, arrays: Any) -> np.ndarray | None:
        """:func:`flat_span` of ``arrays``, remembered under ``name`` while they are the very
        objects of the previous call (a layer's parameter and gradient views carry over from
        step to step)."""
        if type(arrays[0]) is not np.ndarray:
            return None
        return self.memo(("span", name), tuple(arrays), lambda *a: flat_span(a))

    def child(self, key: Any) -> Workspace:
        """The workspace of a part (a layer of a chain, a branch): buffer names stay local."""
        ws = self._children.get(key)
        if ws is None:
            ws = self._children[key] = Workspace(self.max_shapes)
        return ws

    def take_rows(self, name: str, X: Array, idx: Array, in_range: bool = False) -> Array:
        """``xp.take(X, idx, axis=0)`` gathered into this workspace's buffer ``name``
        (``in_range``: see :func:`pipeline.backend.take_rows`)."""
        out = self.get(name, (idx.shape[0], *X.shape[1:]), X)
        return take_rows(X, idx, out=out, in_range=in_range)

    @property
    def nbytes(self) -> int:
        """Bytes held by this workspace and its children."""
        own = sum(b.nbytes for d in self._buffers.values() for b in d.values())
        own += sum(z.nbytes for z in self._zeros.values())
        return own + sum(c.nbytes for c in self._children.values())

    def clear(self) -> None:
        """Drop every buffer (they are allocated again on demand)."""
        self._buffers.clear()
        self._children.clear()
        self._memos.clear()
        self._last.clear()
        self._zeros.clear()
