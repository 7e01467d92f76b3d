"""Bytes moved at each memory level, read straight off a GIR program.

Global memory is counted by footprint: the distinct elements a Move touches over all
iterations of its loops (a weight row broadcast to every parallel unit is read once;
caches keep it). Faster levels are counted by executions: every time a Move runs,
its bytes move.
"""

from __future__ import annotations

import math

from ..gir.expr import Expr, Var
from ..gir.ir import Level, Move, Program, walk
from .util import split_region


def footprint(program: Program) -> dict[str, dict[str, int]]:
    out = {lv.value: {"read": 0, "write": 0} for lv in Level}
    same_loop: dict[tuple, list] = {}        # global accesses grouped by buffer and loop
    for s, loops in walk(program.body):
        if not isinstance(s, Move):
            continue
        for access, kind in ((s.src, "read"), (s.dst, "write")):
            level = access.buffer.level
            if level is Level.GLOBAL:
                key = (access.buffer.name, kind, id(loops[-1]) if loops else None)
                same_loop.setdefault(key, []).append((access, loops))
            else:
                count = math.prod(lp.var.extent for lp in loops)
                out[level.value][kind] += count * access.buffer.dtype.itemsize
    for (_, kind, _), group in same_loop.items():
        itemsize = group[0][0].buffer.dtype.itemsize
        out["global"][kind] += itemsize * _union(group)
    return out


def _union(group) -> int:
    """Distinct elements several accesses of one buffer in one loop touch together:
    each parallel unit's accesses overlap within its own region (one cache-resident
    row), so count the span of that region when it is smaller than the sum."""
    total = sum(distinct_elements(a.index) for a, _ in group)
    loops = group[0][1]
    if len(group) == 1 or not loops:
        return total
    p = loops[0].var
    regions = [split_region(a.index, p) for a, _ in group]
    if any(r is None for r in regions) or len({r[0] for r in regions}) != 1:
        return total
    lo = min(r[1].bounds()[0] for r in regions)
    hi = max(r[1].bounds()[1] for r in regions)
    per_unit = min(hi - lo + 1, sum(distinct_elements(r[1]) for r in regions))
    return min(total, distinct_elements(regions[0][0]) * per_unit)


def distinct_elements(index: Expr) -> int:
    """How many distinct values index takes: per term, the fewer of its variables'
    combinations and its range; never more than all combinations together."""
    total, used = 1, set()
    for atom, _ in index.terms:
        names = {atom} if isinstance(atom, Var) else set(atom.arg.vars())
        lo, hi = atom.bounds()
        total *= min(math.prod(v.extent for v in names), hi - lo + 1)
        used |= names
    return min(total, math.prod(v.extent for v in used))


def global_bytes(program: Program) -> int:
    g = footprint(program)["global"]
    return g["read"] + g["write"]
