"""rows: an output row is computed into a float32 row on chip, then leaves whole (CPU).

A vector loop that writes an output row, element i at base + i, writes it to a LOCAL
float32 row instead, and a second loop moves the row to memory; the printer makes
that loop one call of pf_rows.h:

- streaming stores (a schedule knob the tuner tries): a store to a line not in
  cache first reads the line (read for ownership), so an output written once and not
  read again soon costs its bytes twice; `pf_stream_f32` writes whole lines past the
  caches;
- bfloat16 outputs on a CPU with AVX512-BF16: rounding to bfloat16 takes ten integer
  instructions per vector in C, one instruction in `pf_f32_to_bf16_row` (bit-identical:
  it falls back to the C rounding for vectors holding float32 subnormals).
"""

from __future__ import annotations

from ..dtypes import DType
from ..gir.expr import Expr, Var
from ..gir.ir import (Access, Buffer, Compute, Level, Loop, Move, Parallel, Program, Role, Stmt,
                      walk)
from ..targets import Target
from .util import fresh_name, local_bytes_in_use, taken_names

MIN_ROW = 64                # elements: shorter rows would stream partial lines


def rows_out(program: Program, target: Target, *, stream: bool, bf16: bool) -> Program:
    """Float32 output rows streamed (stream), bfloat16 ones rounded as rows (bf16), when
    the row fits beside the rows already on chip in half the L1 cache (else it would
    push them out: bfloat16 RMSNorm's 16 KB row beside its 16 KB stash ran 9% slower)."""
    dtypes = {DType.float32: True} if stream else {}
    if bf16:
        dtypes[DType.bfloat16] = False
    if not dtypes:
        return program
    names = taken_names(program)
    room = target.near_bytes // 2 - local_bytes_in_use(program.body)
    return program.with_body(_seq(program.body, names, dtypes, room))


def copies_past_cache(program: Program, target: Target) -> bool:
    """A pure layout change (moves, no instruction) whose output outgrows every core's
    L2 together: the one kind of kernel streaming stores always paid for here (a
    head transpose, 18% while memory was slow), as in the C library's large memcpy."""
    moves_only = not any(isinstance(s, Compute) for s, _ in walk(program.body))
    written = sum(b.nbytes for b in program.params if b.role is Role.OUTPUT)
    return moves_only and written > 2 * target.capacity(Level.LOCAL) * target.cores


def _seq(stmts: tuple[Stmt, ...], names: set[str], dtypes, room: int) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in stmts:
        if not isinstance(s, Loop):
            out.append(s)
        elif s.kind is Parallel.SIMD and not any(isinstance(b, Loop) for b in s.body):
            out.extend(_row_loop(s, names, dtypes, room))
        else:
            out.append(Loop(s.var, s.kind, _seq(s.body, names, dtypes, room)))
    return tuple(out)


def _row_loop(loop: Loop, names: set[str], dtypes: dict, room: int) -> list[Stmt]:
    i, n = loop.var, loop.var.extent
    if n < MIN_ROW or 4 * n > room:
        return [loop]
    rows: dict[tuple, Buffer] = {}
    body: list[Stmt] = []
    for s in loop.body:
        if isinstance(s, Move) and _row_store(s, i, dtypes):
            key = (s.dst.buffer, s.dst.index)
            if key not in rows:
                rows[key] = Buffer(fresh_name(f"{s.dst.buffer.name}_row", names), Level.LOCAL,
                                   DType.float32, (n,))
            body.append(Move(Access(rows[key], Expr.of(i)), s.src))
        else:
            body.append(s)
    if not rows:
        return [loop]
    after = []
    for (dst, index), row in rows.items():
        j = Var(fresh_name(f"{i.name}_s", names), n)
        after.append(Loop(j, Parallel.SIMD, (Move(Access(dst, index.substitute({i: j})),
                                                  Access(row, Expr.of(j)),
                                                  stream=dtypes[dst.dtype]),)))
    return [Loop(i, loop.kind, tuple(body)), *after]


def _row_store(s: Move, i: Var, dtypes) -> bool:
    """An output element of one of `dtypes` at base + i, base free of i."""
    b = s.dst.buffer
    return (b.level is Level.GLOBAL and b.role is Role.OUTPUT and b.dtype in dtypes
            and s.dst.index.runs_along(i))
