"""Handlers of reductions, normalisations and softmax, in torch's semantics, not
numpy's: 16-bit floats accumulate in float32 (rounded once, to the result's dtype, by
`_finish`), and a 0-d tensor takes dim 0 or -1."""

from __future__ import annotations

import builtins
import math

import torch

from ...dtypes import DType
from .. import build
from .. import functions as F
from ..tensor import Tensor
from .registry import handles
from .values import Splat, _concrete, _dt, _empty, _Fallback, _tensor, _truth

aten = torch.ops.aten


def _axes(x: Tensor, dim):
    """aten's reduction dims over x as numpy axes: None (or an empty list) reduces
    everything; on a 0-d tensor dim 0 and -1 name the tensor itself (no axis)."""
    if dim is None:
        return None
    dims = tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)
    if not dims:
        return None                      # aten: an empty list reduces all
    if x.ndim == 0:
        if any(int(d) not in (0, -1) for d in dims):
            raise _Fallback(f"dim {dim} of a 0-d tensor")
        return ()
    return dims


def _dim(x: Tensor, dim) -> int | None:
    """One aten dim as a numpy axis; None (all of it) on a 0-d tensor."""
    return None if x.ndim == 0 and int(dim) in (0, -1) else dim


def _accumulator(dtype: DType) -> DType:
    """What a sum of dtype adds in: float32 for 16-bit floats, as PyTorch's kernels."""
    return dtype.compute


@handles(aten.sum.dim_IntList, aten.sum.default)
def _sum(ctx, x, dim=None, keepdim=False, *, dtype=None):
    if _empty(x):
        return Splat(0, ctx.dtype, ctx.shape)
    x = _tensor(x)
    return x.astype(_accumulator(ctx.dtype)).sum(axis=_axes(x, dim), keepdims=keepdim)


def _short_axis(node):
    """cumsum is a square of adds along its axis: not past build.CUMSUM_AXIS (decided
    before partitioning, so that a long one leaves its neighbours' region whole)."""
    meta = node.args[0].meta.get("val")
    shape = _concrete(meta.shape) if meta is not None else None
    if shape is None:
        return "cumsum over a dynamic shape"
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if shape:
        n = shape[dim % len(shape)]
        if n > build.CUMSUM_AXIS:
            return f"cumsum along {n} elements (a square of adds past {build.CUMSUM_AXIS})"
    return None


@handles(aten.cumsum.default, check=_short_axis)
def _cumsum(ctx, x, dim, *, dtype=None):
    x = _tensor(x)
    if x.ndim == 0:
        return x.astype(ctx.dtype)
    # ints and bools add up in int64 (the node's dtype), 16-bit floats in float32
    k = build.normalize_axis(dim, x.ndim, x.shape)
    return Tensor(build.cumsum(x.astype(_accumulator(ctx.dtype)).node, k))


@handles(aten.mean.dim, aten.mean.default)
def _mean(ctx, x, dim=None, keepdim=False, *, dtype=None):
    if _empty(x):
        return Splat(math.nan, ctx.dtype, ctx.shape)
    x = _tensor(x)
    return x.astype(_accumulator(ctx.dtype)).mean(axis=_axes(x, dim), keepdims=keepdim)


@handles(aten.amax.default, aten.amin.default)
def _amax_amin(ctx, x, dim=(), keepdim=False):
    if _empty(x):                        # PyTorch rejects a non-empty result
        return Splat(0, ctx.dtype, ctx.shape)
    x = _tensor(x)
    extreme = x.max if ctx.node.target is aten.amax.default else x.min
    return extreme(axis=_axes(x, dim), keepdims=keepdim)


def _any_all(op):
    def handler(ctx, x, dim=None, keepdim=False):
        if _empty(x):
            return Splat(op == "all", DType.bool, ctx.shape)
        t = _truth(x).astype(DType.int32)
        axis = _axes(t, dim)
        r = t.max(axis=axis, keepdims=keepdim) if op == "any" \
            else t.min(axis=axis, keepdims=keepdim)
        return r != 0
    return handler


handles(aten.any.dim, aten.any.dims, aten.any.default)(_any_all("any"))
handles(aten.all.dim, aten.all.dims, aten.all.default)(_any_all("all"))


def _var_mean(x: Tensor, dim, correction, keepdim):
    """Variance and mean over dim, computed in x's accumulator type."""
    axes = build.normalize_axes(_axes(x, dim), x.shape)
    x = x.astype(_accumulator(x.dtype))
    count = math.prod(x.shape[a] for a in axes)
    correction = 1 if correction is None else correction
    mean = x.mean(axis=axes, keepdims=True)
    d = x - mean
    var = (d * d).sum(axis=axes, keepdims=keepdim) / float(builtins.max(count - correction, 0))
    return var, (mean if keepdim else mean.reshape(tuple(
        n for k, n in enumerate(x.shape) if k not in axes)))


@handles(aten.var.correction)
def _var(ctx, x, dim=None, *, correction=None, keepdim=False):
    if _empty(x):
        return Splat(math.nan, ctx.dtype, ctx.shape)
    return _var_mean(_tensor(x).astype(ctx.dtype), dim, correction, keepdim)[0]


@handles(aten.var_mean.correction)
def _var_mean_h(ctx, x, dim=None, *, correction=None, keepdim=False):
    if _empty(x):
        return tuple(Splat(math.nan, _dt(m.dtype), _concrete(m.shape)) for m in ctx.meta)
    return _var_mean(_tensor(x).astype(_dt(ctx.meta[0].dtype)), dim, correction, keepdim)


# -- normalisations and softmax -------------------------------------------------------------
def _acc(dtype: DType) -> DType:
    return dtype.compute if dtype.is_float else DType.float32


@handles(aten.native_layer_norm.default)
def _layer_norm(ctx, x, normalized_shape, weight, bias, eps):
    x = _tensor(x)
    acc = _acc(x.dtype)
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    xf = x.astype(acc)
    mean = xf.mean(axis=axes, keepdims=True)
    d = xf - mean
    rstd = F.rsqrt((d * d).mean(axis=axes, keepdims=True) + float(eps))
    out = d * rstd
    if weight is not None:
        out = out * _tensor(weight).astype(acc)
    if bias is not None:
        out = out + _tensor(bias).astype(acc)
    return out, mean, rstd


@handles(aten._softmax.default)
def _softmax(ctx, x, dim, half_to_float=False):
    xf = _tensor(x).astype(_acc(_tensor(x).dtype))
    dim = _dim(xf, dim)
    e = F.exp(xf - xf.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


@handles(aten._log_softmax.default)
def _log_softmax(ctx, x, dim, half_to_float=False):
    xf = _tensor(x).astype(_acc(_tensor(x).dtype))
    dim = _dim(xf, dim)
    shifted = xf - xf.max(axis=dim, keepdims=True)
    return shifted - F.log(F.exp(shifted).sum(axis=dim, keepdims=True))
