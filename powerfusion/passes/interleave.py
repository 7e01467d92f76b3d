"""interleave: a CPU thread works on several short rows at once, phase by phase.

A row kernel's parallel loop body is a chain of phases, each a vector loop over the row
and the scalar work around it (softmax: the maximum; the exponentials and their sum;
the division). On a short row each phase ends in a reduction whose horizontal combine
is a chain of dependent instructions, and the next phase waits for it. Taking R rows
per parallel iteration and running each phase for all R before the next gives the core
R independent chains to overlap (out-of-order execution does the interleaving).

The row's LOCAL buffers become R rows each (row r at r * size), and a register one
phase computes and a later one reads (the maximum, the sum) is kept per row in a LOCAL
array of R between them, in its compute dtype (a bfloat16 register holds float32).
Iterations of a parallel loop are independent, so running row r's phase k before row
r+1's phase k-1 preserves meaning; values are bit-identical.

Applied where the search finds a kernel bound by its arithmetic (search/space.py): a
kernel near the memory roofline wants its loads spread over its arithmetic, not in
bursts a row group long.
"""

from __future__ import annotations

from ..gir.expr import Expr, Var
from ..gir.ir import (Access, Buffer, Compute, Level, Loop, Move, Parallel, Program, Stmt, accesses,
                      map_accesses, substitute_var, walk)
from ..targets import Target
from .util import cores_loop, fresh_name, local_bytes_in_use, taken_names

# rows per parallel iteration by the row's length (elements of its longest vector loop):
# a reduction's latency matters while a phase is short against it
ROWS_BY_LENGTH = ((256, 8), (1024, 4), (2048, 2))
MIN_ITERATIONS_PER_CORE = 8     # what dynamic scheduling and load balance still need


def interleave_rows(program: Program, target: Target) -> Program:
    """program with its parallel loop's short rows taken several per iteration, or
    program itself where its body is no such row loop or no group size fits."""
    loop = cores_loop(program)
    if loop is None or not _row_body(loop.body):
        return program
    rows = _rows(loop, target)
    if rows <= 1:
        return program
    names = taken_names(program)
    outer = Var(fresh_name(f"{loop.var.name}_rows", names), loop.var.extent // rows)
    r = Var(fresh_name("r", names), rows)
    body = substitute_var(loop.body, loop.var, Expr.of(outer) * rows + Expr.of(r))
    body = _rows_of_locals(body, r, names)
    phases = _phases(body)
    # registers a phase reads before writing them, and those it writes; the ones an
    # earlier phase wrote are carried from it to this one, kept per row
    reads, writes = [_live_in(p) for p in phases], [_written(p) for p in phases]
    carried = [reads[k] & set().union(*writes[:k]) for k in range(len(phases))]
    kept = set().union(*carried)
    registers = _registers_in(body)
    spills = {name: Buffer(fresh_name(f"{name}_rows", names), Level.LOCAL,
                           registers[name].dtype.compute, (rows,)) for name in sorted(kept)}
    at_r = Expr.of(r)
    new_body: list[Stmt] = []
    for phase, wanted, written in zip(phases, carried, writes):
        reload = [stmt for n in sorted(wanted)
                  for stmt in _reload(registers[n], Access(spills[n], at_r), names)]
        spill = [Move(Access(spills[n], at_r), Access(registers[n]))
                 for n in sorted(written & kept)]
        new_body.append(Loop(r, Parallel.SERIAL, tuple(reload + phase + spill)))
    return program.with_body((Loop(outer, Parallel.CORES, tuple(new_body)),))


def _reload(reg: Buffer, kept: Access, names: set[str]) -> list[Stmt]:
    """reg <- its value kept for the row. A Move into a 16-bit register rounds, and the
    register holds float32 precision (a bfloat16 softmax's sum): those go through a
    float32 register and a plain copy, which keeps the value as it is."""
    if reg.dtype is reg.dtype.compute:
        return [Move(Access(reg), kept)]
    wide = Buffer(fresh_name(f"{reg.name}_kept", names), Level.REGISTER, reg.dtype.compute)
    return [Move(Access(wide), kept), Compute(None, Access(reg), (Access(wide),))]


def _row_body(body: tuple[Stmt, ...]) -> bool:
    """A body of scalar statements and vector loops (no nested parallel or serial loop,
    nothing SIMT), with at least two vector loops: something to interleave."""
    loops = 0
    for s in body:
        if isinstance(s, Loop):
            if s.kind is not Parallel.SIMD or any(isinstance(t, Loop) for t in s.body):
                return False
            loops += 1
        elif not isinstance(s, (Move, Compute)):
            return False
    return loops >= 2


def _rows(loop: Loop, target: Target) -> int:
    """Rows per parallel iteration: by the row's length, fewer while they outgrow half
    the L1 cache (beside what the row already keeps there) or leave the cores too few
    iterations; 1 where nothing fits."""
    length = max(s.var.extent for s in loop.body if isinstance(s, Loop))
    want = next((r for limit, r in ROWS_BY_LENGTH if length <= limit), 1)
    room = target.near_bytes // 2
    row_bytes = local_bytes_in_use(loop.body) + 64
    n = loop.var.extent
    while want > 1 and (n % want or want * row_bytes > room
                        or n // want < MIN_ITERATIONS_PER_CORE * target.cores):
        want //= 2
    return want


def _rows_of_locals(body: tuple[Stmt, ...], r: Var, names: set[str]) -> tuple[Stmt, ...]:
    """Each LOCAL buffer of the body as R rows, row r at r * size."""
    rows = {}

    def widen(a: Access) -> Access:
        b = a.buffer
        if b.level is not Level.LOCAL:
            return a
        if b.name not in rows:
            rows[b.name] = Buffer(fresh_name(f"{b.name}_r", names), Level.LOCAL, b.dtype,
                                  (r.extent * b.size,))
        return Access(rows[b.name], Expr.of(r) * b.size + a.index)

    return map_accesses(body, widen)


def _phases(body: tuple[Stmt, ...]) -> list[list[Stmt]]:
    """The body cut after each vector loop (scalar statements after the last join it)."""
    phases: list[list[Stmt]] = []
    current: list[Stmt] = []
    for s in body:
        current.append(s)
        if isinstance(s, Loop):
            phases.append(current)
            current = []
    if current:
        phases[-1].extend(current)
    return phases


def _registers_in(stmts) -> dict[str, Buffer]:
    found = {}
    for s, _ in walk(tuple(stmts)):
        reads, writes = accesses(s)
        for a in reads + writes:
            if a.buffer.level is Level.REGISTER:
                found[a.buffer.name] = a.buffer
    return found


def _written(stmts) -> set[str]:
    return {a.buffer.name for s, _ in walk(tuple(stmts)) for a in accesses(s)[1]
            if a.buffer.level is Level.REGISTER}


def _live_in(stmts) -> set[str]:
    """Registers read before this code writes them (a loop's own temporaries stay
    inside it: what a loop writes defines nothing after it but its accumulators, which
    were set before it)."""
    live: set[str] = set()

    def visit(seq, defined: set[str]) -> None:
        for s in seq:
            if isinstance(s, Loop):
                visit(s.body, set(defined))
                continue
            reads, writes = accesses(s)
            live.update(a.buffer.name for a in reads
                        if a.buffer.level is Level.REGISTER and a.buffer.name not in defined)
            defined.update(a.buffer.name for a in writes if a.buffer.level is Level.REGISTER)

    visit(stmts, set())
    return live
