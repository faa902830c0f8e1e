"""Window geometry shared by convolution and pooling (:mod:`pipeline.nn.conv`), NHWC.

An :class:`Axis` holds one spatial axis' output length and padding (Keras' rules: ``"valid"``
no padding, ``"same"`` ``ceil(size / stride)`` outputs, ``total // 2`` before and the rest
after). :func:`window_stack` is im2col: the ``kh * kw`` shifted views of the padded input
stacked into one contiguous array; :func:`unwindow` is its transpose (col2im, then the
padding's). Buffers come from the layer's :class:`~pipeline.nn.layers.Context` workspace when
there is one. Namespace-clean: the input's namespace and device do the work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import device
from .layers import Context

__all__ = ["PADDINGS", "Axis", "check_input", "check_padding", "pad_input", "pair", "unwindow",
           "window_stack", "window_views"]

Array = Any
PADDINGS = ("same", "valid")


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """``value`` as a ``(rows, cols)`` pair of positive ints (an int stands for both)."""
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, int | np.integer) or v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_padding(padding: str) -> None:
    """Raise unless ``padding`` is one of :data:`PADDINGS`."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


class Axis:
    """One spatial axis: output length and padding before/after, Keras' rules."""

    def __init__(self, size: int, k: int, s: int, padding: str, what: str):
        if padding == "valid":
            if size < k:
                raise ValueError(f"{what}: window {k} is larger than the input ({size}) with "
                                 "padding='valid'; use padding='same' or a smaller window")
            self.out, self.before, self.after = (size - k) // s + 1, 0, 0
        else:
            self.out = -(-size // s)
            total = max((self.out - 1) * s + k - size, 0)
            self.before, self.after = total // 2, total - total // 2
        self.size, self.k, self.s = size, k, s

    @property
    def padded(self) -> int:
        return self.size + self.before + self.after

    def window(self, offset: int) -> slice:
        """The padded-input positions that window element ``offset`` reads, one per output."""
        return slice(offset, offset + self.s * (self.out - 1) + 1, self.s)


def check_input(in_shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    """``(height, width, channels)`` of a per-sample input shape; raises naming ``what``."""
    if len(in_shape) != 3 or any(int(d) < 1 for d in in_shape):
        raise ValueError(f"{what} expects inputs of shape (height, width, channels) per sample, "
                         f"got {tuple(in_shape)}")
    return int(in_shape[0]), int(in_shape[1]), int(in_shape[2])


def pad_input(xp: Any, x: Array, rows: Axis, cols: Axis, fill: float, ctx: Context) -> Array:
    """``x`` padded with ``fill`` (into the workspace buffer ``"xpad"`` when there is one)."""
    if rows.before == rows.after == cols.before == cols.after == 0:
        return x
    n, h, w, c = x.shape
    out = ctx.buffer("xpad", (n, rows.padded, cols.padded, c), x)
    if out is None:
        out = xp.full((n, rows.padded, cols.padded, c), fill, dtype=x.dtype, device=device(x))
    else:  # a reused buffer: only the border needs the fill, the inside is overwritten
        out[:, : rows.before, :, :] = fill
        out[:, rows.before + h :, :, :] = fill
        out[:, :, : cols.before, :] = fill
        out[:, :, cols.before + w :, :] = fill
    out[:, rows.before : rows.before + h, cols.before : cols.before + w, :] = x
    return out


def window_stack(xp: Any, xpad: Array, rows: Axis, cols: Axis, ctx: Context) -> Array:
    """``(N, OH, OW, kh*kw, C)``: element ``[n, i, j, a*kw + b, c]`` is
    ``xpad[n, i*sh + a, j*sw + b, c]``. One contiguous copy of the (strided) views (into the
    workspace buffer ``"patches"`` when there is one)."""
    n, c = xpad.shape[0], xpad.shape[-1]
    out = ctx.buffer("patches", (n, rows.out, cols.out, rows.k * cols.k, c), xpad)
    if out is None:
        return xp.stack(window_views(xpad, rows, cols), axis=3)
    for index, view in enumerate(window_views(xpad, rows, cols)):
        out[:, :, :, index, :] = view
    return out


def window_views(xpad: Array, rows: Axis, cols: Axis) -> list[Array]:
    """The ``kh*kw`` strided views ``(N, OH, OW, C)`` of :func:`window_stack`, without the copy."""
    return [
        xpad[:, rows.window(a), cols.window(b), :] for a in range(rows.k) for b in range(cols.k)
    ]


def unwindow(xp: Any, pieces: Any, rows: Axis, cols: Axis, channels: int, like: Array,
              ctx: Context) -> Array:
    """Transpose of :func:`window_stack` then of the padding: ``pieces`` yields, for every window
    element ``a*kw + b`` in order, the ``(N, OH, OW, C)`` gradient of what it read; each is added
    back onto the input positions it came from. Returns ``(N, H, W, C)`` in ``like``'s dtype and
    device, ``N`` being ``like``'s first axis."""
    if rows.s == rows.k and cols.s == cols.k and rows.out * rows.k == rows.padded and (
        cols.out * cols.k == cols.padded
    ):
        # The windows tile the padded input exactly: every position is read once, so writing
        # the pieces into an uninitialised (N, OH, kh, OW, kw, C) array *is* the padded
        # gradient, with no zero fill and no read-modify-write (a 2x2 pool's gradient about 3x
        # faster on NumPy than strided adds).
        n, c = like.shape[0], channels
        shape = (n, rows.out, rows.k, cols.out, cols.k, c)
        tiles = ctx.buffer("dxtiles", shape, like)
        if tiles is None:
            tiles = xp.empty(shape, dtype=like.dtype, device=device(like))
        for index, piece in enumerate(pieces):
            a, b = divmod(index, cols.k)
            tiles[:, :, a, :, b, :] = piece
        dxpad = xp.reshape(tiles, (n, rows.padded, cols.padded, c))
    else:
        n, c = like.shape[0], channels
        shape = (n, rows.padded, cols.padded, c)
        dxpad = ctx.buffer("dxpad", shape, like)
        if dxpad is None:
            dxpad = xp.zeros(shape, dtype=like.dtype, device=device(like))
        else:
            dxpad[...] = 0
        for index, piece in enumerate(pieces):
            a, b = divmod(index, cols.k)
            where = (slice(None), rows.window(a), cols.window(b), slice(None))
            dxpad[where] = dxpad[where] + piece
    return dxpad[:, rows.before : rows.before + rows.size, cols.before : cols.before + cols.size, :]
