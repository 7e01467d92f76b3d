"""Well-formedness of a GIR program: one checker, run after every pass in the tests.

The rules, each one function below:

- names: a buffer name means one Buffer; params are global buffers, named once.
- params: every global buffer the program touches is a param; nothing writes an input.
- loops: no loop rebinds a variable of an enclosing loop; every index expression
  (accesses, IndexValue operands) uses only variables of enclosing loops.
- registers: a register is read only after a write to it in the same or an
  enclosing scope, earlier in program order (a write inside a loop does not count
  after the loop: each iteration, or each lane, has its own).
- operands: a Compute reads and writes registers only (or Const / IndexValue
  operands), with as many operands as its op takes.
- local: a LOCAL buffer is per core inside a CORES loop; one used outside every CORES
  loop (a row preloaded once for all cores) is only read inside them, never written.
- bounds: every access to a non-input buffer is within it for all values of the
  loop variables (Expr.bounds); a register's index is 0. Inputs may be read at
  negative offsets (negative strides), so they are not checked.
"""

from __future__ import annotations

from ..errors import PowerFusionError
from ..graph.ops import Group
from .expr import Expr
from .ir import (Access, Barrier, Buffer, Collective, Compute, IndexValue, Level, Loop, Parallel,
                 Program, Role, Stmt)


class GIRError(PowerFusionError, AssertionError):
    """A malformed GIR program (or one the interpreter cannot run), naming the statement."""


def check(program: Program) -> None:
    """Raise GIRError at the first rule program breaks; return None if it is well formed."""
    checker = _Checker(program)
    checker.block(program.body, (), frozenset())
    shared = checker.outer_locals & checker.core_writes
    if shared:
        checker.fail(f"local buffer {min(shared)} is used outside the cores loops and "
                     "written inside one (cores would race on it)", None, ())


def _arity(op) -> int:
    if op in Group.TERNARY:
        return 3
    return 2 if op in Group.BINARY else 1


class _Checker:
    def __init__(self, program: Program):
        self.program = program
        self.buffers: dict[str, Buffer] = {}
        self.params = {b.name for b in program.params}
        self.outer_locals: set[str] = set()     # LOCAL buffers used outside CORES loops
        self.core_writes: set[str] = set()      # LOCAL buffers written inside one
        for b in program.params:
            if b.name in self.buffers:
                self.fail(f"param {b.name} is listed twice", None, ())
            if b.level is not Level.GLOBAL:
                self.fail(f"param {b.name} is at level {b.level.value}, not global", None, ())
            self.buffers[b.name] = b

    def fail(self, message: str, stmt: Stmt | None, loops: tuple[Loop, ...]):
        where = f" in `{stmt}`" if stmt is not None else ""
        scope = " / ".join(str(lp) for lp in loops)
        raise GIRError(f"{self.program.name}: {message}{where}"
                       + (f" (inside {scope})" if scope else ""))

    # -- scopes --------------------------------------------------------------------
    def block(self, stmts, loops: tuple[Loop, ...], written: frozenset[str]) -> None:
        """Check stmts in order; `written`: registers written before, in scope."""
        for s in stmts:
            if isinstance(s, Barrier):
                continue
            if isinstance(s, Loop):
                self.loop(s, loops)
                self.block(s.body, loops + (s,), written)
                continue
            if isinstance(s, Compute):
                self.operands(s, loops)
            reads = [s.dst] if isinstance(s, Collective) else [s.src] \
                if not isinstance(s, Compute) else [o for o in s.srcs if isinstance(o, Access)]
            for a in reads:
                self.access(a, s, loops, write=False)
                if a.buffer.level is Level.REGISTER and a.buffer.name not in written:
                    self.fail(f"register {a.buffer.name} is read before any write to it "
                              "in scope", s, loops)
            self.access(s.dst, s, loops, write=True)
            if s.dst.buffer.level is Level.REGISTER:
                written = written | {s.dst.buffer.name}

    def loop(self, s: Loop, loops: tuple[Loop, ...]) -> None:
        if s.var.name in {lp.var.name for lp in loops}:
            self.fail(f"loop variable {s.var.name} is already bound by an enclosing loop",
                      s, loops)

    # -- statements ----------------------------------------------------------------
    def operands(self, s: Compute, loops: tuple[Loop, ...]) -> None:
        if not isinstance(s.dst, Access):
            self.fail("compute destination is not a register", s, loops)
        for o in (s.dst,) + s.srcs:
            if isinstance(o, Access) and o.buffer.level is not Level.REGISTER:
                self.fail(f"compute operand {o} is at level {o.buffer.level.value}; computes "
                          "take registers (load it with a Move)", s, loops)
            if isinstance(o, IndexValue):
                self.index(o.index, s, loops)
        if len(s.srcs) != _arity(s.op):
            name = s.op.name if s.op else "copy"
            self.fail(f"{name} takes {_arity(s.op)} operand(s), got {len(s.srcs)}", s, loops)

    def access(self, a: Access, s: Stmt, loops: tuple[Loop, ...], write: bool) -> None:
        buf = a.buffer
        self.name(buf, s, loops)
        if buf.level is Level.GLOBAL and buf.name not in self.params:
            self.fail(f"global buffer {buf.name} is not a param of the program", s, loops)
        if write and buf.role is Role.INPUT:
            self.fail(f"input {buf.name} is written", s, loops)
        if buf.level is Level.LOCAL:
            if not any(lp.kind is Parallel.CORES for lp in loops):
                self.outer_locals.add(buf.name)
            elif write:
                self.core_writes.add(buf.name)
        self.index(a.index, s, loops)
        self.bounds(a, s, loops)

    def name(self, buf: Buffer, s: Stmt, loops: tuple[Loop, ...]) -> None:
        known = self.buffers.setdefault(buf.name, buf)
        if known != buf:
            self.fail(f"two different buffers are named {buf.name}: "
                      f"{_describe(known)} and {_describe(buf)}", s, loops)

    def index(self, index: Expr, s: Stmt, loops: tuple[Loop, ...]) -> None:
        free = index.vars() - {lp.var for lp in loops}
        if free:
            names = ", ".join(sorted(f"{v.name}(extent {v.extent})" for v in free))
            self.fail(f"index {index} uses {names}, not a variable of an enclosing loop",
                      s, loops)

    def bounds(self, a: Access, s: Stmt, loops: tuple[Loop, ...]) -> None:
        buf = a.buffer
        if buf.level is Level.REGISTER:
            if a.index != Expr(0):
                self.fail(f"register {buf.name} is indexed by {a.index}, not 0", s, loops)
            return
        if buf.role is Role.INPUT and buf.level is Level.GLOBAL:
            return
        lo, hi = a.index.bounds()
        if lo < 0 or hi >= buf.size:
            self.fail(f"{a} reaches elements {lo}..{hi} of {buf.name}, which has "
                      f"{buf.size}", s, loops)


def _describe(buf: Buffer) -> str:
    return f"{buf.dtype}{list(buf.shape)} {buf.level.value} {buf.role.value}"
