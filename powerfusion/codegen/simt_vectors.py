"""Which accesses of a SIMD loop the SIMT printer moves as whole vector chunks.

(The launch, the chunk included, is decided before by passes/simt/launch.py and the
barriers by passes/simt/sync.py; both are recorded in the program.)
"""

from __future__ import annotations

from ..gir.expr import Div, Expr, Mod, Var
from ..gir.ir import Level, Loop, Move, accesses, walk


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


