"""split: a vector loop whose indices divide or clamp its variable becomes plain loops.

A flattened row often reads a smaller operand through `i // K` or `i % K` (group
norm's per-channel weight is `w[i // HW]`). In a SIMD loop that is an integer divide
and a gather per lane. Writing i = o*K + j, with K the period of those atoms, makes
every index affine in j: the inner loop reads contiguous runs and broadcasts the
rest, and loads that depend only on o leave it (hoist).

A concatenation reads each part through a clamped index (rotary embedding's
rotate_half: `x[clamp(j, 0, 63) + 64]` for j < 64, `x[clamp(j - 64, 0, 63)]` past it).
The vector loop is then cut where the clamps start and stop biting: in each piece
every clamp is the identity or a constant, the index is affine again, and the
select between the parts is decided by the piece (the C compiler folds it).
"""

from __future__ import annotations

import math

from ..gir.expr import Clamp, Expr, Var
from dataclasses import replace

from ..gir.ir import (Access, Compute, IndexValue, Level, Loop, Parallel, Program, Stmt,
                      accesses, substitute_var, walk)
from .hoist import hoist
from .util import fresh_name, map_loops, rename_registers

MIN_INNER = 16          # a shorter inner loop costs more in overhead than it saves
MIN_PIECE = 8           # nor is a piece of a loop cut at clamps worth a loop of its own


def split_div(program: Program) -> Program:
    names = {lp.var.name for lp, _ in walk(program.body) if isinstance(lp, Loop)}
    names |= {a.buffer.name for s, _ in walk(program.body) if not isinstance(s, Loop)
              for a in (*accesses(s)[0], s.dst)}
    body = map_loops(program.body,
                     lambda seq: tuple(t for s in seq for t in _split(s, names)))
    return program if body == program.body else hoist(program.with_body(body))


def _split(s: Stmt, names: set[str]) -> tuple[Stmt, ...]:
    if not isinstance(s, Loop) or s.kind is not Parallel.SIMD \
            or any(isinstance(t, Loop) for t in s.body):
        return (s,)
    i, n = s.var, s.var.extent
    if not any(_tangled(e, i) for e in _indices(s.body)):
        return (s,)
    pieces = _pieces(s.body, i, names)
    if pieces is not None:
        return pieces
    for k in _divisors(n):
        o, j = Var(fresh_name(i.name + "o", names), n // k), Var(fresh_name(i.name + "i", names), k)
        pieces = _pieces(substitute_var(s.body, i, Expr.of(o) * k + j), j, names)
        if pieces is not None:
            return (Loop(o, Parallel.SERIAL, pieces),)
    return (s,)


def _pieces(body: tuple[Stmt, ...], j: Var, names: set[str]) -> tuple[Stmt, ...] | None:
    """body as SIMD loops over j, all indices affine in j: one loop if they are, else
    one per range of j between the points where a clamp of j starts or stops biting
    (a piece whose clamps read a part through a division, a concatenation of
    [.., heads, dim] tensors along their flattened last axes, is split by a divisor
    in turn); None if that does not untangle them."""
    if not any(_tangled(e, j) for e in _indices(body)):
        return (Loop(j, Parallel.SIMD, body),)
    cuts = _clamp_edges(body, j)
    if not cuts:
        return None
    bounds = [0, *cuts, j.extent]
    if any(b - a < MIN_PIECE for a, b in zip(bounds, bounds[1:])):
        return None
    loops: list[Stmt] = []
    for a, b in zip(bounds, bounds[1:]):
        piece = Var(fresh_name(f"{j.name}_{a}", names), b - a)
        sub = substitute_var(body, j, Expr.of(piece) + a)
        if b < j.extent:
            sub = _private_registers(sub, names)
        loop = Loop(piece, Parallel.SIMD, sub)
        if any(_tangled(e, piece) for e in _indices(sub)):
            split = _split(loop, names)
            if split == (loop,):
                return None
            loops.extend(split)
        else:
            loops.append(loop)
    return tuple(loops)


def _private_registers(body: tuple[Stmt, ...], names: set[str]) -> tuple[Stmt, ...]:
    """body with the registers it defines (written before any read, not accumulated)
    renamed afresh. The pieces of a cut loop are copies of one body: hoisting a value
    that one piece reads from a constant place would otherwise put a register defined
    outside that another piece writes per lane, and a vector loop that updates an outer
    register stays scalar. The last piece keeps the names: what the loop leaves in a
    register after it is the last iteration's."""
    mapping: dict[str, Access] = {}
    read: set[str] = set()
    for s in body:                       # a vector loop's body: no inner loops
        reads, _ = accesses(s)
        read.update(a.buffer.name for a in reads if a.buffer.level is Level.REGISTER)
        dst = s.dst.buffer
        if dst.level is Level.REGISTER and dst.name not in read and dst.name not in mapping \
                and not (isinstance(s, Compute) and s.is_accumulate):
            mapping[dst.name] = Access(replace(dst, name=fresh_name(dst.name + "_", names)))
    return rename_registers(body, mapping)


def _clamp_edges(body: tuple[Stmt, ...], j: Var) -> list[int] | None:
    """Values of j in (0, extent) where some clamp(±j + c, lo, hi), at any depth of an
    index, starts or stops clamping; None if j is tangled in another kind of clamp."""
    edges: set[int] = set()

    def visit(e: Expr) -> bool:
        for atom, _ in e.terms:
            if isinstance(atom, Var) or j not in atom.arg.vars():
                continue
            if not isinstance(atom, Clamp):
                if not visit(atom.arg):         # a division or remainder: its argument
                    return False
                continue
            c = dict((a, k) for a, k in atom.arg.terms if isinstance(a, Var)).get(j)
            rest = atom.arg - Expr.of(j) * c if c is not None else None
            if c not in (1, -1) or rest.vars():
                return False
            r = rest.const       # arg = c*j + r: within [lo, hi] for j in [first, last]
            first, last = (atom.lo - r, atom.hi - r) if c == 1 else (r - atom.hi, r - atom.lo)
            edges.update((first, last + 1))
        return True

    if not all(visit(e) for e in _indices(body)):
        return None
    return sorted(x for x in edges if 0 < x < j.extent)


def _divisors(n: int) -> list[int]:
    """Divisors of n in MIN_INNER .. n-1, largest first (longest inner loop)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    found = {d for s in small for d in (s, n // s) if MIN_INNER <= d < n}
    return sorted(found, reverse=True)


def _tangled(e: Expr, v: Var) -> bool:
    """Does v appear in e other than as a plain affine term?"""
    return any(not isinstance(atom, Var) and v in atom.arg.vars() for atom, _ in e.terms)


def _indices(stmts: tuple[Stmt, ...]):
    for s, _ in walk(stmts):
        if isinstance(s, Loop):
            continue
        yield s.dst.index
        for o in (s.srcs if isinstance(s, Compute) else (s.src,)):
            if isinstance(o, (Access, IndexValue)):
                yield o.index


