"""Partition a canonical graph into kernels: one kernel per iteration space.

A kernel iterates over one shape S with reduction axes A (A may be empty). It may
compute full-shape values (indexed like S), per-row values (S with A set to 1:
reductions and what is computed from them) and broadcasts of per-row values back to
S. Nothing else decides fusion: the partitioner proposes the largest groups whose
iteration spaces agree, splitting only where they really differ (a reduction over
other axes, or a per-row value read through a view that changes the space); the
GIR passes then decide what stays on chip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..gir.expr import Expr, Var, flatten, unflatten
from .graph import Node
from .ops import Group
from .views import through_views


@dataclass(frozen=True, eq=False)
class Kernel:
    """One kernel: its iteration space, the nodes it stores, the nodes it computes."""

    shape: tuple[int, ...]          # S
    reduce_axes: tuple[int, ...]    # A
    roots: tuple[Node, ...]         # stored to global memory (outputs or read later)
    nodes: tuple[Node, ...]         # computed here, in dependency order (leaves excluded)

    @property
    def row_shape(self) -> tuple[int, ...]:
        """S with the reduced axes set to 1: the shape of per-row values."""
        return tuple(1 if k in self.reduce_axes else n for k, n in enumerate(self.shape))


def partition(roots: list[Node]) -> list[Kernel]:
    """Kernels, in an order that respects their dependencies, computing every root."""
    stored: list[Node] = []
    for r in roots:
        if r.op not in Group.LEAF and all(r is not s for s in stored):
            stored.append(r)
    while True:
        plans = [_plan(m, stored) for m in stored]
        extra = [r for _, _, _, bad in plans for r in bad if all(r is not s for s in stored)]
        if not extra:
            break
        # element-wise values stored to be read through a broadcast (canonical form's
        # `_worth_storing`) go first: a small kernel of their own before the kernels
        # that read them, which can then still take every root of their space
        extra = _unique(extra)
        stored[:0] = [r for r in extra if r.op not in Group.REDUCE]
        stored.extend(r for r in extra if r.op in Group.REDUCE)
    return _group([(m, shape, axes, body) for m, (shape, axes, body, _) in zip(stored, plans)],
                  stored)


def is_materialized_leaf(node: Node, stored: list[Node], root: Node) -> bool:
    return node is not root and any(node is s for s in stored)


def _plan(root: Node, stored: list[Node]):
    """(S, A, body nodes, reductions that must be stored instead) for one root."""
    body: list[Node] = []
    seen: set[int] = set()
    reduce_views: list[tuple[Node, Node]] = []   # (consumer-visible view chain, reduction)

    def visit(n: Node) -> None:
        if id(n) in seen or n.op in Group.LEAF or is_materialized_leaf(n, stored, root):
            return
        seen.add(id(n))
        if n.op in Group.MOVEMENT:
            base, _ = through_views(n, tuple(Expr(0) for _ in n.shape))
            if base.op in Group.LEAF or is_materialized_leaf(base, stored, root):
                return
            reduce_views.append((n, base))
            visit(base)
            return
        for s in n.srcs:
            visit(s)
        body.append(n)

    visit(root)
    reductions = [n for n in body if n.op in Group.REDUCE]
    if root.op in Group.MOVEMENT:   # a view of a reduction stored as it is: copy it
        shape, axes = root.shape, ()
    elif reductions:
        # a root that is itself a reduction sets the space: a reduction it reads over
        # another space (x.max(-1, keepdims=True).min(-1)) must be stored first
        main = root if root.op in Group.REDUCE else max(reductions,
                                                         key=lambda r: r.srcs[0].size)
        shape, axes = main.srcs[0].shape, main.arg
    else:
        shape, axes = root.shape, ()
    bad = [r for r in reductions if (r.srcs[0].shape, r.arg) != (shape, axes)]
    row = tuple(1 if k in axes else n for k, n in enumerate(shape))
    for view, base in reduce_views:
        if base in bad or any(base is b for b in bad):
            continue
        if root.op in Group.MOVEMENT or base.op not in Group.REDUCE \
                or not _broadcasts_row(view, shape, axes, row):
            bad.append(base)             # (an element-wise base: canonical form kept
                                         # the view over it to have it stored)
    if not _in_space(root.shape, shape, row) and root.op not in Group.MOVEMENT:
        bad.extend(reductions)
    return shape, axes, body, _unique(bad)


def _broadcasts_row(view: Node, shape, axes, row) -> bool:
    """Does this view of a per-row value read, at each point of S (or of the row
    space), exactly that point's row? Then it stays inside the kernel."""
    if not _in_space(view.shape, shape, row):
        return False
    space = row if math.prod(view.shape) == math.prod(row) else shape
    d = tuple(Expr.of(Var(f"d{k}", n)) if n > 1 else Expr(0) for k, n in enumerate(space))
    _, got = through_views(view, reshape_index(d, space, view.shape))
    want = tuple(Expr(0) if k in axes else e for k, e in enumerate(d))
    return got == want


def _in_space(node_shape, shape, row) -> bool:
    """Can a kernel over `shape` compute a value of node_shape? Any arrangement of the
    full space or of the row space: a reshape is a bijection, so the kernel visits each
    element once through the index map."""
    return math.prod(node_shape) in (math.prod(shape), math.prod(row))


def reshape_index(index, shape, new_shape):
    """The index into new_shape of the element at `index` of shape (row-major order)."""
    if tuple(shape) == tuple(new_shape):
        return tuple(index)
    return unflatten(flatten(tuple(index), tuple(shape)), tuple(new_shape))


def _unique(nodes: list[Node]) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        if all(n is not o for o in out):
            out.append(n)
    return out


def _group(plans, stored: list[Node]) -> list[Kernel]:
    """Merge roots that share an iteration space into one kernel, in dependency order."""
    deps = {id(m): _materialized_deps(body, stored, m) for m, _, _, body in plans}
    order = _toposort_roots([m for m, *_ in plans], deps)
    by_root = {id(m): (shape, axes, body) for m, shape, axes, body in plans}
    groups: list[dict] = []
    placed: dict[int, int] = {}
    for m in order:
        shape, axes, body = by_root[id(m)]
        dep_groups = {placed[d] for d in deps[id(m)]}
        latest = max(dep_groups, default=-1)
        target = None
        for gi in range(max(latest, 0), len(groups)):
            g = groups[gi]
            if not (g["shape"] == shape and (g["axes"] == axes or not axes or not g["axes"])
                    and _in_space(m.shape, shape, _row(shape, axes or g["axes"]))):
                continue
            if gi == latest and not _reads_in_space(body + [m], g["roots"], shape,
                                                   axes or g["axes"]):
                continue
            target = gi
            break
        if target is None:
            groups.append({"shape": shape, "axes": axes, "roots": [], "body": []})
            target = len(groups) - 1
        g = groups[target]
        g["axes"] = g["axes"] or axes
        g["roots"].append(m)
        for n in body + ([m] if m not in body and m.op not in Group.MOVEMENT else []):
            if all(n is not b for b in g["body"]):
                g["body"].append(n)
        placed[id(m)] = target
    return [Kernel(g["shape"], tuple(g["axes"]), tuple(g["roots"]), _topo(g["body"]))
            for g in groups]


def _reads_in_space(nodes: list[Node], computed: list[Node], shape, axes) -> bool:
    """Can these nodes read `computed` (roots of one kernel) inside that kernel?"""
    row = _row(shape, axes)
    for n in nodes:
        for s in n.srcs:
            base = s
            while base.op in Group.MOVEMENT:
                base = base.srcs[0]
            if any(base is c for c in computed) and s is not base \
                    and not _broadcasts_row(s, shape, axes, row):
                return False
    return True


def _row(shape, axes):
    return tuple(1 if k in axes else n for k, n in enumerate(shape))


def _materialized_deps(body: list[Node], stored: list[Node], root: Node) -> set[int]:
    deps: set[int] = set()
    for n in body + [root]:
        for s in n.srcs:
            base = s
            while base.op in Group.MOVEMENT:
                base = base.srcs[0]
            if is_materialized_leaf(base, stored, root):
                deps.add(id(base))
    return deps


def _toposort_roots(roots: list[Node], deps: dict[int, set[int]]) -> list[Node]:
    done: set[int] = set()
    out: list[Node] = []
    pending = list(roots)
    while pending:
        progressed = False
        for m in list(pending):
            if deps[id(m)] <= done:
                out.append(m)
                done.add(id(m))
                pending.remove(m)
                progressed = True
        assert progressed, "cycle between kernels"
    return out


def _topo(nodes: list[Node]) -> tuple[Node, ...]:
    """Dependency order of body nodes (each after its body srcs)."""
    ids = {id(n) for n in nodes}
    out: list[Node] = []
    seen: set[int] = set()

    def visit(n: Node) -> None:
        if id(n) in seen or id(n) not in ids:
            return
        seen.add(id(n))
        for s in n.srcs:
            base = s
            while base.op in Group.MOVEMENT:
                base = base.srcs[0]
            visit(base)
        out.append(n)

    for n in nodes:
        visit(n)
    return tuple(out)
