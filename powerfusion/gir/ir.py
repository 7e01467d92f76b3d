"""GIR: buffers at named memory levels, and three primitives over them.

- Loop (the *parallel* primitive): binds an index variable to a parallel level
  (cores, SIMD lanes) or to a sequential loop.
- Move (*data movement*): copies one element region per iteration from one buffer to
  another, possibly across memory levels; a dtype change on the way is a
  widening load or a narrowing store.
- Compute: an instruction on register operands.
- Barrier (SIMT only, placed by passes/simt/sync.py): threads of a block wait for each
  other, so memory one wrote is seen by the others.
- Collective (SIMT only, placed by passes/simt/collectives.py): the threads of a group
  combine their partials of a register.

Every access names its buffer and an index expression over the enclosing loop
variables, so the bytes each unit touches at each level can be read off the program.
All values are frozen: passes build new programs and share what they do not change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator, Union

from ..dtypes import DType
from ..graph.ops import ACCUMULATES, Op
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


@dataclass(frozen=True, slots=True)
class Barrier:
    """Synchronisation (SIMT): every thread of the block, or of its thread block cluster,
    waits here for the others, and what each wrote before it is seen by all after it.
    Placed by passes/simt/sync.py where one thread reads or overwrites an element of
    shared memory another thread touched since the last barrier."""

    def __str__(self) -> str:
        return "barrier"


@dataclass(frozen=True, slots=True)
class Collective:
    """A group-scope reduction (SIMT), right after the SIMD loop whose threads each kept a
    partial of register `dst` (every thread's partial starts from op's identity): after
    it every thread of the group holds op over the partials, combined with the value dst
    had before the loop. scope: the threads that combine, "block", "lanes" (a warp
    sharing its block with other rows) or "cluster" (a thread block cluster's blocks).
    Placed by passes/simt/collectives.py; it synchronises the threads it combines."""

    op: Op
    dst: Access
    scope: str = "block"

    def __str__(self) -> str:
        return f"collective {self.dst} <- {self.op.name.lower()} over the {self.scope}"


Stmt = Union[Loop, Move, Compute, Barrier, Collective]


@dataclass(frozen=True, slots=True)
class PrivateRow:
    """A LOCAL row every thread of a SIMT block holds its own part of (it reads back
    only what it wrote): `per_thread` elements each, the first `in_registers` of them in
    registers and the rest in its slots of `rest`, an array in shared memory."""

    buffer: Buffer
    per_thread: int
    in_registers: int
    rest: Buffer | None = None

    @property
    def name(self) -> str:
        return self.buffer.name


@dataclass(frozen=True, slots=True)
class Launch:
    """How a program maps onto a SIMT device, decided once from the Target by
    passes/simt/launch.py: the cost model, the fit check, the printer and the runtime
    read it, none re-derive it.

    `block` threads per block; a SIMD loop gives thread t the elements of chunk
    (i / chunk) % lanes. `cluster` blocks share each parallel unit (a row) through a
    thread block cluster, or `rows` units share each block (a warp each). LOCAL buffers
    live either as private rows or whole in shared memory at a byte offset."""

    block: int
    chunk: int
    cluster: int = 1
    rows: int = 1
    blocks: int = 1                 # blocks with work: units spread, or 1 (see serial)
    serial: str = ""                # why one block runs every unit ("" when they spread)
    index_bits: int = 32            # every index expression fits this signed integer
    private: tuple[PrivateRow, ...] = ()
    shared: tuple[tuple[Buffer, int], ...] = ()     # (array, byte offset) per block
    shared_bytes: int = 0
    shared_room: int | None = None  # the shared memory a block has (None: unbounded)

    @property
    def lanes(self) -> int:
        """Threads that share one row: what the SIMD loops spread over."""
        return self.block * self.cluster // self.rows

    @property
    def fits(self) -> bool:
        """Does the block's shared memory hold every array the launch puts there?"""
        return self.shared_room is None or self.shared_bytes <= self.shared_room

    def private_row(self, name: str) -> PrivateRow | None:
        return next((r for r in self.private if r.name == name), None)

    def shares(self, buf: Buffer) -> bool:
        """Can other threads of the block touch buf? LOCAL arrays but private rows (each
        thread holds its own part), and non-input global buffers."""
        if buf.level is Level.LOCAL:
            return self.private_row(buf.name) is None
        return buf.level is Level.GLOBAL and buf.role is not Role.INPUT


@dataclass(frozen=True, slots=True)
class CpuLaunch:
    """How a CPU kernel's parallel loop runs, set from its schedule (search/space.py): the
    printer writes it into the OpenMP pragmas and the module's vector width. 0 in a
    field: the default (every thread, one contiguous share each, the build's width)."""

    threads: int = 0        # OpenMP threads of the parallel loop
    chunk: int = 0          # parallel iterations a thread takes per grab (dynamic schedule)
    vector_bits: int = 0    # the vector width gcc prefers for the kernel


@dataclass(frozen=True, slots=True)
class Program:
    """One kernel: its global buffers (inputs, outputs, temps) and its statements; for a
    SIMT target, also its launch (None until passes/simt/launch.py decides it); for a
    CPU, how its parallel loop runs."""

    name: str
    params: tuple[Buffer, ...]
    body: tuple[Stmt, ...]
    launch: Launch | None = None
    cpu: CpuLaunch = CpuLaunch()

    def with_body(self, body: tuple[Stmt, ...]) -> "Program":
        return self if body == self.body else Program(self.name, self.params, body,
                                                      self.launch, self.cpu)

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
    """(reads, writes) of one Move, Compute or Collective."""
    if isinstance(stmt, Move):
        return [stmt.src], [stmt.dst]
    if isinstance(stmt, Collective):
        return [stmt.dst], [stmt.dst]
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
        elif isinstance(s, Barrier):
            out.append(s)
        elif isinstance(s, Collective):
            out.append(Collective(s.op, fn(s.dst), s.scope))
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


def accumulators(loop: Loop, written) -> dict[str, Compute]:
    """The registers a SIMD loop accumulates into (r = op(r, x), op with an identity),
    among `written` (those set before the loop), that nothing else in the loop writes:
    on a SIMT target each thread keeps a partial of each, and a block reduction after
    the loop combines them (a collective, with barriers of its own). name -> the
    accumulating Compute."""
    found: dict[str, Compute] = {}
    other: set[str] = set()
    for s, _ in walk(loop.body):
        if isinstance(s, Compute) and s.is_accumulate and s.op in ACCUMULATES:
            found[s.dst.buffer.name] = s
        elif isinstance(s, (Move, Compute)):
            other.add(s.dst.buffer.name)
    return {name: found[name] for name in sorted(found) if name not in other and name in written}


def collectives_after(body: tuple[Stmt, ...]) -> dict[int, tuple[Collective, ...]]:
    """id(SIMD loop) -> the Collectives right after it, which combine its threads'
    partials."""
    out: dict[int, tuple[Collective, ...]] = {}

    def visit(stmts) -> None:
        for k, s in enumerate(stmts):
            if isinstance(s, Loop):
                if s.kind is Parallel.SIMD:
                    following = []
                    for t in stmts[k + 1:]:
                        if not isinstance(t, Collective):
                            break
                        following.append(t)
                    out[id(s)] = tuple(following)
                visit(s.body)

    visit(body)
    return out


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

    The header names the kernel and its params (`name: dtype[shape] level role`); a SIMT
    program's launch follows (format_launch), then its LOCAL buffers, declared in order of first use. A register written by a statement
    shows its dtype there, since the dtype decides rounding. The text is deterministic.
    """
    lines = [f"kernel {program.name}({', '.join(map(_param, program.params))})"]
    if program.launch is not None:
        lines += [INDENT + line for line in format_launch(program.launch)]
    for buf in _locals(program):
        lines.append(f"{INDENT}local {buf.name}: {buf.dtype}{list(buf.shape)}")
    _format_block(program.body, 1, lines)
    return "\n".join(lines)


def format_launch(launch: Launch) -> list[str]:
    """A SIMT launch in a few lines: the block, how units share it, where LOCAL lives."""
    unit = (f", a unit spread over a cluster of {launch.cluster} blocks" if launch.cluster > 1
            else f", {launch.rows} units per block" if launch.rows > 1 else "")
    lines = [f"launch {launch.blocks} blocks of {launch.block} threads{unit}: "
             f"{launch.lanes} lanes per unit, chunks of {launch.chunk}, "
             f"int{launch.index_bits} indices"
             + (f" (one block runs every unit: {launch.serial})" if launch.serial else "")]
    for r in launch.private:
        where = f"{r.in_registers} in registers" + (
            f", {r.per_thread - r.in_registers} in shared {r.rest.name}" if r.rest else "")
        lines.append(f"  private row {r.name}: {r.per_thread} per thread ({where})")
    for buf, at in launch.shared:
        lines.append(f"  shared {buf.name} at byte {at}")
    if launch.shared:
        room = "" if launch.shared_room is None else f" of {launch.shared_room:,}"
        lines.append(f"  shared memory {launch.shared_bytes:,} B{room} per block")
    return lines


def format_stmt(stmt: Stmt) -> str:
    """One statement on one line (a loop: its header)."""
    if isinstance(stmt, Loop):
        return f"{stmt}:"
    if isinstance(stmt, (Barrier, Collective)):
        return str(stmt)
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
