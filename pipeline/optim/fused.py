"""AdamW with gradient clipping as one fused NumPy step, as ``torch.optim.AdamW(fused=True)``
is to its per-tensor loop: the same update up to rounding, in fewer passes over memory.

The chain ``clip_by_global_norm -> scale_by_adam -> add_decayed_weights ->
scale_by_learning_rate`` (then ``params + updates``) evaluates its expressions ufunc by ufunc:
~21 passes over the parameters and ~9 parameter-sized arrays per step, which do not fit a
core's L2 cache next to a network's activations. :func:`fused_adamw` is that chain (the same
``init`` and ``update``, the same state, so checkpoints, learning-rate changes and every other
caller see no difference) plus ``step_into``, which folds every scalar into the ufuncs' factors
and writes the new parameters in place in 13 passes over 5 arrays:

    s      = scale * (1 if ‖scale g‖ < max_norm else max_norm / ‖scale g‖)  (one dot product)
    mu     = b1 mu + ((1 - b1) s) g
    nu     = b2 nu + ((1 - b2) s²) g²
    params = (1 - lr wd) params            (where the mask decays)
    params += (-lr c2 / c1) mu / (sqrt(nu) + eps c2)

with ``c1 = 1 - b1^t`` and ``c2 = sqrt(1 - b2^t)``: ``(mu / c1) / (sqrt(nu) / c2 + eps)``
rearranged. Only the rounding differs from the chain's (float32: a relative 1e-6 a step);
tests check the two against each other and against PyTorch's AdamW.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Array, GradientTransformation, chain, scalar
from .learning_rate import Rate
from .optimizers import adamw
from .transforms import _Mask, clip_by_global_norm

__all__ = ["fused_adamw"]


def fused_adamw(
    learning_rate: Any = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    weight_decay: float = 1e-2,
    mask: Array | None = None,
    clip_norm: float | None = None,
) -> GradientTransformation:
    """``chain(clip_by_global_norm(clip_norm), adamw(...))`` (or ``adamw(...)`` alone without
    ``clip_norm``) with a fused ``step_into(grads, scale, state, params, workspace) ->
    (params, state)``: one step on the gradient ``scale * grads`` that updates ``params`` (the
    caller's working copy) in place, or ``None`` where it cannot (arrays other than NumPy
    floats of one dtype, a workspace without buffers, a mask of many runs): the caller then
    runs ``update``/``update_into``."""
    inner = adamw(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                  weight_decay=weight_decay, mask=mask)
    plain = inner if clip_norm is None else chain(clip_by_global_norm(clip_norm), inner)
    rate = Rate(learning_rate)
    keep = None if mask is None else _Mask(mask, "fused_adamw")
    max_norm = None if clip_norm is None else float(clip_norm)
    weight_decay = float(weight_decay)

    def step_into(grads: Array, scale: float, state: Any, params: Array,
                  workspace: Any) -> tuple[Array, Any] | None:
        if type(grads) is not np.ndarray or type(params) is not np.ndarray \
                or grads.dtype != params.dtype or grads.dtype.kind != "f" \
                or grads.shape != params.shape or grads.ndim != 1 \
                or not params.flags.c_contiguous or not params.flags.writeable:
            return None
        clip_state, (adam, decay_state, lr_state) = ((None, state) if max_norm is None
                                                      else state)
        mu0, nu0 = adam.mu, adam.nu
        for a in (mu0, nu0):
            if type(a) is not np.ndarray or a.dtype != grads.dtype or a.shape != grads.shape:
                return None
        runs = None
        if keep is not None and weight_decay:
            runs = keep.runs
            if runs is None:
                return None
        shape = tuple(grads.shape)
        mu, nu, tmp = (workspace.get(name, shape, grads) for name in ("mu", "nu", "tmp"))
        if tmp is None or tmp is grads or tmp is params:
            return None

        s = float(scale)
        if max_norm is not None:
            # optax's rule on the scaled gradient: its norm in the gradient's dtype
            norm = abs(s) * math.sqrt(float(np.dot(grads, grads)))
            if not norm < max_norm:  # (NaN too: the step's parameters become NaN, as chained)
                s = s / norm * max_norm
        t = int(float(adam.count)) + 1
        lr, count, nxt = rate.step(lr_state, params)
        np.multiply(mu0, beta_1, out=mu)
        np.multiply(grads, (1 - beta_1) * s, out=tmp)
        np.add(mu, tmp, out=mu)
        np.multiply(grads, grads, out=tmp)
        np.multiply(tmp, (1 - beta_2) * s * s, out=tmp)
        np.multiply(nu0, beta_2, out=nu)
        np.add(nu, tmp, out=nu)
        correction_1 = 1 - beta_1**t
        correction_2 = math.sqrt(1 - beta_2**t)
        np.sqrt(nu, out=tmp)
        np.add(tmp, epsilon * correction_2, out=tmp)
        np.divide(mu, tmp, out=tmp)
        if weight_decay:
            factor = 1 - lr * weight_decay
            for a, b, decays in (((0, shape[0], True),) if runs is None else runs):
                if decays:
                    np.multiply(params[a:b], factor, out=params[a:b])
        np.multiply(tmp, -lr * correction_2 / correction_1, out=tmp)
        np.add(params, tmp, out=params)
        adam = type(adam)(scalar(t, params), mu, nu)
        lr_state = type(lr_state)(count, nxt, lr_state.learning_rate_scale)
        inner_state = (adam, decay_state, lr_state)
        return params, (inner_state if max_norm is None else (clip_state, inner_state))

    return GradientTransformation(plain.init, plain.update, plain.update_into, step_into)
