"""The optimizer protocol: :class:`GradientTransformation`, :func:`chain`, :func:`apply_updates`,
and the helpers that move (nested) optimizer states between devices.

A gradient transformation is a pair of pure functions, as in optax: ``init(params) -> state`` and
``update(updates, state, params=None) -> (updates, state)``. The parameters are one array (the
flat parameter vector); a state is a NamedTuple of arrays on the parameters' device, or a tuple of
such states for a :func:`chain`. Nothing is mutated, so a step can be retried.

A transformation may also have ``update_into(updates, state, params, workspace)``: the same bits
as ``update``, written into the buffers of a :class:`pipeline.nn.Workspace` instead of fresh
arrays (a worker's training loop, where every fresh parameter-sized array is page-faulted in
again; see :mod:`pipeline.nn.workspace`). That one is not pure: what it returns (the updates and
the state's arrays) lives in the workspace until its next call, which may overwrite it. The
caller passes the state of the previous call back and keeps no other reference to it, and
copies the last state out (:func:`state_copy`) before anything else may use the workspace.
Arrays that are not the workspace's (the parameters, a state from elsewhere) are only read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import device, is_array_api_obj

from ..backend import namespace, to_host

__all__ = [
    "Array",
    "EmptyState",
    "GradientTransformation",
    "Schedule",
    "apply_updates",
    "chain",
    "scalar",
    "state_copy",
    "state_to_device",
    "state_to_host",
]

Array = Any
# A schedule maps the number of updates done so far (0 before the first) to a value, e.g. a rate.
Schedule = Callable[[int], float]


class GradientTransformation(NamedTuple):
    """``init(params) -> state``; ``update(updates, state, params=None) -> (updates, state)``;
    optionally ``update_into(updates, state, params, workspace) -> (updates, state)``, the same
    bits in workspace buffers (see the module docstring), ``None`` where there is none;
    optionally ``step_into``, a fused step (see the field's comment)."""

    init: Callable[[Array], Any]
    update: Callable[..., tuple[Array, Any]]
    update_into: Callable[..., tuple[Array, Any]] | None = None
    # optionally step_into(grads, scale, state, params, workspace) -> (params, state) | None:
    # a whole step on scale * grads, params updated in place, the same update up to rounding
    # (:func:`pipeline.optim.fused_adamw`); None where it cannot, and the caller updates
    step_into: Callable[..., tuple[Array, Any] | None] | None = None


class EmptyState(NamedTuple):
    """The state of a stateless transformation (clipping, masking, weight decay)."""


def scalar(value: float, like: Array) -> Array:
    """A 0-d float64 array holding ``value`` in ``like``'s namespace and on its device."""
    if type(like) is np.ndarray:  # once or twice per step: skip the namespace and device look-ups
        return np.asarray(float(value), dtype=np.float64)
    xp = namespace(like)
    return xp.asarray(float(value), dtype=xp.float64, device=device(like))


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """The transformations applied one after the other; the state is the tuple of their states.

    ``chain(clip_by_global_norm(1.0), sgd(0.1))`` clips the gradient, then takes an SGD step
    with it. Every transformation sees the same ``params``.
    """
    transforms = tuple(transforms)

    def init(params: Array) -> tuple[Any, ...]:
        return tuple(t.init(params) for t in transforms)

    def check(state: tuple[Any, ...]) -> None:
        if len(state) != len(transforms):
            raise ValueError(
                f"chain of {len(transforms)} transformations got a state of {len(state)} parts"
            )

    def update(updates: Array, state: tuple[Any, ...],
               params: Array = None) -> tuple[Array, tuple[Any, ...]]:
        check(state)
        new_state = []
        for t, s in zip(transforms, state, strict=True):
            updates, s = t.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    def update_into(updates: Array, state: tuple[Any, ...], params: Array,
                    workspace: Any) -> tuple[Array, tuple[Any, ...]]:
        check(state)
        new_state = []
        for i, (t, s) in enumerate(zip(transforms, state, strict=True)):
            updates, s = t.update_into(updates, s, params, workspace.child(i))
            new_state.append(s)
        return updates, tuple(new_state)

    # Only when every part has one: a part's plain update may keep its input in its state,
    # and the input would be the previous part's buffer.
    into = update_into if all(t.update_into is not None for t in transforms) else None
    return GradientTransformation(init, update, into)


def apply_updates(params: Array, updates: Array) -> Array:
    """``params + updates`` as a new array (the inputs are not modified)."""
    return params + updates


def _map_state(state: Any, fn: Callable[[Any], Any]) -> Any:
    """``state`` with ``fn`` applied to every leaf, keeping NamedTuples and tuples as they are."""
    if isinstance(state, tuple):
        items = [_map_state(s, fn) for s in state]
        return type(state)(*items) if hasattr(state, "_fields") else tuple(items)
    if isinstance(state, list):
        return [_map_state(s, fn) for s in state]
    if state is None:
        return None
    return fn(state)


def state_copy(state: Any) -> Any:
    """``state`` with every array leaf copied (same namespace, device and dtype): a state that
    :meth:`GradientTransformation.update_into` left in workspace buffers, made the caller's."""
    return _map_state(state, lambda a: namespace(a).asarray(a, copy=True)
                      if is_array_api_obj(a) else a)


def state_to_host(state: Any) -> Any:
    """``state`` (a NamedTuple, or nested tuples of them) with every array copied to NumPy.

    This is what ships back from a worker and what a checkpoint writes. Python floats stay
    floats.
    """
    return _map_state(state, lambda a: to_host(a) if is_array_api_obj(a) else a)


def state_to_device(state: Any, like: Array) -> Any:
    """``state`` with every leaf (array or Python number) as an array of ``like``'s namespace on
    ``like``'s device, dtypes kept: the inverse of :func:`state_to_host`."""
    xp = namespace(like)
    dev = device(like)
    return _map_state(state, lambda a: xp.asarray(a, device=dev))
