"""Naive lowering: each op of a kernel becomes Move-in, Compute, Move-out.

Deliberately naive, as DESIGN.md asks: every value a node computes goes to its own
global buffer, and every use loads it back. Each full-shape op gets its own inner
loop. The passes (forward, merge, promote, drop, reuse) then remove the round trips;
nothing here tries to be clever, so what the passes buy can be seen and measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..dtypes import DType
from ..graph.graph import Node
from ..graph.ops import REDUCE_COMBINE, Group, Op, reduce_identity
from ..graph.partition import Kernel, reshape_index
from ..graph.views import through_views, strided_offset
from ..search.schedule import Schedule
from .expr import Expr, Var, flatten
from .ir import (Access, Buffer, Compute, Const, IndexValue, Level, Loop, Move, Parallel,
                 Program, Role, Stmt, substitute_var)


@dataclass(frozen=True)
class Storage:
    """Where a node lives in global memory for this kernel: buffer and element strides."""

    buffer: Buffer
    strides: tuple[int, ...]


def lower(kernel: Kernel, schedule: Schedule, name: str,
          storage: dict[int, Storage]) -> Program:
    """GIR for one kernel. `storage` maps id(node) of leaves read and roots written."""
    return _Lowering(kernel, schedule, name, storage).program()


def identity(op: Op, dtype: DType) -> Const:
    """The value a reduction starts from."""
    return Const(reduce_identity(op, dtype), dtype)


def _loop(var: Var, body: list[Stmt]) -> list[Stmt]:
    """An inner loop over var; none at all when it runs once (its index is then 0)."""
    if var.extent == 1:
        return list(substitute_var(tuple(body), var, Expr(0)))
    return [Loop(var, Parallel.SIMD, tuple(body))]


class _Lowering:
    def __init__(self, kernel: Kernel, schedule: Schedule, name: str,
                 storage: dict[int, Storage]):
        self.kernel, self.schedule, self.name, self.storage = kernel, schedule, name, storage
        self.p = Var("p", schedule.outer_extent)
        self.temps: dict[int, Buffer] = {}
        self.count = 0
        self.params: dict[str, Buffer] = {}
        self.roots = {id(r) for r in kernel.roots}

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def reg(self, dtype: DType, prefix: str = "r") -> Access:
        return Access(Buffer(self.fresh(prefix), Level.REGISTER, dtype))

    def program(self) -> Program:
        body: list[Stmt] = []
        if self.schedule.columns:
            body = self.lower_by_columns()
        for n in ([] if self.schedule.columns else self.kernel.nodes):
            body.extend(self.lower_node(n))
        for r in self.kernel.roots:     # roots that are views or leaves: a plain copy
            if r.op in Group.MOVEMENT or r.op in Group.LEAF:
                body.extend(self.lower_copy(r))
        params = tuple(sorted(self.params.values(), key=lambda b: (b.role.value, b.name)))
        return Program(self.name, params, (Loop(self.p, Parallel.CORES, tuple(body)),))

    # -- one node ------------------------------------------------------------------
    def lower_node(self, n: Node) -> list[Stmt]:
        if n.op in Group.REDUCE:
            return self.lower_reduce(n)
        if self.is_full(n):                     # full-size: its own inner loop
            i = Var(self.fresh("i"), self.schedule.inner_extent)
            return _loop(i, self.lower_elementwise(n, self.index(n, i)))
        row = reshape_index(self.row_index(), self.kernel.row_shape, n.shape)
        return self.lower_elementwise(n, row)   # per-row: once per p

    def is_full(self, n: Node) -> bool:
        k = self.kernel
        return math.prod(n.shape) == math.prod(k.shape) and (
            n.op not in Group.REDUCE or k.shape == k.row_shape)

    def index(self, n: Node, i: Var) -> tuple[Expr, ...]:
        """n's index at iteration (p, i): the kernel's index, through a reshape if n's
        shape is another arrangement of the same elements."""
        return reshape_index(self.schedule.domain_index(self.p, i), self.kernel.shape, n.shape)

    def lower_by_columns(self) -> list[Stmt]:
        """Reductions over leading axes: each unit owns `columns` kept elements and
        accumulates each reduction in a LOCAL tile of them while the reduced axes stream
        row by row, then finishes the per-element work. Every read walks memory
        contiguously, and the reductions of one kernel (a backward's bias gradients,
        say) share one pass over the rows and the values upstream of them."""
        reds = [n for n in self.kernel.nodes if n.op in Group.REDUCE]
        sched, width = self.schedule, self.schedule.columns
        t0, t1, t2 = (Var(self.fresh("t"), width) for _ in range(3))
        r = Var(self.fresh("r"), math.prod(self.kernel.shape[k] for k in self.kernel.reduce_axes))
        index = sched.column_index(self.p, t1, r)
        row = sched.column_index(self.p, t2, None)
        init: list[Stmt] = []
        step: list[Stmt] = []
        for n in self.kernel.nodes:                     # what the reductions read
            if n.op not in Group.REDUCE and self.is_full(n):
                step.extend(self.lower_elementwise(n, reshape_index(index, self.kernel.shape,
                                                                    n.shape)))
        finish: list[Stmt] = []
        for red in reds:
            # accumulated in red's compute type row after row, as numpy's x.sum(0) is (its
            # pairwise sum runs along contiguous axes only); a float64 tile would double
            # the on-chip traffic of every row
            tile = Buffer(self.fresh("acc_tile"), Level.LOCAL, red.dtype.compute, (width,))
            start = self.reg(red.dtype)
            init += [Compute(None, start, (identity(red.op, red.dtype),)),
                     Move(Access(tile, Expr.of(t0)), start)]
            loads, value = self.operand(red.srcs[0], index)
            acc, total = self.reg(red.dtype), self.reg(red.dtype)
            step += [*loads, Move(acc, Access(tile, Expr.of(t1))),
                     Compute(REDUCE_COMBINE[red.op], total, (acc, value)),
                     Move(Access(tile, Expr.of(t1)), total)]
            done = self.reg(red.dtype)
            finish += [Move(done, Access(tile, Expr.of(t2))), *self.store(red, done, row)]
        for n in self.kernel.nodes:     # per-element work on the results, and per-row
            if n.op not in Group.REDUCE and not self.is_full(n):   # values beside them
                finish.extend(self.lower_elementwise(
                    n, reshape_index(row, self.kernel.row_shape, n.shape)))
        return [Loop(t0, Parallel.SIMD, tuple(init)),
                Loop(r, Parallel.SERIAL, (Loop(t1, Parallel.SIMD, tuple(step)),)),
                Loop(t2, Parallel.SIMD, tuple(finish))]

    def row_index(self) -> tuple[Expr, ...]:
        return self.schedule.domain_index(self.p, None)

    def lower_elementwise(self, n: Node, index: tuple[Expr, ...]) -> list[Stmt]:
        stmts: list[Stmt] = []
        operands = []
        for s in n.srcs:
            loads, operand = self.operand(s, index)
            stmts.extend(loads)
            operands.append(operand)
        dst = self.reg(n.dtype)
        stmts.append(Compute(n.op, dst, tuple(operands)))
        stmts.extend(self.store(n, dst, index))
        return stmts

    def lower_reduce(self, n: Node) -> list[Stmt]:
        (src,) = n.srcs
        acc = self.reg(n.dtype, "acc")
        i = Var(self.fresh("i"), self.schedule.inner_extent)
        loads, value = self.operand(src, self.schedule.domain_index(self.p, i))
        update = Compute(REDUCE_COMBINE[n.op], acc, (acc, value))
        return [Compute(None, acc, (identity(n.op, n.dtype),)),
                *_loop(i, list(loads) + [update]),
                *self.store(n, acc, self.row_index())]

    def lower_copy(self, root: Node) -> list[Stmt]:
        i = Var(self.fresh("i"), self.schedule.inner_extent)
        index = self.index(root, i)
        loads, value = self.operand(root, index)
        if not isinstance(value, Access):       # a constant or an index: materialise it
            reg = self.reg(root.dtype)
            loads = loads + [Compute(None, reg, (value,))]
            value = reg
        return _loop(i, list(loads) + self.store(root, value, index, temp=False))

    # -- operands and results -------------------------------------------------------
    def operand(self, s: Node, index: tuple[Expr, ...]):
        """(loads, operand) reading node s at its logical index."""
        if s.op is Op.CONST:
            return [], Const(s.arg, s.dtype)
        base, at = through_views(s, index)
        if base.op is Op.IOTA:
            return [], IndexValue(at[base.arg])
        if base.op is Op.CONST:
            return [], Const(base.arg, base.dtype)
        if id(base) in self.temps:
            # a 16-bit intermediate is float32 wherever it lives (register, chip or
            # memory): reading it back does not round, so where the schedule keeps it
            # does not change its value
            buf, offset = self.temps[id(base)], flatten(at, base.shape)
            reg = self.reg(buf.dtype)
        else:
            st = self.storage[id(base)]
            buf, offset = st.buffer, strided_offset(at, st.strides)
            self.params[buf.name] = buf
            reg = self.reg(base.dtype)
        return [Move(reg, Access(buf, offset))], reg

    def store(self, n: Node, value: Access, index: tuple[Expr, ...],
              temp: bool = True) -> list[Stmt]:
        """Write n's value: to its temp (for later uses here) and, for roots, to global."""
        out: list[Stmt] = []
        if temp and n.op not in Group.MOVEMENT:
            buf = Buffer(self.fresh("g"), Level.GLOBAL, n.dtype.compute, n.shape, Role.TEMP)
            self.temps[id(n)] = buf
            self.params[buf.name] = buf
            out.append(Move(Access(buf, flatten(index, n.shape)), value))
        if id(n) in self.roots:
            st = self.storage[id(n)]
            self.params[st.buffer.name] = st.buffer
            out.append(Move(Access(st.buffer, strided_offset(index, st.strides)), value))
        return out
