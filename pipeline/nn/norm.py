"""Group normalisation (layer and instance norm as its special cases), channels last.

Why not batch norm: batch norm normalises with statistics over the mini-batch, and under data
parallelism each block only sees its share of the batch. Either the statistics are combined across
blocks every step (a second all-reduce round trip per layer, inside the forward pass) or each block
uses its own, and then the model depends on how rows were split over workers, so a 1-worker and
a 2-worker run stop being bit-identical. Group norm computes its statistics per sample, over the
sample's own positions and a group of channels: the same numbers wherever the sample is, no
communication, the same behaviour in training and inference, and no running averages to ship.

A :class:`pipeline.nn.Layer`; namespace-clean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..backend import namespace
from .layers import Layer

__all__ = ["GroupNorm"]


@dataclass(frozen=True)
class GroupNorm(Layer):
    """``y = (x - mean) / sqrt(var + eps) * gamma + beta``, statistics per sample and group.

    Input ``(N, ..., C)`` (any number of spatial axes, channels last). The ``C`` channels are cut
    into ``groups`` consecutive groups of ``C / groups``; each sample's mean and (biased)
    variance are taken over all its positions and the channels of one group. ``groups=1`` is
    layer norm, ``groups=C`` instance norm. Parameters: ``gamma`` (ones) and ``beta`` (zeros),
    one per channel. Same definition as ``torch.nn.GroupNorm`` (which is channels first).
    """

    groups: int = 32
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if not isinstance(self.groups, int | np.integer) or self.groups < 1:
            raise ValueError(f"groups must be a positive int, got {self.groups!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}")

    def _check(self, in_shape: tuple[int, ...]) -> int:
        if len(in_shape) < 1:
            raise ValueError("GroupNorm expects at least a channel axis per sample")
        c = int(in_shape[-1])
        if c % int(self.groups):
            raise ValueError(f"GroupNorm: {c} channels do not split into {self.groups} groups")
        return c

    def build(self, in_shape):
        c = self._check(in_shape)
        return [(c,), (c,)], tuple(in_shape)

    def init(self, rng, in_shape):
        c = self._check(in_shape)
        return [np.ones(c, dtype=np.float64), np.zeros(c, dtype=np.float64)]

    def _grouped(self, xp, x):
        n, c, g = x.shape[0], x.shape[-1], int(self.groups)
        return xp.reshape(x, (n, math.prod(x.shape[1:-1]), g, c // g))

    def forward(self, params, x, ctx):
        xp = namespace(x)
        gamma, beta = params
        xg = self._grouped(xp, x)
        mean = xp.mean(xg, axis=(1, 3), keepdims=True)
        centred = xg - mean
        inv = 1.0 / xp.sqrt(xp.mean(centred * centred, axis=(1, 3), keepdims=True) + self.eps)
        xhat = xp.reshape(centred * inv, tuple(x.shape))
        return xhat * gamma + beta, (xhat, inv)

    def backward(self, params, cache, dy, ctx, grads):
        xp = namespace(dy)
        gamma, _ = params
        xhat, inv = cache
        c = dy.shape[-1]
        grads[0][...] = xp.sum(xp.reshape(dy * xhat, (-1, c)), axis=0)
        grads[1][...] = xp.sum(xp.reshape(dy, (-1, c)), axis=0)
        if not ctx.need_input_grad:
            return None
        # d/dx of normalisation: inv · (g - mean(g) - xhat · mean(g · xhat)), g = dy · gamma,
        # means over each sample's group.
        g = self._grouped(xp, dy * gamma)
        xh = self._grouped(xp, xhat)
        dx = inv * (g - xp.mean(g, axis=(1, 3), keepdims=True)
                    - xh * xp.mean(g * xh, axis=(1, 3), keepdims=True))
        return xp.reshape(dx, tuple(dy.shape))
