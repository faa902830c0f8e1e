"""The ``update_into`` kernels of the building blocks (see :mod:`pipeline.optim.base`): each
evaluates the expressions of its transformation's ``update`` ufunc by ufunc, in the same order
with the same operands (Python floats stay weak scalars), into buffers of a workspace instead of
fresh temporaries, so the results are the same bits.

Each returns ``None`` when it cannot: the workspace hands out no buffers for the updates'
namespace (array_api_strict and others without ``out=``), or an operand differs from the updates
in array type, dtype or shape (the plain expression would promote or broadcast). The caller then
evaluates the plain ``update``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import elementwise, namespace
from .base import Array


def buffers(workspace: Any, like: Array, names: tuple[str, ...],
            *operands: Array) -> list[Array] | None:
    """The workspace's buffers ``names``, shaped and typed as ``like``; ``None`` if it has none
    for ``like``'s namespace or an operand differs from ``like`` in type, dtype or shape."""
    for a in operands:
        if type(a) is not type(like) or a.dtype != like.dtype or a.shape != like.shape:
            return None
    shape = tuple(like.shape)
    out = [workspace.get(name, shape, like) for name in names]
    return None if out[0] is None else out


def global_norm_clip(updates: Array, max_norm: float, workspace: Any) -> Array | None:
    """``updates`` when ``‖updates‖ < max_norm``, else ``updates / ‖updates‖ * max_norm`` in a
    buffer (:func:`~pipeline.optim.clip_by_global_norm`)."""
    bufs = buffers(workspace, updates, ("clipped",))
    if bufs is None:
        return None
    (out,) = bufs
    xp = namespace(updates)
    elementwise("multiply", updates, updates, out=out)
    norm = float(xp.sqrt(xp.sum(out)))
    if norm < max_norm:
        return updates
    elementwise("divide", updates, norm, out=out)
    return elementwise("multiply", out, max_norm, out=out)


def moments_into(g: Array, mu0: Array, nu0: Array, beta_1: float, beta_2: float, mu: Array,
                 nu: Array, scratch: Array) -> None:
    """Adam's moments into ``mu`` and ``nu`` (``scratch``: a third buffer), ufunc by ufunc as
    ``beta_1 * mu0 + (1 - beta_1) * g`` and ``beta_2 * nu0 + (1 - beta_2) * (g * g)``
    evaluate. ``mu0``/``nu0`` may be ``mu``/``nu`` themselves (element by element)."""
    elementwise("multiply", beta_1, mu0, out=mu)
    elementwise("multiply", 1 - beta_1, g, out=scratch)
    elementwise("add", mu, scratch, out=mu)
    elementwise("multiply", beta_2, nu0, out=nu)
    elementwise("multiply", g, g, out=scratch)
    elementwise("multiply", 1 - beta_2, scratch, out=scratch)
    elementwise("add", nu, scratch, out=nu)


def adam_direction(updates: Array, mu0: Array, nu0: Array, t: int, beta_1: float,
                   beta_2: float, epsilon: float,
                   workspace: Any) -> tuple[Array, Array, Array] | None:
    """``(direction, mu, nu)`` of :func:`~pipeline.optim.scale_by_adam`'s step ``t``; ``mu0``
    and ``nu0`` may be the workspace's own ``mu``/``nu`` from the previous step (updated in
    place: element by element, so the same values)."""
    bufs = buffers(workspace, updates, ("mu", "nu", "direction", "scratch"), mu0, nu0)
    if bufs is None:
        return None
    mu, nu, d, s = bufs
    if updates is mu or updates is nu or updates is d or updates is s:
        return None
    moments_into(updates, mu0, nu0, beta_1, beta_2, mu, nu, s)
    # (mu / correction_1) / (sqrt(nu) / correction_2 + epsilon)
    correction_1 = 1 - beta_1**t
    correction_2 = math.sqrt(1 - beta_2**t)
    elementwise("divide", mu, correction_1, out=d)
    elementwise("sqrt", nu, out=s)
    elementwise("divide", s, correction_2, out=s)
    elementwise("add", s, epsilon, out=s)
    return elementwise("divide", d, s, out=d), mu, nu


def decayed(updates: Array, params: Array, weight_decay: float, mask: Array | None,
            workspace: Any,
            runs: tuple[tuple[int, int, bool], ...] | None = None) -> Array | None:
    """``updates + weight_decay * params``, only where ``mask`` is True if given
    (:func:`~pipeline.optim.add_decayed_weights`); ``runs``: the mask as ``(start, stop,
    value)`` runs of a 1-D mask, if known."""
    bufs = buffers(workspace, updates, ("decayed", "kept"), params)
    if bufs is None or (mask is not None and type(updates) is not np.ndarray):
        return None  # xp.where has no out=: only NumPy's copyto selects into a buffer here
    dec, kept = bufs
    if mask is not None and runs is not None and updates.ndim == 1:
        # xp.where(mask, updates + weight_decay * params, updates) run by run: the same
        # products and sums where the mask is True, copies elsewhere (2 passes, not 4 with a
        # masked copy)
        for a, b, decays in runs:
            if decays:
                elementwise("multiply", weight_decay, params[a:b], out=kept[a:b])
                elementwise("add", updates[a:b], kept[a:b], out=kept[a:b])
            else:
                np.copyto(kept[a:b], updates[a:b])
        return kept
    elementwise("multiply", weight_decay, params, out=dec)
    elementwise("add", updates, dec, out=dec)
    if mask is None:
        return dec
    # xp.where(mask, decayed, updates): a selection, no arithmetic, so copies give its bits
    np.copyto(kept, updates)
    np.copyto(kept, dec, where=mask)
    return kept


def scaled(updates: Array, factor: float, workspace: Any) -> Array | None:
    """``factor * updates`` in a buffer."""
    bufs = buffers(workspace, updates, ("scaled",))
    if bufs is None:
        return None
    return elementwise("multiply", factor, updates, out=bufs[0])
