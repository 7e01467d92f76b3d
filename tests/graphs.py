"""Small tensor graphs built by hand, for tests that need no tracing and no compiler."""

from __future__ import annotations

from powerfusion.dtypes import DType
from powerfusion.graph.graph import Graph, Node
from powerfusion.graph.ops import Op
from powerfusion.graph.views import contiguous_strides

F32 = DType.float32


def inp(k: int, shape, dtype: DType = F32) -> Node:
    return Node(Op.INPUT, (), tuple(shape), dtype, k)


def const(value, dtype: DType = F32) -> Node:
    return Node(Op.CONST, (), (), dtype, value)


def reduce(op: Op, x: Node, axes) -> Node:
    axes = tuple(axes)
    shape = tuple(1 if k in axes else n for k, n in enumerate(x.shape))
    return Node(op, (x,), shape, x.dtype, axes)


def expand(x: Node, shape) -> Node:
    return Node(Op.EXPAND, (x,), tuple(shape), x.dtype)


def reshape(x: Node, shape) -> Node:
    return Node(Op.RESHAPE, (x,), tuple(shape), x.dtype)


def permute(x: Node, perm) -> Node:
    return Node(Op.PERMUTE, (x,), tuple(x.shape[k] for k in perm), x.dtype, tuple(perm))


def slice_(x: Node, spec) -> Node:
    shape = tuple(len(range(a, b, c)) for a, b, c in spec)
    return Node(Op.SLICE, (x,), shape, x.dtype, tuple(spec))


def concat(xs, axis: int) -> Node:
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    return Node(Op.CONCAT, tuple(xs), tuple(shape), xs[0].dtype, axis)


def ew(op: Op, *srcs: Node, dtype: DType | None = None) -> Node:
    shape = next(s.shape for s in srcs if s.op is not Op.CONST)
    return Node(op, srcs, shape, dtype or next(s.dtype for s in srcs if s.op is not Op.CONST))


def strides_of(graph: Graph):
    return [contiguous_strides(i.shape) for i in graph.inputs]


# -- the composites --------------------------------------------------------------------------
def softmax(m: int, n: int) -> Graph:
    x = inp(0, (m, n))
    mx = reduce(Op.MAX, x, (1,))
    e = ew(Op.EXP, ew(Op.SUB, x, expand(mx, (m, n))))
    s = reduce(Op.SUM, e, (1,))
    return Graph((x,), (ew(Op.DIV, e, expand(s, (m, n))),))


def layernorm(m: int, n: int) -> Graph:
    x, w, b = inp(0, (m, n)), inp(1, (n,)), inp(2, (n,))
    mu = ew(Op.MUL, reduce(Op.SUM, x, (1,)), const(1.0 / n))
    d = ew(Op.SUB, x, expand(mu, (m, n)))
    var = ew(Op.MUL, reduce(Op.SUM, ew(Op.MUL, d, d), (1,)), const(1.0 / n))
    r = ew(Op.RSQRT, ew(Op.ADD, var, const(1e-5)))
    wb = [expand(reshape(t, (1, n)), (m, n)) for t in (w, b)]
    y = ew(Op.ADD, ew(Op.MUL, ew(Op.MUL, d, expand(r, (m, n))), wb[0]), wb[1])
    return Graph((x, w, b), (y,))


def rmsnorm(m: int, n: int, residual: bool = False) -> Graph:
    x, w = inp(0, (m, n)), inp(1, (n,))
    inputs = [x, w]
    h = x
    if residual:
        r = inp(2, (m, n))
        inputs.append(r)
        h = ew(Op.ADD, x, r)
    ms = ew(Op.MUL, reduce(Op.SUM, ew(Op.MUL, h, h), (1,)), const(1.0 / n))
    y = ew(Op.MUL, ew(Op.MUL, h, expand(ew(Op.RSQRT, ew(Op.ADD, ms, const(1e-6))), (m, n))),
           expand(reshape(w, (1, n)), (m, n)))
    return Graph(tuple(inputs), (h, y) if residual else (y,))


def masked_scaled_softmax(m: int, n: int) -> Graph:
    x, mask = inp(0, (m, n)), inp(1, (m, n), DType.bool)
    a = ew(Op.WHERE, mask, ew(Op.MUL, x, const(0.125)), const(float("-inf")), dtype=F32)
    mx = reduce(Op.MAX, a, (1,))
    e = ew(Op.EXP, ew(Op.SUB, a, expand(mx, (m, n))))
    s = reduce(Op.SUM, e, (1,))
    return Graph((x, mask), (ew(Op.DIV, e, expand(s, (m, n))),))


def group_norm(b: int, c: int, h: int, w: int, groups: int) -> Graph:
    x, g = inp(0, (b, c, h, w)), inp(1, (c,))
    k = c // groups * h * w
    xr = reshape(x, (b, groups, k))
    mu = ew(Op.MUL, reduce(Op.SUM, xr, (2,)), const(1.0 / k))
    d = ew(Op.SUB, xr, expand(mu, (b, groups, k)))
    var = ew(Op.MUL, reduce(Op.SUM, ew(Op.MUL, d, d), (2,)), const(1.0 / k))
    y = ew(Op.MUL, d, expand(ew(Op.RSQRT, ew(Op.ADD, var, const(1e-5))), (b, groups, k)))
    y4 = ew(Op.MUL, reshape(y, (b, c, h, w)), expand(reshape(g, (1, c, 1, 1)), (b, c, h, w)))
    return Graph((x, g), (y4,))
