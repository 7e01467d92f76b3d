"""drop: stores nobody reads, computations nobody uses, and their buffers, go."""

from __future__ import annotations

from ..gir.ir import Level, Loop, Move, Program, Role, Stmt, accesses, walk
from .util import memory_reads, register_reads


def drop(program: Program) -> Program:
    body = program.body
    while True:
        new = _drop_once(body, register_reads(body), memory_reads(body))
        if new == body:
            break
        body = new
    referenced = _referenced(body)
    params = tuple(p for p in program.params if p.role is not Role.TEMP or p.name in referenced)
    if body == program.body and params == program.params:
        return program
    return type(program)(program.name, params, body)


def _referenced(body) -> set[str]:
    names = set()
    for s, _ in walk(body):
        reads, writes = accesses(s)
        names |= {a.buffer.name for a in reads + writes}
    return names


def _drop_once(stmts: tuple[Stmt, ...], reg_reads: dict, mem_reads: set) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Loop):
            body = _drop_once(s.body, reg_reads, mem_reads)
            if body:
                out.append(s if body == s.body else Loop(s.var, s.kind, body))
            continue
        dst = s.dst.buffer
        if dst.level is Level.REGISTER and not reg_reads.get(dst.name):
            continue                                # a value nobody reads
        if isinstance(s, Move) and dst.level is not Level.REGISTER \
                and dst.role is Role.TEMP and dst.name not in mem_reads:
            continue                                # a store nobody loads
        out.append(s)
    return tuple(out)
