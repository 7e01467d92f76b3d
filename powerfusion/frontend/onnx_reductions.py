"""ONNX reductions, softmaxes and normalisations as PowerFusion graph nodes.

Each is a composition of `build` reductions and element-wise ops; 16-bit floats are
computed in float32 (ONNX's stash_type, 1 by default) and rounded once at the end.
"""

from __future__ import annotations

import math

from ..dtypes import DType
from ..errors import ShapeError, UnsupportedError
from ..graph.graph import Node
from ..graph.ops import Op
from . import build
from .onnx_ops import ELEM_DTYPES, NodeInfo, OpContext, rule


def _axes_of(ctx: OpContext, rank: int) -> tuple[int, ...] | None:
    """The reduction's axes: input 1 (ReduceSum since opset 13, all since 18) or the
    attribute; None when none are given."""
    if ctx.has(1):
        axes = [int(a) for a in ctx.static(1).reshape(-1)]
    else:
        axes = ctx.attr("axes")
    if axes is None or len(axes) == 0:
        return None
    shape = ctx.node(0).shape
    return build.normalize_axes(tuple(axes), shape) if rank else ()


def _filled(shape: tuple[int, ...], value, dtype: DType) -> Node:
    """A tensor of one value: where(index >= 0, value, value) over an index."""
    index = Node(Op.IOTA, (), shape or (1,), DType.int64, 0)
    v = build.const(value, dtype)
    out = build.where(build.compare(Op.GE, index, 0), v, v)
    return out if shape else build.reshape(out, ())


def _empty_value(op: Op, post, mean: bool, dtype: DType):
    """What ONNX's reductions give over no elements."""
    if mean:
        return math.nan
    if op is Op.SUM:
        return -math.inf if post is not None and post.__name__ == "_log" else 0
    if dtype.is_bool:
        return op is Op.MIN                      # any() of nothing is False, all() True
    big = math.inf if dtype.is_float else (2**31 - 1 if dtype is DType.int32 else 2**63 - 1)
    return -big - (0 if dtype.is_float else 1) if op is Op.MAX else big


def _reduced_axes(ctx: OpContext, x: Node) -> tuple[tuple[int, ...], bool]:
    axes = _axes_of(ctx, len(x.shape))
    if axes is None:
        axes = () if ctx.attr("noop_with_empty_axes", 0) else tuple(range(len(x.shape)))
    return axes, bool(ctx.attr("keepdims", 1))


def _reduction(pre, op: Op, post=None, mean: bool = False):
    def handler(ctx: OpContext):
        x = ctx.node(0)
        axes, keep = _reduced_axes(ctx, x)
        if any(x.shape[a] == 0 for a in axes):
            shape = tuple(1 if k in axes else n for k, n in enumerate(x.shape) if keep or
                          k not in axes)
            return [_filled(shape, _empty_value(op, post, mean, x.dtype), x.dtype)]
        v = pre(x)
        out = build.mean(v, axes, keep) if mean else build.reduce(op, v, axes, keep)
        return [build.cast(post(out) if post else out, x.dtype)]
    return handler


def _float_reduction(info: NodeInfo) -> str | None:
    d = info.in_dtypes[0] if info.in_dtypes else None
    return None if d is None or d.is_float else f"{info.op_type} of {d} (claimed on floats)"


def _numeric_reduction(info: NodeInfo) -> str | None:
    d = info.in_dtypes[0] if info.in_dtypes else None
    return f"{info.op_type} of bool" if d is DType.bool else None


def _identity(x: Node) -> Node:
    return x


def _square(x: Node) -> Node:
    return build.binary(Op.MUL, x, x)


rule("ReduceSum", static=[1], check=_numeric_reduction)(_reduction(_identity, Op.SUM))
rule("ReduceMax", static=[1])(_reduction(_identity, Op.MAX))     # bool too: any()
rule("ReduceMin", static=[1])(_reduction(_identity, Op.MIN))     # bool too: all()
rule("ReduceMean", static=[1], check=_float_reduction)(
    _reduction(_identity, Op.SUM, mean=True))
rule("ReduceSumSquare", static=[1], check=_numeric_reduction)(_reduction(_square, Op.SUM))
rule("ReduceL1", static=[1], check=_numeric_reduction)(_reduction(build.absolute, Op.SUM))
rule("ReduceL2", static=[1], check=_float_reduction)(
    _reduction(_square, Op.SUM, lambda s: build.unary_float(Op.SQRT, s)))
def _log(s: Node) -> Node:
    return build.unary_float(Op.LOG, s)


rule("ReduceLogSum", static=[1], check=_float_reduction)(_reduction(_identity, Op.SUM, _log))


@rule("ReduceLogSumExp", static=[1], check=_float_reduction)
def _reduce_log_sum_exp(ctx: OpContext):
    # log(sum(exp(x - m))) + m with m the maximum: no overflow for large x
    x = ctx.node(0)
    axes, keep = _reduced_axes(ctx, x)
    if not axes:
        return [x]
    if any(x.shape[a] == 0 for a in axes):
        shape = tuple(1 if k in axes else n for k, n in enumerate(x.shape) if keep or
                      k not in axes)
        return [_filled(shape, -math.inf, x.dtype)]
    xf = build.cast(x, x.dtype.compute)
    m = build.reduce(Op.MAX, xf, axes, True)
    finite = build.where(build.compare(Op.EQ, build.absolute(m), math.inf), 0.0, m)
    shifted = build.binary(Op.SUB, xf, build.expand(finite, xf.shape))
    total = build.reduce(Op.SUM, build.unary_float(Op.EXP, shifted), axes, True)
    out = build.binary(Op.ADD, build.unary_float(Op.LOG, total), finite)
    if not keep:
        out = build.reshape(out, tuple(n for k, n in enumerate(x.shape) if k not in axes))
    return [build.cast(out, x.dtype)]


# -- softmax ---------------------------------------------------------------------------------
def _softmax_parts(ctx: OpContext):
    x = ctx.node(0)
    if not x.shape:
        raise ShapeError("expected a tensor of rank >= 1, got a scalar")
    axis = build.normalize_axis(ctx.attr("axis", -1), len(x.shape), x.shape)
    xf = build.cast(x, x.dtype.compute)
    m = build.expand(build.reduce(Op.MAX, xf, axis, True), xf.shape)
    shifted = build.binary(Op.SUB, xf, m)
    return x, axis, shifted


def _opset13(info: NodeInfo) -> str | None:
    return None if info.opset >= 13 else "before opset 13 Softmax flattens to 2-D"


@rule("Softmax", check=_opset13)
def _softmax(ctx: OpContext):
    x, axis, shifted = _softmax_parts(ctx)
    e = build.unary_float(Op.EXP, shifted)
    total = build.expand(build.reduce(Op.SUM, e, axis, True), e.shape)
    return [build.cast(build.binary(Op.DIV, e, total), x.dtype)]


@rule("LogSoftmax", check=_opset13)
def _log_softmax(ctx: OpContext):
    x, axis, shifted = _softmax_parts(ctx)
    total = build.reduce(Op.SUM, build.unary_float(Op.EXP, shifted), axis, True)
    log_total = build.expand(build.unary_float(Op.LOG, total), shifted.shape)
    return [build.cast(build.binary(Op.SUB, shifted, log_total), x.dtype)]


# -- normalisations --------------------------------------------------------------------------
def _stash(ctx: OpContext, x: Node) -> DType:
    dtype = ELEM_DTYPES.get(ctx.attr("stash_type", 1))
    if dtype is None or not dtype.is_float:
        raise UnsupportedError(f"attribute stash_type={ctx.attr('stash_type')}: expected "
                               "a float type (1 for float32)")
    return dtype if dtype.itemsize >= x.dtype.compute.itemsize else x.dtype.compute


def _normalised_input(ctx: OpContext) -> tuple[Node, Node, tuple[int, ...]]:
    """LayerNormalization's and RMSNormalization's input, as given and in the stash type,
    and the axes from `axis` to the last that they normalise over."""
    x = ctx.node(0)
    rank = len(x.shape)
    axis = build.normalize_axis(ctx.attr("axis", -1), rank, x.shape)
    return x, build.cast(x, _stash(ctx, x)), tuple(range(axis, rank))


def _normalise(x: Node, axes: tuple[int, ...], eps: float):
    """(x - mean) * rstd over axes, with mean and rstd kept as size-1 dims."""
    mean = build.mean(x, axes, True)
    d = build.binary(Op.SUB, x, build.expand(mean, x.shape))
    var = build.mean(build.binary(Op.MUL, d, d), axes, True)
    rstd = build.unary_float(Op.RSQRT, build.binary(Op.ADD, var, build.const(eps, x.dtype)))
    return build.binary(Op.MUL, d, build.expand(rstd, x.shape)), mean, rstd


def _affine(y: Node, scale: Node | None, bias: Node | None) -> Node:
    """y * scale + bias, broadcast the ONNX way (trailing dims)."""
    if scale is not None:
        y = build.binary(Op.MUL, y, build.cast(scale, y.dtype))
    if bias is not None:
        y = build.binary(Op.ADD, y, build.cast(bias, y.dtype))
    return y


@rule("LayerNormalization")
def _layer_norm(ctx: OpContext):
    x, xs, axes = _normalised_input(ctx)
    y, mean, rstd = _normalise(xs, axes, float(ctx.attr("epsilon", 1e-5)))
    y = _affine(y, ctx.node(1), ctx.node(2) if ctx.has(2) else None)
    return [build.cast(y, x.dtype), mean, rstd]


@rule("GroupNormalization")
def _group_norm(ctx: OpContext):
    x = ctx.node(0)
    if len(x.shape) < 2:
        raise ShapeError(f"expected an input of shape (N, C, ...), got {x.shape}")
    groups = int(ctx.attr("num_groups", 0))
    n, c = x.shape[:2]
    if groups <= 0 or c % groups:
        raise ShapeError(f"attribute num_groups={groups}: expected a positive divisor of "
                         f"the {c} channels")
    spatial = math.prod(x.shape[2:])
    xs = build.reshape(build.cast(x, _stash(ctx, x)), (n, groups, c // groups, spatial))
    y, _, _ = _normalise(xs, (2, 3), float(ctx.attr("epsilon", 1e-5)))
    # opset 18: scale and bias per group; opset 21: per channel
    per = (1, groups, 1, 1) if ctx.info.opset < 21 else (1, groups, c // groups, 1)
    scale, bias = (build.reshape(ctx.node(k), per) for k in (1, 2))
    y = _affine(y, build.expand(scale, y.shape), build.expand(bias, y.shape))
    return [build.cast(build.reshape(y, x.shape), x.dtype)]


@rule("RMSNormalization")
def _rms_norm(ctx: OpContext):
    x, xs, axes = _normalised_input(ctx)
    ms = build.mean(build.binary(Op.MUL, xs, xs), axes, True)
    eps = build.const(float(ctx.attr("epsilon", 1e-5)), xs.dtype)
    rstd = build.unary_float(Op.RSQRT, build.binary(Op.ADD, ms, eps))
    y = build.binary(Op.MUL, xs, build.expand(rstd, xs.shape))
    return [build.cast(_affine(y, ctx.node(1), None), x.dtype)]
