"""Canonical form: views pushed down to the leaves, concatenation as selects.

After `canonicalize`, movement ops stand only directly over leaves (INPUT, IOTA),
over reductions, or over element-wise values of leaves that a broadcast would
recompute many times over at a transcendental's cost (`_worth_storing`: the
partitioner stores those), and no reduction reads an empty tensor. A view over a leaf is folded into the leaf's load index; a view over
a reduction is either a broadcast of a per-row value (kept in the kernel) or a change
of iteration space (the partitioner then materialises the reduction). Element-wise
work under a view is recomputed under it: memory-bound kernels prefer recomputation
to a round trip through memory.
"""

from __future__ import annotations

import math

from ..dtypes import DType
from .graph import Node
from .ops import Group, Op, reduce_identity


def canonicalize(roots: list[Node], store_broadcasts: bool = True) -> list[Node]:
    """The canonical nodes for roots, sharing what they share. store_broadcasts=False:
    element-wise work under a view is recomputed under it everywhere (the search's
    alternative to `_worth_storing`'s stores: the candidate "recomputed under
    broadcasts")."""
    # keyed by id(): each entry holds its key nodes too, so no id is reused while the
    # table lives (concatenation builds temporary nodes)
    memo: dict[int, tuple[Node, Node]] = {}
    pushed: dict[tuple[int, int], tuple[Node, Node, Node]] = {}

    def canon(n: Node) -> Node:
        hit = memo.get(id(n))
        if hit is not None:
            return hit[1]
        if n.op in Group.LEAF:
            out = n
        elif n.op in Group.MOVEMENT:
            out = push(n, canon(n.srcs[0]))
        elif n.op is Op.CONCAT:
            out = canon(_concat_as_selects(n))
        elif n.op in Group.REDUCE and not n.arg:
            out = canon(n.srcs[0])          # a reduction over no axes is the identity
        elif n.op in Group.REDUCE and n.srcs[0].size == 0:
            # over no elements: the reduction's identity (a sum's 0), so no kernel ever
            # reads an empty tensor (nodes that are empty themselves are never computed)
            out = Node(Op.CONST, (), (), n.dtype, reduce_identity(n.op, n.dtype))
        else:
            srcs = tuple(canon(s) for s in n.srcs)
            out = n if srcs == n.srcs else Node(n.op, srcs, n.shape, n.dtype, n.arg)
            if n.op in Group.REDUCE and srcs[0].op is Op.CONST:   # of a splat: a splat
                out = _reduce_constant(n, srcs[0])
        memo[id(n)] = (n, out)
        return out

    def push(view: Node, src: Node) -> Node:
        """view(src) with the view moved below element-wise ops."""
        key = (id(view), id(src))
        hit = pushed.get(key)
        if hit is not None:
            return hit[2]
        if src.op in Group.ELEMENTWISE and not (store_broadcasts
                                                and _worth_storing(view, src)):
            srcs = tuple(s if s.op is Op.CONST else push(view, s) for s in src.srcs)
            out = Node(src.op, srcs, view.shape, src.dtype, src.arg)
        elif src.op is Op.CONST:
            out = src
        else:
            out = Node(view.op, (src,), view.shape, src.dtype, view.arg)
        pushed[key] = (view, src, out)
        return out

    return [canon(r) for r in roots]


# Recomputing under a broadcast repeats the work once per copy read. Cheap work is
# worth repeating (a round trip costs more); transcendental work that a broadcast
# repeats this many times over, at least this many extra evaluations in all, is not:
# the value is computed once, stored and read through the view (LLaMA's rotary cos
# and sin of [seq, dim], recomputed for every head: 12x the sin and cos, in double).
BROADCAST_FACTOR = 4
BROADCAST_EXTRA = 8192


def stores_broadcasts(canonical: list[Node]) -> bool:
    """Does this canonical form store a value for a broadcast to read (a view over an
    element-wise node, which only `_worth_storing` leaves)?"""
    stack, seen = list(canonical), set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op in Group.MOVEMENT and n.srcs and n.srcs[0].op in Group.ELEMENTWISE:
            return True
        stack.extend(n.srcs)
    return False


def _worth_storing(view: Node, src: Node) -> bool:
    """Is src (element-wise) better computed once and read through the broadcasting
    view than recomputed under it? Values computed from leaves alone, with
    transcendental work; and values of reductions stored anyway, read through a
    permutation (`memory_order`'s): a kernel walking memory order has no row along
    which such a value is constant, so recomputed it would cost its arithmetic and a
    gather per element (group norm's per-channel scale over a channels-last tensor).
    Other values of a reduction, broadcast along its row, stay in its kernel."""
    if view.size < BROADCAST_FACTOR * src.size or view.size - src.size < BROADCAST_EXTRA:
        return False
    worth, stack, seen = False, [src], set()
    while stack:
        n = stack.pop()
        if id(n) in seen or n.op in Group.LEAF:
            continue
        seen.add(id(n))
        if n.op is Op.PERMUTE and n.srcs[0].op in Group.REDUCE:
            worth = True                 # a reduction stored anyway
            continue
        if n.op not in Group.ELEMENTWISE and n.op not in Group.MOVEMENT and n.op is not Op.CONCAT:
            return False                 # a reduction's value
        worth = worth or n.op in Group.TRANSCENDENTAL
        stack.extend(n.srcs)
    return worth


def _reduce_constant(n: Node, value: Node) -> Node:
    """A reduction of a tensor whose elements all hold one constant (what an empty
    reduction folds to, seen through views): max and min are the constant, a sum is the
    constant times the count (wrapping as integer sums do)."""
    if n.op is not Op.SUM or n.dtype.is_bool:
        return Node(Op.CONST, (), (), n.dtype, value.arg)
    count = math.prod(n.srcs[0].shape[a] for a in n.arg)
    if not n.dtype.is_int:
        return Node(Op.CONST, (), (), n.dtype, float(value.arg) * count)
    half = 2 ** (n.dtype.itemsize * 8 - 1)
    return Node(Op.CONST, (), (), n.dtype, (int(value.arg) * count + half) % (2 * half) - half)


def _concat_as_selects(n: Node) -> Node:
    """concat(s0, s1, ...) along an axis -> where(iota < end0, s0, where(iota < end1, s1, ...)).

    Each piece is read through a clamped shift, so reads stay in bounds on both sides.
    """
    axis = n.arg
    iota = Node(Op.IOTA, (), n.shape, DType.int64, axis)
    pieces, offset = [], 0
    for s in n.srcs:
        shifted = Node(Op.SHIFT, (s,), n.shape, s.dtype, (axis, offset))
        offset += s.shape[axis]
        pieces.append((shifted, offset))
    out = pieces[-1][0]
    for shifted, end in reversed(pieces[:-1]):
        cond = Node(Op.LT, (iota, Node(Op.CONST, (), (), DType.int64, end)), n.shape,
                    DType.bool)
        out = Node(Op.WHERE, (cond, shifted, out), n.shape, n.dtype)
    return out
