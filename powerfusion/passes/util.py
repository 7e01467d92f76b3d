"""What the passes share: read/write sets of statements and register renaming."""

from __future__ import annotations

from dataclasses import dataclass

from ..gir.expr import Expr, Var
from ..gir.ir import (Access, Compute, Level, Loop, Move, Parallel, Stmt, accesses, buffers,
                      map_accesses, substitute_var, walk)


@dataclass(frozen=True)
class Effects:
    """Registers and memory buffers a statement (with everything inside it) reads and writes."""

    reg_reads: frozenset[str]
    reg_writes: frozenset[str]
    mem_reads: frozenset[str]
    mem_writes: frozenset[str]

    def depends_on(self, earlier: "Effects") -> bool:
        """Must self stay after `earlier`? (read-after-write, write-after-read/write)"""
        return bool(self.reg_reads & earlier.reg_writes or self.reg_writes & earlier.reg_reads
                    or self.reg_writes & earlier.reg_writes
                    or self.mem_reads & earlier.mem_writes
                    or self.mem_writes & earlier.mem_reads
                    or self.mem_writes & earlier.mem_writes)


def effects(stmt: Stmt) -> Effects:
    rr, rw, mr, mw = set(), set(), set(), set()
    for s, _ in walk((stmt,)):
        reads, writes = accesses(s)
        for a in reads:
            (rr if a.buffer.level is Level.REGISTER else mr).add(a.buffer.name)
        for a in writes:
            (rw if a.buffer.level is Level.REGISTER else mw).add(a.buffer.name)
    return Effects(frozenset(rr), frozenset(rw), frozenset(mr), frozenset(mw))


def rename_registers(stmts: tuple[Stmt, ...], mapping: dict[str, Access]) -> tuple[Stmt, ...]:
    """Replace reads and writes of registers by name."""
    if not mapping:
        return stmts
    return map_accesses(stmts, lambda a: mapping.get(a.buffer.name, a)
                        if a.buffer.level is Level.REGISTER else a)


def rename_var(stmts: tuple[Stmt, ...], old: Var, new: Var) -> tuple[Stmt, ...]:
    """Replace a loop variable by another in every index expression."""
    return substitute_var(stmts, old, Expr.of(new))


def register_reads(stmts: tuple[Stmt, ...]) -> dict[str, int]:
    """How often each register is read, not counting an accumulation reading itself."""
    counts: dict[str, int] = {}
    for s, _ in walk(stmts):
        if isinstance(s, (Move, Compute)):
            reads, _ = accesses(s)
            for a in reads:
                if a.buffer.level is Level.REGISTER and not (
                        isinstance(s, Compute) and s.is_accumulate and a == s.dst):
                    counts[a.buffer.name] = counts.get(a.buffer.name, 0) + 1
    return counts


def memory_reads(stmts: tuple[Stmt, ...]) -> set[str]:
    out = set()
    for s, _ in walk(stmts):
        reads, _ = accesses(s)
        out |= {a.buffer.name for a in reads if a.buffer.level is not Level.REGISTER}
    return out


def map_loops(stmts: tuple[Stmt, ...], fn) -> tuple[Stmt, ...]:
    """Apply fn to every statement sequence (the top level and each loop body), bottom up."""
    out = []
    for s in stmts:
        if isinstance(s, Loop):
            body = map_loops(s.body, fn)
            out.append(s if body == s.body else Loop(s.var, s.kind, body))
        else:
            out.append(s)
    new = fn(tuple(out))
    return tuple(new)


def split_region(index, p: Var):
    """index = base(p) + local(other vars), with local >= 0: each parallel unit's region.

    Returns (base, local) or None when p is tangled with other variables.
    """
    local = index.substitute({p: 0})
    base = index - local
    if base.vars() - {p} or p in local.vars() or local.bounds()[0] < 0:
        return None
    return base, local


def local_bytes_in_use(stmts: tuple[Stmt, ...]) -> int:
    seen = {}
    for s, _ in walk(stmts):
        reads, writes = accesses(s)
        for a in reads + writes:
            if a.buffer.level is Level.LOCAL:
                seen[a.buffer.name] = a.buffer.nbytes
    return sum(seen.values())


def cores_loop(program) -> Loop | None:
    """The program's parallel loop, when its body is exactly one (as lowering makes it)."""
    if len(program.body) == 1 and isinstance(program.body[0], Loop) \
            and program.body[0].kind is Parallel.CORES:
        return program.body[0]
    return None


def taken_names(program) -> set[str]:
    """Every buffer and loop-variable name a program uses (what fresh_name must avoid)."""
    return set(buffers(program)) | {s.var.name for s, _ in walk(program.body)
                                    if isinstance(s, Loop)}


def fresh_name(base: str, taken: set[str]) -> str:
    """base, or base1, base2, ...: the first not in `taken`, which then holds it too."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}{k}"
    taken.add(name)
    return name
