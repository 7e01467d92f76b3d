"""Bytes moved at each memory level, read straight off a GIR program.

Global memory is counted by footprint: a Move touches as many distinct elements as
the enclosing loops whose variables its index uses (a weight row broadcast to every
parallel unit is read once; caches keep it). Faster levels are counted by
executions: every time a Move runs, its bytes move.
"""

from __future__ import annotations

import math

from ..gir.ir import Level, Move, Program, walk


def footprint(program: Program) -> dict[str, dict[str, int]]:
    out = {lv.value: {"read": 0, "write": 0} for lv in Level}
    for s, loops in walk(program.body):
        if not isinstance(s, Move):
            continue
        for access, kind in ((s.src, "read"), (s.dst, "write")):
            level = access.buffer.level
            if level is Level.GLOBAL:
                used = access.index.vars()
                count = math.prod(lp.var.extent for lp in loops if lp.var in used)
            else:
                count = math.prod(lp.var.extent for lp in loops)
            out[level.value][kind] += count * access.buffer.dtype.itemsize
    return out


def global_bytes(program: Program) -> int:
    g = footprint(program)["global"]
    return g["read"] + g["write"]
