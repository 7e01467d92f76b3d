"""Alternative computations: rewrites of a canonical graph that the search may pick.

Each rewrite keeps the meaning and changes the number of passes over memory when a
row does not fit on chip:

- online softmax: max and sum-of-exp of a row in one pass, tile by tile, merged by
  rescaling (sum_t s_t * exp(m_t - m)); the row is then read twice, not three times;
- one-pass variance: sum and sum of squares of x - x[0] (shifting by the row's first
  element keeps the subtraction well conditioned), instead of a second pass over
  x - mean;
- split columns: a reduction down many rows (leading axes) as partial results over
  groups of SPLIT_ROWS rows, then a reduction of the partials: more units of work
  run in parallel for a few more bytes (what a GPU needs for a column sum).

A rewrite is a function roots -> roots | None (None: nothing to rewrite).
"""

from __future__ import annotations

from ..dtypes import DType
from .graph import Node
from .ops import Group, Op

TILE_BYTES = 16 * 1024      # one tile of a long row, staged on chip between its passes


def _const(value, dtype: DType) -> Node:
    return Node(Op.CONST, (), (), dtype, value)


def _reduce(op: Op, src: Node, axes: tuple[int, ...]) -> Node:
    shape = tuple(1 if k in axes else n for k, n in enumerate(src.shape))
    return Node(op, (src,), shape, src.dtype, axes)


def _expand(x: Node, shape) -> Node:
    return x if x.shape == shape else Node(Op.EXPAND, (x,), tuple(shape), x.dtype)


def _reshape(x: Node, shape) -> Node:
    return x if x.shape == tuple(shape) else Node(Op.RESHAPE, (x,), tuple(shape), x.dtype)


def _ew(op: Op, *srcs: Node, dtype: DType | None = None) -> Node:
    shape = next((s.shape for s in srcs if s.op is not Op.CONST), ())
    return Node(op, tuple(srcs), shape, dtype or srcs[0].dtype)


def _strip_views(n: Node) -> Node:
    while n.op in Group.MOVEMENT:
        n = n.srcs[0]
    return n


def _substitute(roots: list[Node], mapping: dict[int, Node]) -> list[Node]:
    memo: dict[int, Node] = {}

    def go(n: Node) -> Node:
        if id(n) in mapping:
            return mapping[id(n)]
        if id(n) in memo:
            return memo[id(n)]
        srcs = tuple(go(s) for s in n.srcs)
        out = n if all(a is b for a, b in zip(srcs, n.srcs)) else Node(
            n.op, srcs, n.shape, n.dtype, n.arg)
        memo[id(n)] = out
        return out

    return [go(r) for r in roots]


def _all_nodes(roots: list[Node]) -> list[Node]:
    seen, out, stack = set(), [], list(roots)
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        out.append(n)
        stack.extend(n.srcs)
    return out


def _last_axis_reduction(n: Node) -> bool:
    return (n.op in Group.REDUCE and n.dtype.is_float and len(n.arg) == 1
            and n.arg[0] == len(n.shape) - 1)


def _tile(n: int, itemsize: int) -> int:
    """A tile length dividing n, about TILE_BYTES long; 0 if the row is short."""
    want = TILE_BYTES // itemsize
    if n <= 2 * want:
        return 0
    for t in range(want, max(1, want // 8) - 1, -1):     # not far below the target
        if n % t == 0:
            return t
    return 0


# -- online softmax ----------------------------------------------------------------------
def online_softmax(roots: list[Node]) -> list[Node] | None:
    """Rewrite every (m = max(a), s = sum(exp(a - m))) pair over a long last axis."""
    mapping: dict[int, Node] = {}
    for s in _all_nodes(roots):
        if not (_last_axis_reduction(s) and s.op is Op.SUM):
            continue
        e = s.srcs[0]
        if e.op is not Op.EXP or e.srcs[0].op is not Op.SUB:
            continue
        a, bm = e.srcs[0].srcs
        m = _strip_views(bm)
        if not (m.op is Op.MAX and m.srcs[0] is a and m.arg == s.arg):
            continue
        t = _tile(a.shape[-1], a.dtype.compute.itemsize)
        if not t:
            continue
        m2, s2 = _tiled_max_sum(a, t)
        mapping[id(m)] = m2
        mapping[id(s)] = s2
    return _substitute(roots, mapping) if mapping else None


def _tiled_max_sum(a: Node, t: int) -> tuple[Node, Node]:
    *lead, n = a.shape
    tiles = (*lead, n // t, t)
    a3 = _reshape(a, tiles)
    last = len(tiles) - 1
    mt = _reduce(Op.MAX, a3, (last,))                                # per tile max
    st = _reduce(Op.SUM, _ew(Op.EXP, _ew(Op.SUB, a3, _expand(mt, tiles))), (last,))
    m = _reduce(Op.MAX, mt, (last - 1,))                             # row max
    scale = _ew(Op.EXP, _ew(Op.SUB, mt, _expand(m, mt.shape)))
    empty = _ew(Op.EQ, mt, _const(float("-inf"), mt.dtype), dtype=DType.bool)
    term = _ew(Op.WHERE, empty, _const(0.0, st.dtype), _ew(Op.MUL, st, scale),
               dtype=st.dtype)
    s = _reduce(Op.SUM, term, (last - 1,))
    row = (*lead, 1)
    return _reshape(m, row), _reshape(s, row)


# -- one-pass variance -------------------------------------------------------------------
def one_pass_variance(roots: list[Node]) -> list[Node] | None:
    """sum((a - mean(a))^2) -> sum(t*t) - sum(t)^2 / n with t = a - a[..., :1]."""
    mapping: dict[int, Node] = {}
    for v in _all_nodes(roots):
        if not (_last_axis_reduction(v) and v.op is Op.SUM):
            continue
        sq = v.srcs[0]
        if sq.op is not Op.MUL or sq.srcs[0] is not sq.srcs[1] or sq.srcs[0].op is not Op.SUB:
            continue
        a, bmu = sq.srcs[0].srcs
        if not _is_mean_of(_strip_views(bmu), a, v.arg):
            continue
        n = a.shape[-1]
        if not _tile(n, a.dtype.compute.itemsize):
            continue
        first = Node(Op.SLICE, (a,), (*a.shape[:-1], 1), a.dtype,
                     tuple((0, d, 1) for d in a.shape[:-1]) + ((0, 1, 1),))
        t = _ew(Op.SUB, a, _expand(first, a.shape))
        st = _reduce(Op.SUM, t, v.arg)
        stt = _reduce(Op.SUM, _ew(Op.MUL, t, t), v.arg)
        mapping[id(v)] = _ew(Op.SUB, stt, _ew(Op.MUL, _ew(Op.MUL, st, st),
                                                _const(1.0 / n, st.dtype)))
    return _substitute(roots, mapping) if mapping else None


def _is_mean_of(mu: Node, a: Node, axes) -> bool:
    """mu == sum(a) * (1/n) or sum(a) / n."""
    if mu.op not in (Op.MUL, Op.DIV):
        return False
    red = next((s for s in mu.srcs if s.op is Op.SUM), None)
    return red is not None and red.srcs[0] is a and red.arg == axes


# -- split columns ---------------------------------------------------------------------
SPLIT_ROWS = 256            # rows per partial result


def split_columns(roots: list[Node]) -> list[Node] | None:
    """r = reduce(a) over leading axes of R rows -> reduce(reduce(a') over groups of
    SPLIT_ROWS rows) over the groups, a' = a reshaped to (R/SPLIT_ROWS, SPLIT_ROWS, ...)."""
    mapping: dict[int, Node] = {}
    for r in _all_nodes(roots):
        if r.op not in (Op.SUM, Op.MAX, Op.MIN) or r.dtype.compute is not r.dtype:
            continue
        a, axes = r.srcs[0], r.arg
        lead = len(axes)
        if axes != tuple(range(lead)) or lead == len(a.shape):
            continue
        rows = 1
        for n in a.shape[:lead]:
            rows *= n
        if rows < 16 * SPLIT_ROWS or rows % SPLIT_ROWS:
            continue
        count = rows // SPLIT_ROWS
        partial = _reduce(r.op, _reshape(a, (count, SPLIT_ROWS, *a.shape[lead:])), (1,))
        # the partials as (count, 1, ..., 1, kept): their reduction has r's shape
        mapping[id(r)] = _reduce(r.op, _reshape(partial, (count, *r.shape[1:])), (0,))
    return _substitute(roots, mapping) if mapping else None


REWRITES = {"online softmax": online_softmax, "one-pass variance": one_pass_variance,
            "split columns": split_columns}
