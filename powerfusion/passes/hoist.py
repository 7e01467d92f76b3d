"""hoist: instructions whose operands do not change in a loop run once, before it.

Canonicalisation pushes broadcasts down to the leaves, so a per-row value such as
rsqrt(var + eps) is first computed for every element; here it leaves the inner loop.
"""

from __future__ import annotations

from ..gir.ir import Access, Compute, IndexValue, Level, Loop, Move, Program, Stmt, walk
from .util import effects, map_loops


def hoist(program: Program) -> Program:
    return program.with_body(map_loops(program.body, _hoist_seq))


def _hoist_seq(seq: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in seq:
        if isinstance(s, Loop):
            before, loop = _hoist_loop(s)
            out.extend(before)
            out.append(loop)
        else:
            out.append(s)
    return tuple(out)


def _hoist_loop(loop: Loop) -> tuple[list[Stmt], Loop]:
    fx = effects(loop)
    varying = set(fx.reg_writes)        # registers that (may) change inside the loop
    hoisted: list[Stmt] = []
    kept: list[Stmt] = []
    # x / d stays a division even for an invariant d: x * (1/d) rounds differently, and
    # a value computed twice (once where d is invariant) must come out the same twice
    for s in loop.body:
        if _invariant(s, loop, varying, fx.mem_writes):
            hoisted.append(s)
            varying.discard(s.dst.buffer.name)
        else:
            kept.append(s)
    if not hoisted:
        return [], loop
    return hoisted, Loop(loop.var, loop.kind, tuple(kept))


def _invariant(s: Stmt, loop: Loop, varying: set, mem_writes) -> bool:
    if isinstance(s, Compute):
        if s.is_accumulate or s.dst.buffer.level is not Level.REGISTER:
            return False
        for o in s.srcs:
            if isinstance(o, Access) and o.buffer.name in varying:
                return False
            if isinstance(o, IndexValue) and loop.var in o.index.vars():
                return False
        return _written_once(s.dst.buffer.name, loop)
    if isinstance(s, Move) and s.dst.buffer.level is Level.REGISTER \
            and s.src.buffer.level is not Level.REGISTER:
        return (loop.var not in s.src.index.vars() and s.src.buffer.name not in mem_writes
                and _written_once(s.dst.buffer.name, loop))
    return False


def _written_once(name: str, loop: Loop) -> bool:
    return sum(1 for t, _ in walk(loop.body)
               if isinstance(t, (Move, Compute)) and t.dst.buffer.name == name) == 1
