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


def footprint(program: Program) -> dict[str, dict[str, int]]:
    out = {lv.value: {"read": 0, "write": 0} for lv in Level}
    for s, loops in walk(program.body):
        if not isinstance(s, Move):
            continue
        for access, kind in ((s.src, "read"), (s.dst, "write")):
            level = access.buffer.level
            if level is Level.GLOBAL:
                count = distinct_elements(access.index)
            else:
                count = math.prod(lp.var.extent for lp in loops)
            out[level.value][kind] += count * access.buffer.dtype.itemsize
    return out


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
