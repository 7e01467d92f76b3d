"""stage: a tile's transposed global reads go through a padded LOCAL tile (SIMT).

Under a transpose schedule each unit owns a (rows x cols) tile of the output and its
SIMD loop walks the tile row-major: stores are contiguous across neighbouring lanes,
but a read of the input in its other layout strides by a whole input row. Such a
read moves to a loop of its own that walks the tile column-major, so neighbouring
lanes read neighbouring input elements, into a LOCAL tile padded by one column (lanes
that write a tile column land in different shared-memory banks); the compute loop
then reads the tile row-major. Only the element order changes: both loops read
exactly the elements the one did.
"""

from __future__ import annotations

import numpy as np

from ..gir.expr import Expr, Var
from ..gir.ir import (Access, Buffer, Level, Loop, Move, Parallel, Program, Stmt, accesses,
                      walk)
from .util import fresh_name, taken_names


def stage_tiles(program: Program, tile: tuple[int, int]) -> Program:
    names = taken_names(program)
    written = {a.buffer.name for s, _ in walk(program.body) for a in accesses(s)[1]}
    return program.with_body(_stage_seq(program.body, tile, names, None,
                                        written))


def _stage_seq(stmts, tile, names: set[str], p: Var | None, written: set[str]
               ) -> tuple[Stmt, ...]:
    rows, cols = tile
    out: list[Stmt] = []
    for s in stmts:
        if not isinstance(s, Loop):
            out.append(s)
        elif s.kind is Parallel.CORES:
            out.append(Loop(s.var, s.kind, _stage_seq(s.body, tile, names, s.var, written)))
        elif s.kind is Parallel.SIMD and s.var.extent == rows * cols and p is not None:
            out.extend(_stage_loop(s, tile, names, p, written))
        else:
            out.append(s)
    return tuple(out)


def _stage_loop(loop: Loop, tile, names: set[str], p: Var, written: set[str]
                ) -> list[Stmt]:
    rows, cols = tile
    i = loop.var
    s = Var(fresh_name(i.name + "_t", names), i.extent)
    column_major = Expr.of(s) % rows * cols + Expr.of(s) // rows   # i at tile position s
    staged: dict[tuple[str, Expr], Access] = {}
    loads: list[Stmt] = []
    body: list[Stmt] = []
    for st in loop.body:
        # only buffers the kernel never writes: their reads may move to an earlier loop
        if isinstance(st, Move) and st.src.buffer.name not in written \
                and _transposed(st.src, i, p, tile):
            key = (st.src.buffer.name, st.src.index)
            if key not in staged:
                src = st.src.buffer
                buf = Buffer(fresh_name(f"{src.name}_tile", names), Level.LOCAL,
                             src.dtype, (rows * (cols + 1),))
                reg = Access(Buffer(fresh_name("rt", names), Level.REGISTER, src.dtype))
                at = st.src.index.substitute({i: column_major})
                loads += [Move(reg, Access(src, at)),     # coalesced along the input
                          Move(Access(buf, Expr.of(s) % rows * (cols + 1) + Expr.of(s) // rows),
                               reg)]
                staged[key] = Access(buf, Expr.of(i) // cols * (cols + 1) + Expr.of(i) % cols)
            body.append(Move(st.dst, staged[key]))
        else:
            body.append(st)
    if not loads:
        return [loop]
    return [Loop(s, Parallel.SIMD, tuple(loads)), Loop(i, loop.kind, tuple(body))]


def _transposed(a: Access, i: Var, p: Var, tile) -> bool:
    """A global read whose neighbouring lanes (along a tile row) are neither the same
    element nor neighbours, but are neighbours down a tile column."""
    if a.buffer.level is not Level.GLOBAL or a.index.vars() - {i, p}:
        return False
    rows, cols = tile
    lanes = np.arange(rows * cols, dtype=np.int64)
    at = np.broadcast_to(np.asarray(a.index.evaluate({p: 0, i: lanes}), np.int64), lanes.shape)
    grid = at.reshape(rows, cols)
    along_row = np.diff(grid, axis=1)
    down_column = np.diff(grid, axis=0)
    return (along_row.size > 0 and not np.isin(along_row, (0, 1)).all()
            and down_column.size > 0 and (down_column == 1).all())
