"""Views as index maps: the element of a view at an index is the source's element at
the mapped index. Composing maps, not copying data, is how views cost nothing."""

from __future__ import annotations

from ..gir.expr import Expr, flatten, unflatten
from .graph import Node
from .ops import Group, Op

Index = tuple[Expr, ...]


def source_index(view: Node, index: Index) -> Index:
    """The index into view.srcs[0] that view's element at `index` reads."""
    (src,) = view.srcs
    if view.op is Op.RESHAPE:
        return unflatten(flatten(index, view.shape), src.shape)
    if view.op is Op.PERMUTE:
        out: list[Expr] = [Expr(0)] * len(src.shape)
        for k, axis in enumerate(view.arg):
            out[axis] = index[k]
        return tuple(out)
    if view.op is Op.EXPAND:
        return tuple(Expr(0) if n == 1 and m != 1 else e
                     for e, n, m in zip(index, src.shape, view.shape))
    if view.op is Op.SLICE:
        return tuple(e * step + start for e, (start, _stop, step) in zip(index, view.arg))
    if view.op is Op.SHIFT:
        axis, offset = view.arg
        return tuple((e - offset).clamp(0, src.shape[axis] - 1) if k == axis else e
                     for k, e in enumerate(index))
    raise AssertionError(f"not a view: {view}")


def through_views(node: Node, index: Index) -> tuple[Node, Index]:
    """Follow a chain of views down to the first non-view node and its index there."""
    while node.op in Group.MOVEMENT:
        index = source_index(node, index)
        node = node.srcs[0]
    return node, index


def strided_offset(index: Index, strides: tuple[int, ...]) -> Expr:
    """Flat element offset of a multi-index under element strides."""
    off = Expr(0)
    for e, s in zip(index, strides):
        off = off + e * s
    return off


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))
