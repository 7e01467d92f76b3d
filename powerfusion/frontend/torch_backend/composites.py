"""aten ops the torch backend builds from graph ops it already has: activations, layout
changes, norms and inference normalisations (issue 13). Each follows the arithmetic of
PyTorch's CPU kernel where rounding could tell them apart; an op whose exact result
cannot be matched has no handler here and keeps running eagerly (aten.remainder and
aten.fmod are graph ops, exact as fmod is: see elementwise.py).
"""

from __future__ import annotations

import math

import torch

from ...graph.graph import Node
from ...graph.ops import Op
from .. import build
from .. import functions as F
from ..tensor import Tensor
from .elementwise import _clamp
from .layout import _view_handler
from .reductions import _acc, _axes, _dim
from .registry import handles
from .values import Splat, _empty, _Fallback, _operand, _tensor

aten = torch.ops.aten


# -- activations ---------------------------------------------------------------------------
@handles(aten.hardtanh.default, elementwise=True)
def _hardtanh(ctx, x, min_val=-1.0, max_val=1.0):
    return _clamp(ctx, x, min_val, max_val)


@handles(aten.leaky_relu.default, elementwise=True)
def _leaky_relu(ctx, x, negative_slope=0.01):
    x = _operand(x, ctx.dtype)
    return F.where(x > 0, x, x * float(negative_slope))


@handles(aten.elu.default, elementwise=True)
def _elu(ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    """x <= 0 ? expm1(x * input_scale) * (alpha * scale) : x * scale, as ATen's kernel
    (NaN takes the second branch and stays NaN)."""
    x = _operand(x, ctx.dtype)
    negative = F.expm1(x * float(input_scale)) * (float(alpha) * float(scale))
    return F.where(x <= 0, negative, x * float(scale))


# -- layout --------------------------------------------------------------------------------
def _flip_node(x: Node, axes) -> Node:
    """x reversed along axes: a slice with step -1 (a normalised stop of -1 is 'before
    index 0', as the graph's SLICE reads it)."""
    spec = tuple((n - 1, -1, -1) if k in axes and n > 1 else (0, n, 1)
                 for k, n in enumerate(x.shape))
    if all(step == 1 for _, _, step in spec):
        return x
    return Node(Op.SLICE, (x,), x.shape, x.dtype, spec)


@handles(aten.flip.default)
def _flip(ctx, x, dims):
    if isinstance(x, Splat):
        return x
    x = _tensor(x)
    axes = set(build.normalize_axes(tuple(dims), x.shape)) if x.ndim else set()
    return Tensor(_flip_node(x.node, axes))


@handles(aten.constant_pad_nd.default)
def _constant_pad_nd(ctx, x, pad, value=0):
    """Pairs (before, after) from the last dim backwards: a negative one crops (a
    slice), a positive one concatenates a block of `value`."""
    x = _tensor(x).astype(ctx.dtype)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise _Fallback(f"padding {list(pad)} of a {x.ndim}-d tensor")
    node = x.node
    for k in range(len(pad) // 2):
        axis = x.ndim - 1 - k
        before, after = int(pad[2 * k]), int(pad[2 * k + 1])
        n = node.shape[axis]
        lo, hi = max(-before, 0), n - max(-after, 0)
        if hi < lo:
            raise _Fallback("padding crops more than the tensor holds")
        if (lo, hi) != (0, n):
            index = tuple(slice(lo, hi) if a == axis else slice(None)
                          for a in range(x.ndim))
            node = build.getitem(node, index)
        parts = []
        for width, where in ((max(before, 0), 0), (max(after, 0), 1)):
            if width:
                shape = node.shape[:axis] + (width,) + node.shape[axis + 1:]
                parts.append((where, build.full(value, ctx.dtype, shape)))
        if parts:
            pieces = [p for w, p in parts if w == 0] + [node] + [p for w, p in parts if w]
            node = build.concatenate(pieces, axis)
    return Tensor(node)


@handles(aten.repeat.default)
@_view_handler
def _repeat(ctx, x, repeats):
    """Tile: view x as (1, s0, 1, s1, ...), broadcast to (r0, s0, r1, s1, ...), reshape
    to (r0 * s0, r1 * s1, ...)."""
    repeats = [int(r) for r in repeats]
    shape = (1,) * (len(repeats) - x.ndim) + x.shape
    pairs = [(1, s) for s in shape]
    node = build.reshape(x.node, tuple(v for p in pairs for v in p))
    node = build.expand(node, tuple(v for r, s in zip(repeats, shape) for v in (r, s)))
    return Tensor(build.reshape(node, tuple(r * s for r, s in zip(repeats, shape))))


# -- reductions ----------------------------------------------------------------------------
def _extreme_with_index(op: Op):
    """max.dim / min.dim: the extreme (NaN if any) and the first index holding it (or
    the first NaN), as PyTorch's CPU kernels give them."""
    def handler(ctx, x, dim, keepdim=False):
        if _empty(x):
            raise _Fallback("max/min over no elements")
        x = _tensor(x)
        axis = _dim(x, dim)
        values = x.max(axis=axis, keepdims=keepdim) if op is Op.MAX \
            else x.min(axis=axis, keepdims=keepdim)
        if axis is None:                  # a 0-d tensor: itself, at index 0
            return values, 0
        return values, Tensor(build.arg_extreme(op, x.node, axis, keepdim))
    return handler


handles(aten.max.dim)(_extreme_with_index(Op.MAX))
handles(aten.min.dim)(_extreme_with_index(Op.MIN))


@handles(aten.max.default, aten.min.default)
def _extreme_of_all(ctx, x):
    if _empty(x):
        raise _Fallback("max/min of no elements")
    x = _tensor(x)
    return x.max() if ctx.node.target is aten.max.default else x.min()


def _norm_order(node):
    ord_ = node.kwargs.get("ord", node.args[1] if len(node.args) > 1 else 2)
    if ord_ not in (1, 2, math.inf, -math.inf):
        return f"ord={ord_!r} is not supported"
    return None


@handles(aten.linalg_vector_norm.default, check=_norm_order)
def _vector_norm(ctx, x, ord=2, dim=None, keepdim=False, *, dtype=None):  # noqa: A002
    if _empty(x):
        raise _Fallback("norm over no elements")
    x = _tensor(x).astype(ctx.dtype)
    axis = _axes(x, dim)
    a = abs(x.astype(_acc(ctx.dtype)))
    if ord == 2:
        return F.sqrt((a * a).sum(axis=axis, keepdims=keepdim))
    if ord == 1:
        return a.sum(axis=axis, keepdims=keepdim)
    return a.max(axis=axis, keepdims=keepdim) if ord > 0 else a.min(axis=axis,
                                                                      keepdims=keepdim)


# -- normalisations ------------------------------------------------------------------------
@handles(aten.native_group_norm.default)
def _group_norm(ctx, x, weight, bias, n, c, hw, group, eps):
    """(out, mean, rstd), mean and rstd of shape (N, group), biased variance."""
    x = _tensor(x)
    n, c, hw, group = int(n), int(c), int(hw), int(group)
    acc = _acc(x.dtype)
    # channels and positions as separate axes: each runs with one step through memory
    # in either layout (NCHW or channels-last), so the reductions can follow it
    g = c // group
    xg = x.astype(acc).reshape((n, group, g, hw))
    mean = xg.mean(axis=(2, 3), keepdims=True)
    d = xg - mean
    rstd = F.rsqrt((d * d).mean(axis=(2, 3), keepdims=True) + float(eps))
    # x * scale + shift with scale and shift per channel, as ATen computes it: read
    # per channel, they run along a channels-last row with the channels
    scale = rstd if weight is None else rstd * _tensor(weight).astype(acc).reshape((group, g, 1))
    shift = -mean * scale
    if bias is not None:
        shift = shift + _tensor(bias).astype(acc).reshape((group, g, 1))
    out = (xg * scale + shift).reshape((n, c, hw))
    return (out.reshape(x.shape), mean.reshape((n, group)), rstd.reshape((n, group)))


@handles(aten._native_batch_norm_legit_no_training.default)
def _batch_norm_inference(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
    """(x - running_mean) / sqrt(running_var + eps) * weight + bias over dim 1; the saved
    mean and rstd aten gives in inference are empty."""
    x = _tensor(x)
    acc = _acc(x.dtype)
    channel = (x.shape[1],) + (1,) * (x.ndim - 2) if x.ndim > 1 else None
    if channel is None:
        raise _Fallback("batch norm of a tensor without a channel dim")

    def per_channel(t):
        return _tensor(t).astype(acc).reshape(channel)

    out = (x.astype(acc) - per_channel(running_mean)) * F.rsqrt(
        per_channel(running_var) + float(eps))
    if weight is not None:
        out = out * per_channel(weight)
    if bias is not None:
        out = out + per_channel(bias)
    return out, 0, 0
