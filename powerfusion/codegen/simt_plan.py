"""What the SIMT printer decides while it prints: barrier placement and vector accesses.

(The launch is decided before, by passes/simt/launch.py, and recorded in the program.)

Barriers: a `Use` is one access to memory other threads of a block can see, with the
thread that makes it: ("lane", index) inside a SIMD loop (iteration i runs on thread
(i / chunk) % BLOCK, so an equal index in loops of equal extent is the same thread), ("one",) for
a row-level store (thread 0), ("all",) for a row-level read, ("any",) when unknown.
Two uses conflict when one writes and another thread may be the other's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedError
from ..gir.expr import Div, Expr, Mod, Var
from ..gir.ir import Level, Loop, Move, accesses, walk


# -- barriers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Use:
    buffer: str
    who: tuple          # ("lane", index) | ("one",) thread 0 | ("all",) | ("any",)
    write: bool


def conflict(a: Use, b: Use) -> bool:
    if a.buffer != b.buffer or not (a.write or b.write):
        return False
    return not (a.who == b.who and a.who[0] in ("lane", "one"))


class Hazards:
    """Shared accesses since the last barrier."""

    def __init__(self):
        self.uses: list[Use] = []

    def conflicts(self, uses: list[Use]) -> bool:
        return any(conflict(a, b) for a in uses for b in self.uses)

    def add(self, uses: list[Use]) -> None:
        self.uses += [u for u in uses if u not in self.uses]

    def clear(self) -> None:
        self.uses = []


def check_lanes(uses: list[Use], loop: Loop) -> None:
    """Inside one SIMD loop, threads run side by side: no element may pass between them."""
    for k, a in enumerate(uses):
        if a.write and a.who[0] != "lane":
            raise UnsupportedError(
                f"SIMT codegen: SIMD loop {loop.var.name} writes {a.buffer} at an element "
                "that does not follow the loop index; several threads would store it")
        for b in uses[k + 1:]:
            if conflict(a, b):
                raise UnsupportedError(
                    f"SIMT codegen: SIMD loop {loop.var.name} passes values between its "
                    f"iterations through {a.buffer}; its threads run side by side")


# -- vector chunks ---------------------------------------------------------------------------
def vector_accesses(loop: Loop, chunk: int) -> set[tuple[str, Expr]]:
    """(buffer, index) of the loop's top-level Moves that can move a whole chunk at once:
    global or local memory, unit stride in the loop variable, chunk-aligned otherwise,
    and a buffer the loop only reads or only writes (loads go first, stores last)."""
    if chunk == 1 or loop.var.extent % chunk:
        return set()
    reads, writes = set(), set()
    for s, _ in walk(loop.body):
        r, w = accesses(s)
        reads |= {a.buffer.name for a in r}
        writes |= {a.buffer.name for a in w}
    out = set()
    for s in loop.body:
        if not isinstance(s, Move):
            continue
        for a, other_way in ((s.src, writes), (s.dst, reads)):
            if a.buffer.level is not Level.REGISTER and a.buffer.name not in other_way \
                    and _chunk_aligned(a.index, loop.var, chunk):
                out.add((a.buffer.name, a.index))
    return out


def _chunk_aligned(index: Expr, var: Var, chunk: int) -> bool:
    """Is index, over a chunk-aligned run of `chunk` values of var, one aligned run of
    consecutive elements? The run moves with var (or var % k), everything else stays:
    other variables, and var // k, times multiples of the chunk. With k a multiple of
    the chunk, var // k is fixed and var % k consecutive within the run (a transpose
    tile's column, a row broadcast w[i % N])."""
    if index.const % chunk:
        return False
    seen = False
    for atom, c in index.terms:
        whole = isinstance(atom, (Div, Mod)) and atom.arg == Expr.of(var) \
            and atom.by % chunk == 0
        if isinstance(atom, Div) and whole:
            if c % chunk:
                return False
        elif atom == var or (isinstance(atom, Mod) and whole):
            if seen or c != 1:
                return False
            seen = True
        elif not isinstance(atom, Var):     # p // 2 and the like: uniform over the loop
            if var in atom.arg.vars() or c % chunk:
                return False
        elif c % chunk:
            return False
    return seen


