"""GIR: buffers at named memory levels, and three primitives over them.

- Loop (the *parallel* primitive): binds an index variable to a parallel level
  (cores, SIMD lanes) or to a sequential loop.
- Move (*data movement*): copies one element region per iteration from one buffer to
  another, possibly across memory levels; a dtype change on the way is a
  widening load or a narrowing store.
- Compute: an instruction on register operands.

Every access names its buffer and an index expression over the enclosing loop
variables, so the bytes each unit touches at each level can be read off the program.
All values are frozen: passes build new programs and share what they do not change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator, Union

from ..dtypes import DType
from ..graph.ops import Op
from .expr import Expr, Var


class Level(enum.Enum):
    """Memory levels, slow to fast. Targets give each a capacity and a bandwidth."""

    GLOBAL = "global"       # the kernel's tensors: DRAM on a CPU, HBM on a GPU
    LOCAL = "local"         # per parallel unit on chip: a core's cache-resident tile
    REGISTER = "register"   # per lane: scalars the instructions operate on


class Parallel(enum.Enum):
    """How a Loop's iterations map to the hardware."""

    CORES = "cores"     # spread over OpenMP threads / thread blocks
    SERIAL = "serial"   # one after another on one unit
    SIMD = "simd"       # vector lanes of one unit


class Role(enum.Enum):
    """What a global buffer is to the caller."""

    INPUT = "input"
    OUTPUT = "output"
    TEMP = "temp"       # scratch the runtime allocates for one kernel launch


@dataclass(frozen=True, slots=True)
class Buffer:
    """Storage at one memory level. Registers have shape ()."""

    name: str
    level: Level
    dtype: DType
    shape: tuple[int, ...] = ()
    role: Role = Role.TEMP

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Access:
    """One element of a buffer: `buffer[index]`, index a flat element offset."""

    buffer: Buffer
    index: Expr = field(default_factory=Expr)

    def __str__(self) -> str:
        if self.buffer.level is Level.REGISTER:
            return self.buffer.name
        return f"{self.buffer.name}[{self.index}]"


@dataclass(frozen=True, slots=True)
class Const:
    """An immediate operand."""

    value: Union[int, float, bool]
    dtype: DType

    def __str__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True, slots=True)
class IndexValue:
    """An index expression used as a data value (int64), e.g. to select a concat piece."""

    index: Expr

    def __str__(self) -> str:
        return f"idx({self.index})"


Operand = Union[Access, Const, IndexValue]


@dataclass(frozen=True, slots=True)
class Move:
    """Data movement: dst <- src, converting dtype if the buffers differ."""

    dst: Access
    src: Access
    stream: bool = False    # a store that bypasses the caches (its row is not read again soon)

    def __str__(self) -> str:
        return (f"move {self.dst} <- {self.src}"
                f"   ({self.src.buffer.level.value} -> {self.dst.buffer.level.value}"
                f"{', streaming' if self.stream else ''})")


@dataclass(frozen=True, slots=True)
class Compute:
    """dst <- op(srcs) on registers. `ASSIGN`-like copies use op=None.

    An accumulation is a Compute whose dst is also its first src, inside a loop,
    with dst declared (initialised) outside it.
    """

    op: Op | None
    dst: Access
    srcs: tuple[Operand, ...]

    @property
    def is_accumulate(self) -> bool:
        return bool(self.srcs) and self.srcs[0] == self.dst

    def __str__(self) -> str:
        name = self.op.name.lower() if self.op else "set"
        return f"compute {self.dst} <- {name}({', '.join(map(str, self.srcs))})"


@dataclass(frozen=True, slots=True)
class Loop:
    """The parallel primitive: run body for var in 0 .. var.extent-1 at a parallel level."""

    var: Var
    kind: Parallel
    body: tuple["Stmt", ...]

    def __str__(self) -> str:
        return f"{self.kind.value} {self.var.name} in 0..{self.var.extent}"


Stmt = Union[Loop, Move, Compute]


@dataclass(frozen=True, slots=True)
class Program:
    """One kernel: its global buffers (inputs, outputs, temps) and its statements."""

    name: str
    params: tuple[Buffer, ...]
    body: tuple[Stmt, ...]

    def with_body(self, body: tuple[Stmt, ...]) -> "Program":
        return self if body == self.body else Program(self.name, self.params, body)

    def __str__(self) -> str:
        return format_program(self)


def walk(stmts: tuple[Stmt, ...], loops: tuple[Loop, ...] = ()
         ) -> Iterator[tuple[Stmt, tuple[Loop, ...]]]:
    """Every statement in program order, with the loops enclosing it (outermost first)."""
    for s in stmts:
        yield s, loops
        if isinstance(s, Loop):
            yield from walk(s.body, loops + (s,))


def accesses(stmt: Stmt) -> tuple[list[Access], list[Access]]:
    """(reads, writes) of one Move or Compute."""
    if isinstance(stmt, Move):
        return [stmt.src], [stmt.dst]
    if isinstance(stmt, Compute):
        return [s for s in stmt.srcs if isinstance(s, Access)], [stmt.dst]
    return [], []


def map_accesses(stmts: tuple[Stmt, ...], fn) -> tuple[Stmt, ...]:
    """Rebuild statements with fn applied to every Access; unchanged parts are shared."""
    out = []
    for s in stmts:
        if isinstance(s, Loop):
            body = map_accesses(s.body, fn)
            out.append(s if body == s.body else Loop(s.var, s.kind, body))
        elif isinstance(s, Move):
            out.append(Move(fn(s.dst), fn(s.src), s.stream))
        else:
            out.append(Compute(s.op, fn(s.dst), tuple(fn(a) if isinstance(a, Access) else a
                                                      for a in s.srcs)))
    return tuple(out)


def substitute_var(stmts: tuple[Stmt, ...], old: Var, new: Expr) -> tuple[Stmt, ...]:
    """Replace a loop variable by an index expression everywhere it appears: accesses and
    index values, in nested loops too."""
    def fix(a: Access) -> Access:
        if old not in a.index.vars():
            return a
        return Access(a.buffer, a.index.substitute({old: new}))

    return _substitute_index_values(map_accesses(stmts, fix), old, new)


def _substitute_index_values(stmts, old: Var, new: Expr):
    out = []
    for s in stmts:
        if isinstance(s, Loop):
            out.append(Loop(s.var, s.kind, _substitute_index_values(s.body, old, new)))
        elif isinstance(s, Compute) and any(isinstance(o, IndexValue) for o in s.srcs):
            srcs = tuple(IndexValue(o.index.substitute({old: new}))
                         if isinstance(o, IndexValue) else o for o in s.srcs)
            out.append(Compute(s.op, s.dst, srcs))
        else:
            out.append(s)
    return tuple(out)


def buffers(program: Program) -> dict[str, Buffer]:
    """Every buffer the program names, params first."""
    found = {b.name: b for b in program.params}
    for s, _ in walk(program.body):
        reads, writes = accesses(s)
        for a in reads + writes:
            found.setdefault(a.buffer.name, a.buffer)
    return found


# -- text: what str(program) prints ------------------------------------------------------
INDENT = "  "


def format_program(program: Program) -> str:
    """GIR as readable text:

        kernel softmax(x: float32[4, 8] global input, y: float32[4, 8] global output)
          local tile: float32[8]
          cores p in 0..4:
            compute m: float32 <- set(-inf)
            simd i in 0..8:
              move r: float32 <- x[8*p + i]   (global -> register)
              compute m: float32 <- maximum(m, r)
            ...

    The header names the kernel and its params (`name: dtype[shape] level role`); LOCAL
    buffers follow, declared in order of first use. A register written by a statement
    shows its dtype there, since the dtype decides rounding. The text is deterministic.
    """
    lines = [f"kernel {program.name}({', '.join(map(_param, program.params))})"]
    for buf in _locals(program):
        lines.append(f"{INDENT}local {buf.name}: {buf.dtype}{list(buf.shape)}")
    _format_block(program.body, 1, lines)
    return "\n".join(lines)


def format_stmt(stmt: Stmt) -> str:
    """One statement on one line (a loop: its header)."""
    if isinstance(stmt, Loop):
        return f"{stmt}:"
    if isinstance(stmt, Move):
        return (f"move {_dst(stmt.dst)} <- {stmt.src}"
                f"   ({stmt.src.buffer.level.value} -> {stmt.dst.buffer.level.value})")
    name = stmt.op.name.lower() if stmt.op else "set"
    return f"compute {_dst(stmt.dst)} <- {name}({', '.join(map(str, stmt.srcs))})"


def _format_block(stmts: tuple[Stmt, ...], depth: int, lines: list[str]) -> None:
    for s in stmts:
        lines.append(INDENT * depth + format_stmt(s))
        if isinstance(s, Loop):
            _format_block(s.body, depth + 1, lines)


def _param(buf: Buffer) -> str:
    return f"{buf.name}: {buf.dtype}{list(buf.shape)} {buf.level.value} {buf.role.value}"


def _dst(access: Access) -> str:
    if access.buffer.level is Level.REGISTER:
        return f"{access}: {access.buffer.dtype}"
    return str(access)


def _locals(program: Program) -> list[Buffer]:
    found: dict[str, Buffer] = {}
    for s, _ in walk(program.body):
        if isinstance(s, (Move, Compute)):
            for a in _operand_accesses(s):
                if a.buffer.level is Level.LOCAL:
                    found.setdefault(a.buffer.name, a.buffer)
    return list(found.values())


def _operand_accesses(s: Move | Compute) -> list[Access]:
    if isinstance(s, Move):
        return [s.src, s.dst]
    return [o for o in s.srcs if isinstance(o, Access)] + [s.dst]
