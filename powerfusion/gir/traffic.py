"""The bytes a program moves at each memory level, counted by execution."""

from __future__ import annotations

import math

from .ir import Level, Move, Program, walk


def traffic(program: Program) -> dict[str, dict[str, int]]:
    """Bytes read and written at each level, counted by execution.

    Every Move reads its src's itemsize from the src's level and writes its dst's
    itemsize to the dst's level, once per iteration of every enclosing loop, whether
    or not its index depends on that loop's variable (removing redundant moves is
    the passes' job). Computes are not counted: their operands are registers already.
    Unlike passes/traffic.footprint, repeated reads of the same element count again.
    """
    out = {level.value: {"read": 0, "write": 0} for level in Level}
    for s, loops in walk(program.body):
        if isinstance(s, Move):
            times = math.prod(lp.var.extent for lp in loops)
            out[s.src.buffer.level.value]["read"] += times * s.src.buffer.dtype.itemsize
            out[s.dst.buffer.level.value]["write"] += times * s.dst.buffer.dtype.itemsize
    return out


def global_bytes(program: Program) -> int:
    """Bytes read plus written at the global level, by `traffic`."""
    g = traffic(program)["global"]
    return g["read"] + g["write"]
