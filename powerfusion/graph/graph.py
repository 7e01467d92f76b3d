"""The tensor graph: what tracing produces and partitioning consumes.

Invariants (checked by `check`), which every producer of a graph keeps:
- element-wise srcs have exactly the node's shape, except CONST srcs, which are
  scalars of shape () and broadcast implicitly;
- broadcasting is explicit: RESHAPE to insert size-1 dims, then EXPAND;
- binary and ternary srcs (but WHERE's condition) share one dtype, the node's
  compute dtype, made so by explicit CAST nodes; comparisons give bool;
- reductions keep their reduced dims (size 1); keepdims=False is a RESHAPE after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..dtypes import DType
from .ops import Group, Op


@dataclass(frozen=True, eq=False, slots=True)
class Node:
    """One value of the traced program. Identity-compared: a DAG, shared sub-trees."""

    op: Op
    srcs: tuple["Node", ...]
    shape: tuple[int, ...]
    dtype: DType
    arg: Any = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"Node({self.op.name}, shape={self.shape}, dtype={self.dtype}, arg={self.arg!r})"


@dataclass(frozen=True, slots=True)
class Graph:
    """A traced function: its tensor inputs (INPUT nodes, in order) and its outputs."""

    inputs: tuple[Node, ...]
    outputs: tuple[Node, ...]
    meta: dict = field(default_factory=dict, compare=False)

    def toposort(self) -> list[Node]:
        """Every node reachable from the outputs, each after its srcs."""
        order: list[Node] = []
        seen: set[int] = set()
        stack = [(n, False) for n in reversed(self.outputs)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in seen:
                continue
            if expanded:
                seen.add(id(node))
                order.append(node)
                continue
            stack.append((node, True))
            stack.extend((s, False) for s in reversed(node.srcs) if id(s) not in seen)
        return order


def check(graph: Graph) -> None:
    """Assert the invariants above; a broken graph is a bug in its producer."""
    for n in graph.toposort():
        if n.op in Group.ELEMENTWISE:
            for s in n.srcs:
                assert s.shape == n.shape or (s.op is Op.CONST and s.shape == ()), (n, s)
        if n.op in Group.REDUCE:
            (src,) = n.srcs
            assert all(n.shape[a] == 1 for a in n.arg), n
            assert len(n.shape) == len(src.shape), n
        if n.op is Op.RESHAPE:
            assert n.size == n.srcs[0].size, n
