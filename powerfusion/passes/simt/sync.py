"""The sync pass: Barrier statements wherever threads of a SIMT block share memory.

The threads of a block run a program's statements in step, each its own part of every
SIMD loop (iteration i on thread (i / chunk) % lanes, the program's Launch), and every
row-level statement together: all of them read its operands, thread 0 makes its store.
Two accesses to one element of shared memory (LOCAL arrays other than private rows, and
non-input global buffers) conflict when one writes and they may come from different
threads; between them there must be a barrier. The pass walks the program as the
threads do, keeps the accesses made since the last barrier, and places one before a
statement whose accesses conflict with them: before a loop, before a row-level
statement, and at the end of a loop body whose next iteration would conflict with this
one. A Collective (the reduction after a SIMD loop) synchronises its threads itself.

A `Use` is one access with the thread that makes it: ("lane", index) inside a SIMD loop
(an equal index in loops of equal extent is the same thread under the chunked mapping),
("one",) a row-level store (thread 0), ("all",) a row-level read, ("any",) unknown.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...errors import UnsupportedError
from ...gir.expr import Var
from ...gir.ir import (Barrier, Collective, Launch, Loop, Parallel, Program,
                       Stmt, accesses, walk)


@dataclass(frozen=True)
class Use:
    buffer: str
    who: tuple          # ("lane", index) | ("one",) thread 0 | ("all",) | ("any",)
    write: bool


def conflict(a: Use, b: Use) -> bool:
    if a.buffer != b.buffer or not (a.write or b.write):
        return False
    return not (a.who == b.who and a.who[0] in ("lane", "one"))


class Hazards:
    """Shared accesses since the last barrier."""

    def __init__(self):
        self.uses: list[Use] = []

    def conflicts(self, uses: list[Use]) -> bool:
        return any(conflict(a, b) for a in uses for b in self.uses)

    def add(self, uses: list[Use]) -> None:
        self.uses += [u for u in uses if u not in self.uses]

    def clear(self) -> None:
        self.uses = []


def check_lanes(uses: list[Use], loop: Loop) -> None:
    """Inside one SIMD loop, threads run side by side: no element may pass between them."""
    for k, a in enumerate(uses):
        if a.write and a.who[0] != "lane":
            raise UnsupportedError(
                f"SIMT codegen: SIMD loop {loop.var.name} writes {a.buffer} at an element "
                "that does not follow the loop index; several threads would store it")
        for b in uses[k + 1:]:
            if conflict(a, b):
                raise UnsupportedError(
                    f"SIMT codegen: SIMD loop {loop.var.name} passes values between its "
                    f"iterations through {a.buffer}; its threads run side by side")


def place_barriers(program: Program) -> Program:
    """The program with a Barrier wherever its launch needs one."""
    return dataclasses.replace(program, body=_Sync(program.launch).block(program.body))


class _Sync:
    def __init__(self, launch: Launch):
        self.launch = launch
        self.hazards = Hazards()

    def block(self, stmts: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for s in stmts:
            if isinstance(s, Loop) and s.kind is Parallel.SIMD:
                out += self.thread_loop(s)
            elif isinstance(s, Loop):
                out += self.repeated(s)
            elif isinstance(s, Collective):     # its threads meet: nothing is pending
                self.hazards.clear()
                out.append(s)
            else:
                out += self.row_statement(s)
        return tuple(out)

    def sync_before(self, uses: list[Use]) -> list[Stmt]:
        barrier = [Barrier()] if self.hazards.conflicts(uses) else []
        if barrier:
            self.hazards.clear()
        self.hazards.add(uses)
        return barrier

    def repeated(self, loop: Loop) -> list[Stmt]:
        """A loop every thread runs in step: entering it may need a barrier against what
        came before, and its next iteration one against what this one left."""
        everything = self.loop_accesses(loop)
        before = [Barrier()] if self.hazards.conflicts(everything) else []
        if before:
            self.hazards.clear()
        body = self.block(loop.body)
        if self.hazards.conflicts(everything):
            body += (Barrier(),)
            self.hazards.clear()
        self.hazards.add(everything)
        return before + [Loop(loop.var, loop.kind, body)]

    def thread_loop(self, loop: Loop) -> list[Stmt]:
        uses = self.loop_accesses(loop)
        check_lanes(uses, loop)
        return self.sync_before(uses) + [loop]

    def row_statement(self, s: Stmt) -> list[Stmt]:
        return self.sync_before(self.row_accesses(s)) + [s]

    def row_accesses(self, s: Stmt) -> list[Use]:
        if isinstance(s, Loop):
            return self.loop_accesses(s)
        reads, writes = accesses(s)
        return ([Use(a.buffer.name, ("all",), False) for a in reads
                 if self.launch.shares(a.buffer)]
                + [Use(a.buffer.name, ("one",), True) for a in writes
                   if self.launch.shares(a.buffer)])

    def loop_accesses(self, loop: Loop) -> list[Use]:
        """Every shared access in the loop, with the thread that makes it."""
        if loop.kind is not Parallel.SIMD:
            out = []
            for s in loop.body:
                out += self.row_accesses(s)
            return out
        lane = Var("pf_lane", loop.var.extent)
        out = []
        for s, inner in walk(loop.body):
            reads, writes = accesses(s)
            for a, is_write in [(a, False) for a in reads] + [(a, True) for a in writes]:
                if not self.launch.shares(a.buffer):
                    continue
                inner_vars = {lp.var for lp in inner}
                if a.index.vars() & inner_vars or loop.var not in a.index.vars():
                    who = ("any",)      # many threads may meet this element
                else:
                    who = ("lane", a.index.substitute({loop.var: lane}))
                out.append(Use(a.buffer.name, who, is_write))
        return out
