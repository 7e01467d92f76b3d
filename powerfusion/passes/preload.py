"""preload: a 16-bit input every parallel unit reads the same way is widened once (CPU).

A layernorm's weight and bias rows, a bias added to every row: each unit of the
parallel loop loads the same bfloat16 (float16) elements and widens them to float32
again. Before the parallel loop, one SIMD loop now moves them into a float32 LOCAL
buffer that all units then read: the conversion leaves the per-row loop (a bfloat16
4096 x 768 layernorm: about 5% of its time). The buffer is read-only inside the
parallel loop, so the units may share it.
"""

from __future__ import annotations

from ..dtypes import DType
from ..gir.expr import Expr, Var
from ..gir.ir import (Access, Buffer, Level, Loop, Move, Parallel, Program, Role, accesses,
                      map_accesses, walk)
from ..targets import Target
from .util import cores_loop, fresh_name, taken_names

NARROW = (DType.float16, DType.bfloat16)


def preload(program: Program, target: Target) -> Program:
    par = cores_loop(program)
    if par is None:
        return program
    budget = target.near_bytes // 4
    spans: dict[str, tuple[Buffer, int]] = {}        # input -> (buffer, elements to widen)
    refused: set[str] = set()    # an input some unit reads otherwise: read from memory still
    written = {a.buffer.name for s, _ in walk(par.body) for a in accesses(s)[1]}
    for s, loops in walk(par.body):
        for a in accesses(s)[0]:
            src = a.buffer
            if src.level is not Level.GLOBAL or src.dtype not in NARROW \
                    or src.role is not Role.INPUT:
                continue
            lo, hi = a.index.bounds()
            if not (isinstance(s, Move) and s.dst.buffer.level is Level.REGISTER) \
                    or src.name in written or par.var in a.index.vars() \
                    or not loops or loops[-1].kind is not Parallel.SIMD or lo < 0:
                refused.add(src.name)    # (every access is rewritten, or none: a unit's own
                continue                 # elements are not in the shared buffer)
            _, seen = spans.get(src.name, (src, 0))
            spans[src.name] = (src, max(seen, hi + 1))
    for name in refused:
        spans.pop(name, None)
    chosen = {}
    for name, (src, n) in sorted(spans.items()):
        if n * 4 <= budget:
            budget -= n * 4
            chosen[name] = (src, n)
    if not chosen:
        return program
    names = taken_names(program)
    fills, wide = [], {}
    for name, (src, n) in chosen.items():
        buf = Buffer(fresh_name(f"{name}_wide", names), Level.LOCAL, DType.float32, (n,))
        j = Var(fresh_name("j", names), n)
        reg = Access(Buffer(fresh_name(f"{name}_w", names), Level.REGISTER, src.dtype))
        fills.append(Loop(j, Parallel.SIMD, (Move(reg, Access(src, Expr.of(j))),
                                              Move(Access(buf, Expr.of(j)), reg))))
        wide[name] = buf
    body = map_accesses(par.body, lambda a: Access(wide[a.buffer.name], a.index)
                        if a.buffer.name in wide else a)
    return program.with_body((*fills, Loop(par.var, par.kind, body)))
