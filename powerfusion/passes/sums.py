"""sums: a long float sum accumulates as accurately as numpy's pairwise sum.

Lowered, a sum is `acc = 0; simd i: acc += v(i)`: each SIMD lane (CPU) or thread (GPU)
adds count / lanes values in order, so its error grows with count, where numpy's
pairwise sum's grows with log2(count). Where a lane would add more than LANE_ADDS
values:

- on a CPU, the loop is cut into blocks of LANE_ADDS values per lane: each block
  sums into the float32 accumulator afresh, with the same vector loop (a float64
  accumulator would halve the width of everything computed beside it), and adds it
  to a float64 total, narrowed after the last block;
- on a GPU, the accumulator is float64 (a thread's adds are scalar: there is no
  vector width to keep), narrowed after the loop.

Only an accumulator set to 0 just for this loop is touched; any other stays as it is.
"""

from __future__ import annotations

from ..dtypes import DType
from ..gir.expr import Expr, Var
from ..gir.ir import (Access, Buffer, Compute, Const, Level, Loop, Move, Parallel, Program, Stmt,
                      accesses, substitute_var, walk)
from ..graph.ops import Op
from ..targets import Target
from .util import fresh_name, map_loops, register_reads, rename_registers, taken_names

LANE_ADDS = 128         # in-order adds per lane (or thread) before a sum is cut up
GPU_LANES = 1024        # a block's threads share a row (codegen's largest block)


def accurate_sums(program: Program, target: Target) -> Program:
    lanes = target.simd_bytes // 4 if target.family == "cpu" else GPU_LANES
    names = taken_names(program)
    writes = _write_counts(program.body)

    def rewrite(seq: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for s in seq:
            sums = _long_sums(s, out, writes, lanes)
            if not sums:
                out.append(s)
                continue
            inits = {id(out[k]) for k in sums.values()}
            out = [t for t in out if id(t) not in inits]
            accs = list(sums)
            if target.family == "cpu":
                out.extend(_blocked(s, accs, lanes * LANE_ADDS, names))
            else:
                out.extend(_widened(s, accs, names))
        return tuple(out)

    return program.with_body(map_loops(program.body, rewrite))


def _long_sums(s: Stmt, before: list[Stmt], writes: dict[str, int],
               lanes: int) -> dict[Buffer, int]:
    """The float32 registers a SIMD loop sums into over more than LANE_ADDS values per
    lane, each mapped to the position in `before` of the `acc = 0` it starts from (read
    by nothing between that and the loop, nor in the loop but by its own add)."""
    if not isinstance(s, Loop) or s.kind is not Parallel.SIMD \
            or s.var.extent <= lanes * LANE_ADDS:
        return {}
    found = {}
    reads = register_reads(s.body)
    for t, _ in walk(s.body):
        acc = t.dst.buffer if isinstance(t, Compute) else None
        if acc is None or not t.is_accumulate or t.op is not Op.ADD \
                or acc.level is not Level.REGISTER or acc.dtype.compute is not DType.float32 \
                or writes.get(acc.name) != 2 or reads.get(acc.name):
            continue
        init = next((k for k in range(len(before) - 1, -1, -1)
                     if isinstance(before[k], Compute) and before[k].dst.buffer == acc), None)
        if init is None or before[init].op is not None \
                or not isinstance(before[init].srcs[0], Const) or before[init].srcs[0].value \
                or any(acc.name in _read_names(u) for u in before[init + 1:]):
            continue
        found[acc] = init
    return found


def _read_names(s: Stmt) -> set[str]:
    return {a.buffer.name for t, _ in walk((s,)) for a in accesses(t)[0]}


def _blocked(loop: Loop, accs: list[Buffer], block: int, names: set[str]) -> list[Stmt]:
    """total = 0; per block: acc = 0, the loop over the block, total += acc; acc = total."""
    totals = {acc: Access(Buffer(fresh_name(acc.name + "_total", names), Level.REGISTER,
                                 DType.float64)) for acc in accs}
    out: list[Stmt] = [Compute(None, t, (Const(0.0, DType.float64),)) for t in totals.values()]
    i, n = loop.var, loop.var.extent
    full, tail = divmod(n, block)

    def part(var: Var, start: Expr) -> list[Stmt]:
        body = substitute_var(loop.body, i, start + var)
        return [*(Compute(None, Access(a), (Const(0.0, a.dtype),)) for a in accs),
                Loop(var, Parallel.SIMD, body),
                *(Compute(Op.ADD, t, (t, Access(a))) for a, t in totals.items())]

    b = Var(fresh_name(i.name + "b", names), full)
    j = Var(fresh_name(i.name + "j", names), block)
    out.append(Loop(b, Parallel.SERIAL, tuple(part(j, Expr.of(b) * block))))
    if tail:
        out += part(Var(fresh_name(i.name + "t", names), tail), Expr(full * block))
    return out + [Compute(None, Access(a), (t,)) for a, t in totals.items()]


def _widened(loop: Loop, accs: list[Buffer], names: set[str]) -> list[Stmt]:
    """acc64 = 0; the loop adding into acc64; acc = acc64."""
    wide = {acc.name: Access(Buffer(fresh_name(acc.name + "_wide", names), Level.REGISTER,
                                    DType.float64)) for acc in accs}
    body = rename_registers(loop.body, wide)
    return [*(Compute(None, w, (Const(0.0, DType.float64),)) for w in wide.values()),
            Loop(loop.var, loop.kind, body),
            *(Compute(None, Access(a), (wide[a.name],)) for a in accs)]


def _write_counts(stmts: tuple[Stmt, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s, _ in walk(stmts):
        if isinstance(s, (Move, Compute)):
            counts[s.dst.buffer.name] = counts.get(s.dst.buffer.name, 0) + 1
    return counts
