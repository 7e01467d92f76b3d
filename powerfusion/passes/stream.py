"""stream: output rows written past the caches, from a row on chip (CPU).

A store to a line that is not in cache first reads the line (read for ownership):
an output written once and not read again soon costs its bytes twice. Here a vector
loop that writes a float32 output row, element i at base + i, writes it to a LOCAL
row instead, and a second loop moves that row to memory with streaming stores
(the printer makes it one `pf_stream_f32` call: non-temporal stores of whole lines).
"""

from __future__ import annotations

from ..dtypes import DType
from ..gir.expr import Expr, Var
from ..gir.ir import (Access, Buffer, Level, Loop, Move, Parallel, Program, Role, Stmt,
                      buffers, walk)
from .util import fresh_name

MIN_ROW = 64                # elements: shorter rows would stream partial lines


def stream_stores(program: Program) -> Program:
    names = set(buffers(program)) | {s.var.name for s, _ in walk(program.body)
                                     if isinstance(s, Loop)}
    return program.with_body(_seq(program.body, names))


def _seq(stmts: tuple[Stmt, ...], names: set[str]) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in stmts:
        if not isinstance(s, Loop):
            out.append(s)
        elif s.kind is Parallel.SIMD and not any(isinstance(b, Loop) for b in s.body):
            out.extend(_stream_loop(s, names))
        else:
            out.append(Loop(s.var, s.kind, _seq(s.body, names)))
    return tuple(out)


def _stream_loop(loop: Loop, names: set[str]) -> list[Stmt]:
    i, n = loop.var, loop.var.extent
    if n < MIN_ROW:
        return [loop]
    rows: dict[tuple, Buffer] = {}
    body: list[Stmt] = []
    for s in loop.body:
        if isinstance(s, Move) and _row_store(s, i):
            key = (s.dst.buffer.name, s.dst.index)
            if key not in rows:
                rows[key] = Buffer(fresh_name(f"{s.dst.buffer.name}_row", names), Level.LOCAL,
                                   DType.float32, (n,))
            body.append(Move(Access(rows[key], Expr.of(i)), s.src))
        else:
            body.append(s)
    if not rows:
        return [loop]
    after = []
    for (name, index), row in rows.items():
        j = Var(fresh_name(f"{i.name}_s", names), n)
        dst = next(s.dst.buffer for s in loop.body if isinstance(s, Move)
                   and s.dst.buffer.name == name)
        after.append(Loop(j, Parallel.SIMD, (Move(Access(dst, index.substitute({i: j})),
                                                  Access(row, Expr.of(j)), stream=True),)))
    return [Loop(i, loop.kind, tuple(body)), *after]


def _row_store(s: Move, i: Var) -> bool:
    """A float32 output element at base + i, base free of i."""
    b = s.dst.buffer
    return (b.level is Level.GLOBAL and b.role is Role.OUTPUT and b.dtype is DType.float32
            and s.dst.index - s.dst.index.substitute({i: 0}) == Expr.of(i))
