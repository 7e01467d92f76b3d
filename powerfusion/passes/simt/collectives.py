"""The collectives pass: a group-scope reduction after every SIMD loop that accumulates.

A SIMD loop runs on the threads of a block side by side, so a register it accumulates
into (`r = op(r, x)`, r set before the loop) holds one partial per thread when the loop
ends. This pass makes the step that combines them explicit: a Collective right after
the loop, one per accumulator (by name), over the threads that shared the loop: the
block, a warp ("lanes", when a block holds several rows) or a thread block cluster.
"""

from __future__ import annotations

import dataclasses

from ...gir.ir import (Collective, Launch, Level, Loop, Parallel, Program, Stmt, accesses,
                       accumulators, walk)


def place_collectives(program: Program) -> Program:
    """The program with a Collective after each accumulating SIMD loop."""
    return dataclasses.replace(program, body=_Collectives(program.launch).block(program.body))


def scope_of(launch: Launch) -> str:
    """The threads that share a row, and so combine its partials."""
    return "cluster" if launch.cluster > 1 else "lanes" if launch.rows > 1 else "block"


class _Collectives:
    def __init__(self, launch: Launch):
        self.scope = scope_of(launch)
        self.written: set[str] = set()      # registers written so far, in program order

    def block(self, stmts: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for s in stmts:
            if isinstance(s, Loop) and s.kind is not Parallel.SIMD:
                out.append(Loop(s.var, s.kind, self.block(s.body)))
                continue
            out.append(s)
            if isinstance(s, Loop):
                out += [Collective(c.op, c.dst, self.scope)
                        for c in accumulators(s, self.written).values()]
            self.written |= {a.buffer.name for t, _ in walk((s,)) for a in accesses(t)[1]
                             if a.buffer.level is Level.REGISTER}
        return tuple(out)
