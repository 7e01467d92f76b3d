"""reuse: on-chip buffers whose live ranges do not overlap share storage."""

from __future__ import annotations

from ..gir.ir import Access, Buffer, Level, Loop, Program, accesses, map_accesses, walk
from .util import cores_loop


def reuse(program: Program) -> Program:
    par = cores_loop(program)
    if par is None:
        return program
    live: dict[str, list] = {}       # name -> [buffer, first, last] statement position
    for pos, stmt in enumerate(par.body):
        for s, _ in walk((stmt,)):
            reads, writes = accesses(s)
            for a in reads + writes:
                if a.buffer.level is Level.LOCAL:
                    entry = live.setdefault(a.buffer.name, [a.buffer, pos, pos])
                    entry[2] = pos
    slots: list[list] = []           # [buffer, free after position]
    assign: dict[str, Buffer] = {}
    for name, (buf, first, last) in sorted(live.items(), key=lambda kv: kv[1][1]):
        for slot in slots:
            if slot[1] < first and slot[0].dtype is buf.dtype and slot[0].size >= buf.size:
                assign[name] = slot[0]
                slot[1] = last
                break
        else:
            slots.append([buf, last])
    renames = {n: b for n, b in assign.items() if b.name != n}
    if not renames:
        return program
    body = map_accesses(par.body, lambda a: Access(renames[a.buffer.name], a.index)
                        if a.buffer.name in renames else a)
    return program.with_body((Loop(par.var, par.kind, body),))
