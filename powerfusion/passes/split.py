"""split: a vector loop whose indices divide its variable becomes two loops.

A flattened row often reads a smaller operand through `i // K` or `i % K` (group
norm's per-channel weight is `w[i // HW]`). In a SIMD loop that is an integer divide
and a gather per lane. Writing i = o*K + j, with K the period of those atoms, makes
every index affine in j: the inner loop reads contiguous runs and broadcasts the
rest, and loads that depend only on o leave it (hoist).
"""

from __future__ import annotations

import math

from ..gir.expr import Expr, Var
from ..gir.ir import (Access, Compute, IndexValue, Loop, Parallel, Program, Stmt,
                      map_accesses, walk)
from .hoist import hoist
from .util import fresh_name, map_loops

MIN_INNER = 16          # a shorter inner loop costs more in overhead than it saves


def split_div(program: Program) -> Program:
    names = {lp.var.name for lp, _ in walk(program.body) if isinstance(lp, Loop)}
    body = map_loops(program.body, lambda seq: tuple(_split(s, names) for s in seq))
    return program if body == program.body else hoist(program.with_body(body))


def _split(s: Stmt, names: set[str]) -> Stmt:
    if not isinstance(s, Loop) or s.kind is not Parallel.SIMD \
            or any(isinstance(t, Loop) for t in s.body):
        return s
    i, n = s.var, s.var.extent
    if not any(_tangled(e, i) for e in _indices(s.body)):
        return s
    for k in _divisors(n):
        o, j = Var(fresh_name(i.name + "o", names), n // k), Var(fresh_name(i.name + "i", names), k)
        body = _substitute(s.body, i, Expr.of(o) * k + j)
        if not any(_tangled(e, j) for e in _indices(body)):
            names |= {o.name, j.name}
            return Loop(o, Parallel.SERIAL, (Loop(j, Parallel.SIMD, body),))
    return s


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


def _substitute(stmts: tuple[Stmt, ...], v: Var, e: Expr) -> tuple[Stmt, ...]:
    def fix(a: Access) -> Access:
        return a if v not in a.index.vars() else Access(a.buffer, a.index.substitute({v: e}))

    out = []
    for s in map_accesses(stmts, fix):
        if isinstance(s, Compute) and any(isinstance(o, IndexValue) for o in s.srcs):
            s = Compute(s.op, s.dst, tuple(IndexValue(o.index.substitute({v: e}))
                                           if isinstance(o, IndexValue) else o for o in s.srcs))
        out.append(s)
    return tuple(out)
