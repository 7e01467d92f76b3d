"""Integer index expressions: affine forms over loop variables, plus floor-div, mod and clamp.

Every expression is kept in one normal form, `const + sum(coef * atom)`, where an atom
is a loop variable or a div/mod/clamp of another expression. Variables know their
range, so `(i*K + j) // K` simplifies to `i` when `0 <= j < K`: views composed by
reshapes collapse back to plain strides, which is what makes regions affine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np


@dataclass(frozen=True, slots=True)
class Var:
    """A loop index: takes the values 0 .. extent-1."""

    name: str
    extent: int

    def bounds(self) -> tuple[int, int]:
        return 0, self.extent - 1


@dataclass(frozen=True, slots=True)
class Div:
    """Floor division of a non-negative expression by a positive constant."""

    arg: "Expr"
    by: int

    def bounds(self) -> tuple[int, int]:
        lo, hi = self.arg.bounds()
        return lo // self.by, hi // self.by


@dataclass(frozen=True, slots=True)
class Mod:
    """Remainder of a non-negative expression by a positive constant."""

    arg: "Expr"
    by: int

    def bounds(self) -> tuple[int, int]:
        lo, hi = self.arg.bounds()
        if hi - lo < self.by and lo % self.by <= hi % self.by:
            return lo % self.by, hi % self.by
        return 0, self.by - 1


@dataclass(frozen=True, slots=True)
class Clamp:
    """arg limited to lo .. hi; keeps guarded reads in bounds (concatenation)."""

    arg: "Expr"
    lo: int
    hi: int

    def bounds(self) -> tuple[int, int]:
        a, b = self.arg.bounds()
        return min(max(a, self.lo), self.hi), min(max(b, self.lo), self.hi)


Atom = Union[Var, Div, Mod, Clamp]


def _atom_key(atom: Atom) -> str:
    return repr(atom)


@dataclass(frozen=True, slots=True)
class Expr:
    """const + sum(coef * atom), atoms sorted, no zero coefficients."""

    const: int = 0
    terms: tuple[tuple[Atom, int], ...] = ()

    # construction -----------------------------------------------------------------
    @staticmethod
    def of(x: "ExprLike") -> "Expr":
        if isinstance(x, Expr):
            return x
        if isinstance(x, int):
            return Expr(x)
        if isinstance(x, (Var, Div, Mod, Clamp)):
            return Expr(0, ((x, 1),))
        raise TypeError(f"not an index expression: {x!r}")

    @staticmethod
    def _make(const: int, coefs: dict) -> "Expr":
        items = sorted(((a, c) for a, c in coefs.values() if c != 0),
                       key=lambda t: _atom_key(t[0]))
        return _fold_div_mod(Expr(const, tuple(items)))

    # arithmetic -------------------------------------------------------------------
    def __add__(self, other: "ExprLike") -> "Expr":
        o = Expr.of(other)
        coefs = {_atom_key(a): (a, c) for a, c in self.terms}
        for a, c in o.terms:
            k = _atom_key(a)
            coefs[k] = (a, coefs.get(k, (a, 0))[1] + c)
        return Expr._make(self.const + o.const, coefs)

    __radd__ = __add__

    def __neg__(self) -> "Expr":
        return self * -1

    def __sub__(self, other: "ExprLike") -> "Expr":
        return self + (-Expr.of(other))

    def __rsub__(self, other: "ExprLike") -> "Expr":
        return Expr.of(other) - self

    def __mul__(self, k: int) -> "Expr":
        if not isinstance(k, int):
            raise TypeError("index expressions multiply by integer constants only")
        if k == 0:
            return Expr(0)
        return Expr(self.const * k, tuple((a, c * k) for a, c in self.terms))

    __rmul__ = __mul__

    def __floordiv__(self, k: int) -> "Expr":
        assert isinstance(k, int) and k > 0, k
        if k == 1:
            return self
        # (k*q + r) // k == q + r // k exactly, for floor division
        q = {_atom_key(a): (a, c // k) for a, c in self.terms if c % k == 0}
        rest = Expr._make(self.const % k, {_atom_key(a): (a, c) for a, c in self.terms
                                            if c % k != 0})
        base = Expr._make(self.const // k, q)
        lo, hi = rest.bounds()
        if 0 <= lo and hi < k:
            return base
        if rest.is_const():
            return base + rest.const // k
        split = _split_small(rest, k)
        if split is not None:       # (c*q + r) // k == q // (k/c) when c | k, 0 <= r < c
            big, c = split
            return base + big // (k // c)
        return base + Expr.of(Div(rest, k))

    def __mod__(self, k: int) -> "Expr":
        assert isinstance(k, int) and k > 0, k
        if k == 1:
            return Expr(0)
        # (k*q + r) % k == r % k
        rest = Expr._make(self.const % k, {_atom_key(a): (a, c) for a, c in self.terms
                                            if c % k != 0})
        lo, hi = rest.bounds()
        if 0 <= lo and hi < k:
            return rest
        if rest.is_const():
            return Expr(rest.const % k)
        split = _split_small(rest, k)
        if split is not None:       # (c*q + r) % k == c*(q % (k/c)) + r when c | k, 0 <= r < c
            big, c = split
            small = rest - big * c
            return (big % (k // c)) * c + small
        return Expr.of(Mod(rest, k))

    def clamp(self, lo: int, hi: int) -> "Expr":
        a, b = self.bounds()
        if lo <= a and b <= hi:
            return self
        if b < lo:
            return Expr(lo)
        if a > hi:
            return Expr(hi)
        return Expr.of(Clamp(self, lo, hi))

    # queries ----------------------------------------------------------------------
    def is_const(self) -> bool:
        return not self.terms

    def bounds(self) -> tuple[int, int]:
        lo = hi = self.const
        for atom, c in self.terms:
            a, b = atom.bounds()
            lo += min(a * c, b * c)
            hi += max(a * c, b * c)
        return lo, hi

    def vars(self) -> frozenset[Var]:
        out: set[Var] = set()
        for atom, _ in self.terms:
            if isinstance(atom, Var):
                out.add(atom)
            else:
                out |= atom.arg.vars()
        return frozenset(out)

    def runs_along(self, v: Var) -> bool:
        """Is self base + v, with base free of v (consecutive elements as v counts up)?"""
        return self - self.substitute({v: 0}) == Expr.of(v)

    def substitute(self, mapping: dict[Var, "ExprLike"]) -> "Expr":
        """Replace variables by expressions (re-simplifying)."""
        if not (self.vars() & mapping.keys()):
            return self
        out = Expr(self.const)
        for atom, c in self.terms:
            out = out + _subst_atom(atom, mapping) * c
        return out

    def evaluate(self, env: dict):
        """Value under env (Var -> int or numpy integer array)."""
        total = self.const
        for atom, c in self.terms:
            total = total + c * _eval_atom(atom, env)
        return total

    def __str__(self) -> str:
        parts = []
        for atom, c in self.terms:
            s = _atom_str(atom)
            parts.append(s if c == 1 else f"{c}*{s}")
        if self.const or not parts:
            parts.append(str(self.const))
        return " + ".join(parts).replace("+ -", "- ")


ExprLike = Union[Expr, int, Var, Div, Mod, Clamp]


def _split_small(e: Expr, k: int):
    """Write e = c*q + r with c dividing k, c > 1, 0 <= r < c; return (q, c) or None."""
    for c in sorted({math.gcd(coef, k) for _, coef in e.terms}, reverse=True):
        if c <= 1:
            continue
        big = [(a, coef // c) for a, coef in e.terms if coef % c == 0]
        small = Expr._make(e.const, {_atom_key(a): (a, coef) for a, coef in e.terms
                                     if coef % c != 0})
        lo, hi = small.bounds()
        if big and 0 <= lo and hi < c:
            return Expr._make(0, {_atom_key(a): (a, q) for a, q in big}), c
    return None


def _fold_div_mod(e: Expr) -> Expr:
    """k*c*(x // c) + k*(x % c) -> k*x: reshapes that split and re-merge an axis."""
    if len(e.terms) < 2:
        return e
    mods = {(repr(a.arg), a.by): (a, c) for a, c in e.terms if isinstance(a, Mod)}
    for atom, c in e.terms:
        if isinstance(atom, Div) and (repr(atom.arg), atom.by) in mods:
            mod_atom, k = mods[(repr(atom.arg), atom.by)]
            if c == k * atom.by:
                rest = Expr(e.const, tuple(t for t in e.terms
                                           if t[0] is not atom and t[0] is not mod_atom))
                return rest + atom.arg * k  # re-enters _make, so folds repeat
    return e


def _subst_atom(atom: Atom, mapping) -> Expr:
    if isinstance(atom, Var):
        return Expr.of(mapping.get(atom, atom))
    inner = atom.arg.substitute(mapping)
    if isinstance(atom, Div):
        return inner // atom.by
    if isinstance(atom, Mod):
        return inner % atom.by
    return inner.clamp(atom.lo, atom.hi)


def _eval_atom(atom: Atom, env):
    if isinstance(atom, Var):
        return env[atom]
    v = atom.arg.evaluate(env)
    if isinstance(atom, Div):
        return v // atom.by
    if isinstance(atom, Mod):
        return v % atom.by
    return np.clip(v, atom.lo, atom.hi) if not isinstance(v, int) else min(max(v, atom.lo),
                                                                           atom.hi)


def _arg_str(e: Expr) -> str:
    return f"({e})" if len(e.terms) + bool(e.const) > 1 else str(e)


def _atom_str(atom: Atom) -> str:
    if isinstance(atom, Var):
        return atom.name
    if isinstance(atom, Div):
        return f"({_arg_str(atom.arg)} // {atom.by})"
    if isinstance(atom, Mod):
        return f"({_arg_str(atom.arg)} % {atom.by})"
    return f"clamp({atom.arg}, {atom.lo}, {atom.hi})"


def unflatten(flat: Expr, shape: tuple[int, ...]) -> tuple[Expr, ...]:
    """Row-major multi-index of a flat index into shape."""
    out = []
    rest = flat
    for n in reversed(shape):
        out.append(rest % n)
        rest = rest // n
    return tuple(reversed(out))


def flatten(index: tuple[Expr, ...], shape: tuple[int, ...]) -> Expr:
    """Row-major flat index of a multi-index into shape."""
    flat = Expr(0)
    for e, n in zip(index, shape):
        flat = flat * n + e
    return flat
