"""Reductions iterated in the order their operand lies in memory.

A reduction's kernel walks the operand's logical axes: the kept ones across units, the
reduced ones in the inner loop, by rows when the last axis is reduced and by columns
when it is kept. That is right for a row-major operand. For one laid out otherwise (a
channels-last activation [N, C, H, W] with C innermost in memory, summed over H and W)
the inner loop would stride through memory, one element per cache line. So a reduction
whose operand is read with a unit step along some axis other than its last is rebuilt
over the operand permuted into memory order (the axis of unit step last), and where a
kept axis then lies inside reduced ones, in two stages: first over the reduced axes
outside the innermost kept axis (by columns: whole contiguous rows of kept elements per
step), then over the rest of the small result (group norm's channels within a group).
The result is permuted back (a reshape where only axes of one element move): the same
values, summed in another order.

Which order memory has is read off the index map of the operand's largest stored input
(`_axis_steps`): the step in elements of each logical axis, where the map is affine.
"""

from __future__ import annotations

from ..gir.expr import Expr, Var
from .canonical import canonicalize
from .graph import Node
from .ops import Group, Op
from .views import strided_offset, through_views

# smaller reductions are not worth a second kernel
MIN_ELEMENTS = 4096


def reduce_in_memory_order(roots: list[Node], strides: dict[int, tuple]) -> list[Node]:
    """roots with each reduction over a strided operand rebuilt in memory order;
    strides: id of each INPUT node -> its element strides. Runs before
    canonicalisation, which then pushes the permutations it adds down to the inputs
    (and sees the reductions they make stored: `canonical._worth_storing`)."""
    reductions, stack, seen = [], list(roots), set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op in Group.REDUCE and n.srcs[0].size >= MIN_ELEMENTS and len(n.srcs[0].shape) > 1:
            reductions.append(n)         # (small and empty ones are not worth a kernel)
        stack.extend(n.srcs)
    if not reductions:
        return roots
    # the memory order of an operand shows in its canonical form: views at the inputs
    canonical = canonicalize([r.srcs[0] for r in reductions])
    steps = {id(r): _axis_steps(c, strides) for r, c in zip(reductions, canonical)}
    memo: dict[int, Node] = {}

    def rebuild(n: Node) -> Node:
        hit = memo.get(id(n))
        if hit is not None:
            return hit
        srcs = tuple(rebuild(s) for s in n.srcs)
        out = n if srcs == n.srcs else Node(n.op, srcs, n.shape, n.dtype, n.arg)
        if steps.get(id(n)) is not None:
            out = _reordered(out, steps[id(n)]) or out
        memo[id(n)] = out
        return out

    return [rebuild(r) for r in roots]


def _reordered(red: Node, steps: tuple[int, ...]) -> Node | None:
    """red rebuilt in its operand's memory order (steps: of each axis of the operand),
    or None when it already walks it."""
    (src,) = red.srcs
    shape = src.shape
    big = [k for k, n in enumerate(shape) if n > 1]
    unit = [k for k in big if steps[k] == 1]
    if not unit or steps[big[-1]] == 1:
        return None                      # the last axis already runs through memory
    # memory order, outermost first; axes of one element and broadcast axes (step 0,
    # re-reading one element) outermost, where their place costs nothing
    order = tuple(sorted(range(len(shape)), key=lambda k: (
        k in big and steps[k] != 0, -steps[k] if k in big else 0, k)))
    axes = sorted(order.index(a) for a in red.arg if shape[a] > 1)
    if not axes:
        return None
    permuted = Node(Op.PERMUTE, (src,), tuple(shape[k] for k in order), src.dtype, order)
    kept = [k for k in range(len(shape)) if k not in axes and permuted.shape[k] > 1]
    inner = max(kept) if kept else -1
    outer_axes = tuple(a for a in axes if a < inner)
    inner_axes = tuple(a for a in axes if a > inner)
    out = permuted
    for stage in (outer_axes, inner_axes):
        if stage:
            out = Node(red.op, (out,), tuple(1 if k in stage else n
                                             for k, n in enumerate(out.shape)),
                       red.dtype, stage)
    # the reduced axes order places not reduced here (one element) are 1 either way
    back = tuple(order.index(k) for k in range(len(shape)))
    result_shape = tuple(out.shape[back[k]] for k in range(len(shape)))
    if result_shape != red.shape:
        return None
    kept_order = [k for k in back if out.shape[k] > 1]
    if kept_order == sorted(kept_order):  # only axes of one element move: a free view
        return Node(Op.RESHAPE, (out,), red.shape, red.dtype)
    return Node(Op.PERMUTE, (out,), red.shape, red.dtype, back)


def _axis_steps(src: Node, strides: dict[int, tuple]) -> tuple[int, ...] | None:
    """The step in elements along each axis of src of the read of its largest stored
    input (through views and element-wise ops), or None where no input is read or the
    read is not affine along every axis."""
    index = tuple(Var(f"m{k}", n) for k, n in enumerate(src.shape))
    reads = _reads(src)
    best = None
    for view in reads:
        leaf, at = through_views(view, tuple(Expr.of(v) for v in index))
        if id(leaf) not in strides or (best is not None and leaf.size <= best[0].size):
            continue
        best = (leaf, at)
    if best is None:
        return None
    leaf, at = best
    offset = strided_offset(at, strides[id(leaf)])
    steps = dict.fromkeys(index, 0)
    for atom, coef in offset.terms:
        if not isinstance(atom, Var):
            return None                  # a div, mod or clamp: not one step per axis
        steps[atom] = coef
    return tuple(abs(steps[v]) for v in index)


def _reads(src: Node) -> list[Node]:
    """The nodes of src's shape through which its element-wise tree reads inputs: views
    over INPUT leaves, and the INPUT leaves it reads directly."""
    found, stack, seen = [], [src], set()
    while stack:
        n = stack.pop()
        if id(n) in seen or n.shape != src.shape:
            continue
        seen.add(id(n))
        if n.op in Group.MOVEMENT or n.op is Op.INPUT:
            base = n
            while base.op in Group.MOVEMENT:
                base = base.srcs[0]
            if base.op is Op.INPUT:
                found.append(n)
        elif n.op in Group.ELEMENTWISE:
            stack.extend(n.srcs)
    return found
