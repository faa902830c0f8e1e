"""Deterministic tree reductions: the only collective the pipeline uses.

Partials are combined in fixed groups of ``split_every`` consecutive *positions* (partition
indices), level by level, never in completion order. With the same leaves the result is bitwise
reproducible whatever the number of workers, and if a worker dies Dask recomputes the lost
branches from lineage instead of hanging a collective.

Example
-------
>>> import dask
>>> from pipeline.reduce import tree_reduce
>>> parts = [dask.delayed(float)(i) for i in range(10)]
>>> tree_reduce(parts, sum, split_every=4).compute()
45.0
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

__all__ = ["tree_fold", "tree_fold_nodes", "tree_fold_owned", "tree_graph", "tree_levels",
           "tree_reduce"]

Key = Hashable


def tree_levels(n_leaves: int, split_every: int) -> list[list[range]]:
    """The groups of each level: ``levels[d][i]`` is the range of level-``d`` positions combined
    into node ``i`` of level ``d + 1``. Always at least one level, so a single leaf is still
    passed through ``combine`` once."""
    if n_leaves < 1:
        raise ValueError("a tree reduction needs at least one leaf")
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    levels = []
    width = n_leaves
    while True:
        groups = [range(i, min(i + split_every, width)) for i in range(0, width, split_every)]
        levels.append(groups)
        width = len(groups)
        if width == 1:
            return levels


def tree_fold(
    items: Sequence[Any], combine: Callable[[list[Any]], Any], *, split_every: int = 8
) -> Any:
    """Reduce ``items`` in memory with exactly the pairing :func:`tree_graph` uses, so a fold
    inside one task gives bit for bit the result of the distributed tree."""
    current = list(items)
    for groups in tree_levels(len(current), split_every):
        current = [combine([current[j] for j in group]) for group in groups]
    return current[0]


Node = tuple[int, int, Any]  # (level, index, value): a subtree of the fixed tree, folded


def tree_fold_owned(
    items: Sequence[tuple[int, Any]], n_leaves: int, combine: Callable[[list[Any]], Any], *,
    split_every: int = 8
) -> list[Node]:
    """Fold every subtree of the ``n_leaves``-leaf tree whose leaves are all in ``items``
    (``(position, value)`` pairs): the largest such subtrees, as ``(level, index, value)``.

    What one owner of some leaves can fold alone; :func:`tree_fold_nodes` finishes the fold from
    every owner's nodes with exactly the pairing of :func:`tree_fold`, so the result has the same
    bits. Leaves in no complete subtree come back as level-0 nodes, unchanged."""
    levels = tree_levels(n_leaves, split_every)
    current = dict(items)
    out: list[Node] = []
    for depth, groups in enumerate(levels):
        nxt = {}
        for i, group in enumerate(groups):
            if all(j in current for j in group):
                nxt[i] = combine([current[j] for j in group])
            else:
                out.extend((depth, j, current[j]) for j in group if j in current)
        current = nxt
    out.extend((len(levels), j, v) for j, v in current.items())
    return out


def tree_fold_nodes(
    nodes: Sequence[Node], n_leaves: int, combine: Callable[[list[Any]], Any], *,
    split_every: int = 8
) -> Any:
    """The root of the ``n_leaves``-leaf tree from disjoint folded subtrees that cover every leaf
    (the nodes of all owners, :func:`tree_fold_owned`); equal, bit for bit, to
    :func:`tree_fold` over the leaves. Raises ValueError naming a position nothing covers."""
    levels = tree_levels(n_leaves, split_every)
    given: dict[int, dict[int, Any]] = {}
    for depth, index, value in nodes:
        given.setdefault(depth, {})[index] = value
    current = given.get(0, {})
    for depth, groups in enumerate(levels):
        nxt = dict(given.get(depth + 1, {}))
        for i, group in enumerate(groups):
            have = sum(j in current for j in group)
            if have == len(group) and i not in nxt:
                nxt[i] = combine([current[j] for j in group])
            elif have:  # a subtree both given and folded here, or one with leaves missing
                raise ValueError(f"tree fold: level-{depth + 1} node {i} of a {n_leaves}-leaf "
                                 "tree is covered twice or only in part")
        current = nxt
    if 0 not in current:
        raise ValueError(f"tree fold: the nodes do not cover the {n_leaves}-leaf tree")
    return current[0]


def tree_graph(
    leaves: Sequence[Key],
    combine: Callable[[list[Any]], Any],
    *,
    split_every: int = 8,
    name: str = "combine",
) -> tuple[dict[Key, Any], Key]:
    """A low-level Dask graph that reduces ``leaves`` (existing keys) with ``combine``.

    ``combine`` receives a list of partials (in position order) and returns one partial. Node
    keys are ``(name, level, index)``; the root key is returned with the graph.
    """
    dsk: dict[Key, Any] = {}
    current: list[Key] = list(leaves)
    for depth, groups in enumerate(tree_levels(len(current), split_every), start=1):
        nxt = []
        for i, group in enumerate(groups):
            key = (name, depth, i)
            dsk[key] = (combine, [current[j] for j in group])
            nxt.append(key)
        current = nxt
    return dsk, current[0]


def tree_reduce(
    items: Sequence[Any],
    combine: Callable[[list[Any]], Any],
    *,
    split_every: int = 8,
    name: str | None = None,
) -> Any:
    """Reduce a list of ``dask.delayed`` objects with a fixed-shape tree; returns a Delayed."""
    from dask.base import tokenize
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    items = list(items)
    prefix = name or getattr(combine, "__name__", "combine")
    token = tokenize([it.key for it in items], combine, split_every)
    layer_name = f"{prefix}-{token}"
    dsk, root = tree_graph(
        [it.key for it in items], combine, split_every=split_every, name=layer_name
    )
    graph = HighLevelGraph.from_collections(layer_name, dsk, dependencies=items)
    return Delayed(root, graph, layer=layer_name)
