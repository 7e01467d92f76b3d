"""`torch.compile(model, backend="powerfusion")`: PyTorch models as they are.

How a model gets here: TorchDynamo captures an FX graph of torch calls and hands it
to `powerfusion_backend`; AOTAutograd (with PyTorch's core-aten decompositions)
turns it into aten graphs — forward, backward, or one inference graph — and calls
`compile_aten_graph` on each. That function:

1. classifies every aten op: one PowerFusion can replay on frontend `Tensor`s (the
   table `HANDLERS` below: element-wise ops, casts, reductions, normalisations,
   softmax, views, concatenation, constants), one left to PyTorch by design (matmul,
   convolution, attention, embedding, indexing, random numbers, creation of tensors,
   mutation), or one it does not know (logged once, counted as a fallback);
2. partitions the graph into maximal cycle-free regions of supported ops (torch's
   `CapabilityBasedPartitioner`; views at a region's edges stay outside, where
   PyTorch makes them for free);
3. replaces each region by a `Region` module: on its first call with a given
   signature (shape, strides and dtype of every tensor argument) it replays the
   region's aten ops on frontend Tensors — so numpy's shape rules from
   `frontend.build` apply once, and torch's dtype rules are enforced by casting to
   the dtype each aten node's metadata records — compiles the resulting Graph with
   `compile_graph`, and runs it on the torch tensors' storage, zero-copy.

Never break the user's model: a region that fails to trace, compile or run falls
back to PyTorch's eager aten calls for good, with one warning on the "powerfusion"
logger naming the op and the reason.
"""

from __future__ import annotations

import builtins
import logging
import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx
from torch.fx.node import _get_qualified_name

from ..dtypes import DType
from ..graph.graph import Graph, Node
from ..graph.ops import Op
from . import build
from . import functions as F
from . import torch_stats as stats
from .torch_stats import compile_stats, reset_compile_stats
from .tracing import Tensor

__all__ = [
    "Region",
    "compile_aten_graph",
    "compile_stats",
    "powerfusion_backend",
    "register",
    "reset_compile_stats",
]

logger = logging.getLogger("powerfusion")
aten = torch.ops.aten
prims = torch.ops.prims

BACKEND_NAME = "powerfusion"
REGION_PREFIX = "powerfusion_region_"

_TORCH_DTYPES = {torch.bool: DType.bool, torch.int32: DType.int32, torch.int64: DType.int64,
                 torch.float16: DType.float16, torch.bfloat16: DType.bfloat16,
                 torch.float32: DType.float32, torch.float64: DType.float64}
_TO_TORCH = {v: k for k, v in _TORCH_DTYPES.items()}


class _Fallback(Exception):
    """Why one aten op could not be replayed; carries the op's name."""


# -- values of the replay ------------------------------------------------------------------
@dataclass(frozen=True)
class Splat:
    """A tensor all of whose elements are one constant (aten.full, scalar_tensor):
    it joins element-wise ops as a scalar, and is materialised only as an output or
    for an op that needs a tensor (concatenation, reductions)."""

    value: Any
    dtype: DType
    shape: tuple[int, ...]


def _dt(torch_dtype) -> DType:
    try:
        return _TORCH_DTYPES[torch_dtype]
    except KeyError:
        raise _Fallback(f"dtype {torch_dtype} is not supported by PowerFusion") from None


def _concrete(shape) -> tuple[int, ...] | None:
    """A meta shape as ints, or None when some size is symbolic."""
    out = []
    for s in shape:
        if isinstance(s, int):
            out.append(s)
        elif isinstance(s, torch.SymInt) and s.node.is_constant():
            out.append(int(s))
        else:
            return None
    return tuple(out)


class Ctx:
    """What a handler may know about its aten node: the recorded output metadata."""

    def __init__(self, node: torch.fx.Node):
        self.node = node
        self.meta = node.meta.get("val")

    @property
    def dtype(self) -> DType:
        return _dt(self.meta.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        shape = _concrete(self.meta.shape)
        if shape is None:
            raise _Fallback("symbolic output shape")
        return shape

    def arg_meta(self, k: int):
        """Metadata of positional argument k: a fake tensor, or the Python scalar."""
        a = self.node.args[k]
        return a.meta.get("val") if isinstance(a, torch.fx.Node) else a


def _tensor(x, what: str = "operand") -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, Splat):
        return _materialise(x)
    raise _Fallback(f"{what}: expected a tensor, got {type(x).__name__}")


def _materialise(x: Splat) -> Tensor:
    """A constant-filled tensor as a graph value of its shape."""
    return Tensor(build.full(x.value, x.dtype, x.shape))


def _operand(x, dtype: DType):
    """An element-wise operand converted to the op's compute dtype; Python scalars stay
    weakly typed, so they adopt the dtype of the tensors they meet."""
    if isinstance(x, Tensor):
        return x.astype(dtype)
    if isinstance(x, Splat):
        return Tensor(build.const(x.value, dtype))
    if isinstance(x, (bool, int, float)):
        if dtype.is_float and not isinstance(x, bool):
            return float(x)
        return x
    raise _Fallback(f"operand of type {type(x).__name__}")


def _finish(value, meta):
    """A handler's result made to agree with the aten node's recorded dtype and shape."""
    if isinstance(meta, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(meta):
            raise _Fallback("unexpected number of results")
        return type(value)(_finish(v, m) for v, m in zip(value, meta))
    if not isinstance(meta, torch.Tensor):
        return value
    dtype = _dt(meta.dtype)
    shape = _concrete(meta.shape)
    if isinstance(value, (bool, int, float)):
        value = Splat(value, dtype, shape)
    if isinstance(value, Splat):
        if shape is None:
            raise _Fallback("constant tensor of symbolic shape")
        return Splat(build.scalar_value(value.value, dtype), dtype, shape)
    if not isinstance(value, Tensor):
        raise _Fallback(f"unexpected result {type(value).__name__}")
    if shape is not None and 0 in shape:
        return Splat(build.scalar_value(0, dtype), dtype, shape)    # no elements to compute
    if value.node.op is Op.CONST:
        if shape is None:
            raise _Fallback("constant tensor of symbolic shape")
        return Splat(build.scalar_value(value.node.arg, dtype), dtype, shape)
    value = value.astype(dtype)
    if shape is not None and value.shape != shape:
        if build.broadcast_shapes(value.shape, shape) != shape:
            raise _Fallback(f"replayed shape {value.shape} differs from PyTorch's {shape}")
        value = Tensor(build.expand(value.node, shape))
    return value


def _no_elements(meta) -> bool:
    """Whether every tensor an aten node gives (at least one) has no elements."""
    metas = meta if isinstance(meta, (tuple, list)) else (meta,)
    tensors = [m for m in metas if isinstance(m, torch.Tensor)]
    return bool(tensors) and len(tensors) == len(metas) and all(
        (shape := _concrete(m.shape)) is not None and 0 in shape for m in tensors)


def _zeros_like_meta(meta):
    if isinstance(meta, (tuple, list)):
        return type(meta)(_zeros_like_meta(m) for m in meta)
    return Splat(0, _dt(meta.dtype), _concrete(meta.shape))


# -- handlers: one aten op each, on frontend Tensors ----------------------------------------
HANDLERS: dict = {}
PREDICATES: dict = {}       # aten op -> fn(fx node) -> reason it can't be taken, or None
ELEMENTWISE: set = set()


def handles(*targets, elementwise: bool = False, check=None):
    def deco(fn):
        for t in targets:
            HANDLERS[t] = fn
            if check is not None:
                PREDICATES[t] = check
            if elementwise:
                ELEMENTWISE.add(t)
        return fn
    return deco


def _unary(op_fn):
    def handler(ctx, x):
        return op_fn(_operand(x, ctx.dtype))
    return handler


for _target, _fn in [
        (aten.exp.default, F.exp), (aten.log.default, F.log), (aten.sqrt.default, F.sqrt),
        (aten.rsqrt.default, F.rsqrt), (aten.tanh.default, F.tanh), (aten.erf.default, F.erf),
        (aten.sigmoid.default, F.sigmoid), (aten.sin.default, F.sin),
        (aten.cos.default, F.cos), (aten.silu.default, F.silu), (aten.relu.default, F.relu),
        (aten.abs.default, abs), (aten.neg.default, operator.neg),
        (aten.reciprocal.default, lambda x: 1.0 / x), (aten.tan.default, F.tan),
        (aten.log1p.default, F.log1p), (aten.expm1.default, F.expm1),
        (aten.log2.default, F.log2), (aten.log10.default, F.log10),
        (aten.exp2.default, F.exp2), (aten.floor.default, F.floor),
        (aten.ceil.default, F.ceil), (aten.trunc.default, F.trunc),
        (aten.round.default, F.rint)]:        # torch rounds half to even too
    handles(_target, elementwise=True)(_unary(_fn))


def _no_decimals(node):
    decimals = node.kwargs.get("decimals", node.args[1] if len(node.args) > 1 else 0)
    return None if decimals == 0 else f"decimals={decimals!r} is not supported"


handles(aten.round.decimals, elementwise=True, check=_no_decimals)(
    lambda ctx, x, decimals=0: F.rint(_operand(x, ctx.dtype)))


@handles(aten.sign.default, elementwise=True)
def _sign(ctx, x):
    x = _operand(x, ctx.dtype)
    if x.dtype.is_bool:                  # torch: a bool's sign is itself
        return x
    s = F.sign(x)
    return F.where(x != x, 0, s) if x.dtype.is_float else s    # torch: sign(NaN) = 0


@handles(aten.gelu.default, elementwise=True)
def _gelu(ctx, x, approximate="none"):
    return F.gelu(_operand(x, ctx.dtype), approximate=approximate)


def _binary(fn):
    def handler(ctx, a, b, **kw):
        return fn(_operand(a, ctx.dtype), _operand(b, ctx.dtype), **kw)
    return handler


def _add(a, b, alpha=1):
    return a + (b if alpha == 1 else b * alpha)


def _sub(a, b, alpha=1):
    return a - (b if alpha == 1 else b * alpha)


def _no_rounding(node):
    mode = node.kwargs.get("rounding_mode", node.args[2] if len(node.args) > 2 else None)
    return None if mode is None else f"rounding_mode={mode!r} is not supported"


handles(aten.add.Tensor, aten.add.Scalar, elementwise=True)(_binary(_add))
handles(aten.sub.Tensor, aten.sub.Scalar, elementwise=True)(_binary(_sub))
handles(aten.rsub.Tensor, aten.rsub.Scalar, elementwise=True)(
    _binary(lambda a, b, alpha=1: _sub(b, a, alpha)))
handles(aten.mul.Tensor, aten.mul.Scalar, elementwise=True)(_binary(operator.mul))
handles(aten.div.Tensor, aten.div.Scalar, elementwise=True)(_binary(operator.truediv))
handles(aten.div.Tensor_mode, aten.div.Scalar_mode, elementwise=True, check=_no_rounding)(
    _binary(lambda a, b, rounding_mode=None: a / b))
handles(aten.maximum.default, elementwise=True)(_binary(F.maximum))
handles(aten.minimum.default, elementwise=True)(_binary(F.minimum))


@handles(aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar, elementwise=True)
def _pow(ctx, a, b):
    a, b = _operand(a, ctx.dtype), _operand(b, ctx.dtype)
    if isinstance(a, Tensor) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return Tensor(build.power_scalar(a.node, b, torch_pow=True))
    if isinstance(a, Tensor):
        return a ** b
    return Tensor(build.binary(Op.POW, a, b.node))


@handles(aten.clamp.default, aten.clamp.Tensor, elementwise=True)
def _clamp(ctx, x, min=None, max=None):
    x = _operand(x, ctx.dtype)
    if min is not None:
        x = F.maximum(x, _operand(min, ctx.dtype))
    if max is not None:
        x = F.minimum(x, _operand(max, ctx.dtype))
    return x


handles(aten.clamp_min.default, aten.clamp_min.Tensor, elementwise=True)(
    lambda ctx, x, m: _clamp(ctx, x, min=m))
handles(aten.clamp_max.default, aten.clamp_max.Tensor, elementwise=True)(
    lambda ctx, x, m: _clamp(ctx, x, max=m))


def _meta_for_promotion(m):
    if isinstance(m, torch.Tensor):
        return torch.empty((1,) * m.dim(), dtype=m.dtype, device="meta")
    return m


def _comparison(op: Op):
    def handler(ctx, a, b):
        dtype = _dt(torch.result_type(_meta_for_promotion(ctx.arg_meta(0)),
                                      _meta_for_promotion(ctx.arg_meta(1))))
        a, b = _operand(a, dtype), _operand(b, dtype)
        if not isinstance(a, Tensor):
            a = Tensor(build.const(a, dtype))
        return Tensor(build.compare(op, a.node, b.node if isinstance(b, Tensor) else b))
    return handler


for _name, _op in [("eq", Op.EQ), ("ne", Op.NE), ("lt", Op.LT), ("le", Op.LE),
                   ("gt", Op.GT), ("ge", Op.GE)]:
    _packet = getattr(aten, _name)
    handles(_packet.Tensor, _packet.Scalar, elementwise=True)(_comparison(_op))


def _truth(x) -> Tensor:
    if isinstance(x, Splat):
        return Tensor(build.const(bool(x.value), DType.bool))
    return Tensor(build.to_bool(_tensor(x).node))


def _bool_inputs(node):
    for a in node.all_input_nodes:
        m = a.meta.get("val")
        if isinstance(m, torch.Tensor) and m.dtype is not torch.bool:
            return f"bitwise op on {m.dtype} (PowerFusion has them on bool only)"
    return None


handles(aten.logical_and.default, elementwise=True)(
    lambda ctx, a, b: Tensor(build.logical(Op.AND, _truth(a).node, _truth(b).node)))
handles(aten.logical_or.default, elementwise=True)(
    lambda ctx, a, b: Tensor(build.logical(Op.OR, _truth(a).node, _truth(b).node)))
handles(aten.logical_xor.default, elementwise=True)(
    lambda ctx, a, b: _truth(a) != _truth(b))
handles(aten.logical_not.default, elementwise=True)(lambda ctx, a: ~_truth(a))
handles(aten.bitwise_and.Tensor, elementwise=True, check=_bool_inputs)(
    lambda ctx, a, b: _truth(a) & _truth(b))
handles(aten.bitwise_or.Tensor, elementwise=True, check=_bool_inputs)(
    lambda ctx, a, b: _truth(a) | _truth(b))
handles(aten.bitwise_xor.Tensor, elementwise=True, check=_bool_inputs)(
    lambda ctx, a, b: _truth(a) != _truth(b))
handles(aten.bitwise_not.default, elementwise=True, check=_bool_inputs)(
    lambda ctx, a: ~_truth(a))
handles(aten.isnan.default, elementwise=True)(lambda ctx, a: a != a)  # noqa: PLR0124


@handles(aten.where.self, elementwise=True)
def _where(ctx, cond, a, b):
    return F.where(_truth(cond), _operand(a, ctx.dtype), _operand(b, ctx.dtype))


@handles(aten.masked_fill.Scalar, aten.masked_fill.Tensor, elementwise=True)
def _masked_fill(ctx, x, mask, value):
    return F.where(_truth(mask), _operand(value, ctx.dtype), _operand(x, ctx.dtype))


@handles(aten._to_copy.default, prims.convert_element_type.default,
         check=lambda node: _same_device(node))
def _cast(ctx, x, *args, **kwargs):
    if isinstance(x, Splat):
        return x
    return _tensor(x).astype(ctx.dtype)


def _same_device(node):
    out, src = node.meta.get("val"), node.args[0].meta.get("val")
    if out.device != src.device:
        return f"copy from {src.device} to {out.device}"
    layout = node.kwargs.get("layout")
    if layout is not None and layout is not torch.strided:
        return f"layout {layout}"
    return None


handles(aten.clone.default, aten.alias.default, aten.detach.default,
        aten.lift_fresh_copy.default)(lambda ctx, x, **kw: x)


# constants
@handles(aten.full.default)
def _full(ctx, size, fill_value, **kw):
    return Splat(fill_value, ctx.dtype, ctx.shape)


handles(aten.full_like.default)(lambda ctx, x, fill_value, **kw:
                                Splat(fill_value, ctx.dtype, ctx.shape))
handles(aten.scalar_tensor.default)(lambda ctx, s, **kw: Splat(s, ctx.dtype, ()))
handles(aten.zeros_like.default)(lambda ctx, x, **kw: Splat(0, ctx.dtype, ctx.shape))
handles(aten.ones_like.default)(lambda ctx, x, **kw: Splat(1, ctx.dtype, ctx.shape))


def _constant_fill(node):
    value = node.args[1] if node.target in (aten.full.default, aten.full_like.default) \
        else node.args[0] if node.target is aten.scalar_tensor.default else 0
    if not isinstance(value, (bool, int, float)):
        return f"fill value of type {type(value).__name__}"
    return None


for _t in (aten.full.default, aten.full_like.default, aten.scalar_tensor.default):
    PREDICATES[_t] = _constant_fill


# reductions: in torch's semantics, not numpy's: 16-bit floats accumulate in float32
# (rounded once, to the result's dtype, by `_finish`), and a 0-d tensor takes dim 0 or -1
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


def _empty(x) -> bool:
    """Whether x has no elements: then each element of a reduction of x, if it has
    any, reduces over nothing, and is the reduction's identity (sum 0, mean NaN)."""
    return math.prod(x.shape) == 0 if isinstance(x, (Tensor, Splat)) else False


@handles(aten.sum.dim_IntList, aten.sum.default)
def _sum(ctx, x, dim=None, keepdim=False, *, dtype=None):
    if _empty(x):
        return Splat(0, ctx.dtype, ctx.shape)
    x = _tensor(x)
    return x.astype(_accumulator(ctx.dtype)).sum(axis=_axes(x, dim), keepdims=keepdim)


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


# normalisations and softmax
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


# views and layout
def _view(ctx, x, size, *rest, **kw):
    if isinstance(x, Splat):
        return Splat(x.value, x.dtype, ctx.shape)
    return _tensor(x).reshape(tuple(int(s) for s in size))


handles(aten.view.default, aten._unsafe_view.default, aten.reshape.default)(_view)


def _unsqueeze(ctx, x, dim):
    if isinstance(x, Splat):
        return Splat(x.value, x.dtype, ctx.shape)
    x = _tensor(x)
    dim = build.normalize_axis(dim, x.ndim + 1, x.shape)
    return x.reshape(x.shape[:dim] + (1,) + x.shape[dim:])


def _squeeze(ctx, x, dim=None):
    if isinstance(x, Splat):
        return Splat(x.value, x.dtype, ctx.shape)
    x = _tensor(x)
    if dim is None:
        dims = range(x.ndim)
    else:
        dims = [build.normalize_axis(d, x.ndim, x.shape) if x.ndim else 0
                for d in (dim if isinstance(dim, (list, tuple)) else (dim,))]
    drop = {d for d in dims if x.ndim and x.shape[d] == 1}
    return x.reshape(tuple(n for k, n in enumerate(x.shape) if k not in drop))


handles(aten.unsqueeze.default)(_unsqueeze)
handles(aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims)(_squeeze)


@handles(aten.expand.default)
def _expand(ctx, x, size, implicit=False):
    if isinstance(x, Splat):
        return Splat(x.value, x.dtype, ctx.shape)
    x = _tensor(x)
    size = [int(s) for s in size]
    padded = (1,) * (len(size) - x.ndim) + x.shape
    target = tuple(p if s == -1 else s for p, s in zip(padded, size))
    return Tensor(build.expand(x.node, target))


@handles(aten.permute.default)
def _permute(ctx, x, dims):
    if isinstance(x, Splat):
        return Splat(x.value, x.dtype, ctx.shape)
    return _tensor(x).transpose(tuple(dims))


@handles(aten.transpose.int)
def _transpose(ctx, x, dim0, dim1):
    if isinstance(x, Splat):
        return Splat(x.value, x.dtype, ctx.shape)
    x = _tensor(x)
    perm = list(range(x.ndim))
    a, b = (build.normalize_axis(d, x.ndim, x.shape) for d in (dim0, dim1))
    perm[a], perm[b] = perm[b], perm[a]
    return x.transpose(tuple(perm))


handles(aten.t.default)(lambda ctx, x: _transpose(ctx, x, 0, -1))


def _index(x: Tensor, dim: int, item):
    dim = build.normalize_axis(dim, x.ndim, x.shape)
    return x[(slice(None),) * dim + (item,)]


@handles(aten.slice.Tensor)
def _slice(ctx, x, dim=0, start=None, end=None, step=1):
    if isinstance(x, Splat):
        return Splat(x.value, x.dtype, ctx.shape)
    return _index(_tensor(x), dim, slice(start, end, step))


@handles(aten.select.int)
def _select(ctx, x, dim, index):
    if isinstance(x, Splat):
        return Splat(x.value, x.dtype, ctx.shape)
    return _index(_tensor(x), dim, int(index))


@handles(aten.split_with_sizes.default)
def _split_with_sizes(ctx, x, split_sizes, dim=0):
    x = _tensor(x)
    out, start = [], 0
    for n in split_sizes:
        out.append(_index(x, dim, slice(start, start + int(n))))
        start += int(n)
    return out


@handles(aten.split.Tensor)
def _split(ctx, x, split_size, dim=0):
    x = _tensor(x)
    length = x.shape[build.normalize_axis(dim, x.ndim, x.shape)]
    sizes = [builtins.min(split_size, length - s) for s in range(0, length, split_size)]
    return _split_with_sizes(ctx, x, sizes or [0], dim)


@handles(aten.cat.default)
def _cat(ctx, tensors, dim=0):
    # parts with no elements add nothing (nor do legacy 1-d empty parts of any rank)
    parts = [_tensor(t, "cat operand") for t in tensors if not _empty(t)]
    return F.concatenate([p.astype(ctx.dtype) for p in parts], axis=dim)


# activations, layout changes, norms and inference normalisations built from the above
from . import torch_composites  # noqa: E402, F401 - registers its handlers


# ops left to PyTorch by design: heavy compute, data-dependent addressing, randomness,
# creation of tensors whose values vary, mutation. They run as aten calls, silently.
_LIBRARY_PACKETS = {
    "mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "linear", "dot", "mv", "addmv",
    "convolution", "convolution_backward", "_convolution",
    "embedding", "embedding_dense_backward", "_embedding_bag",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_attention_math", "scaled_dot_product_attention",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_flash_attention_backward",
    "native_dropout", "native_dropout_backward", "bernoulli", "rand", "rand_like",
    "randn", "randn_like", "randint", "randint_like", "randperm", "uniform", "normal",
    "index", "index_put", "index_select", "gather", "scatter", "scatter_add",
    "scatter_reduce", "slice_scatter", "select_scatter", "diagonal_scatter",
    "as_strided_scatter", "index_add", "index_copy", "embedding_renorm",
    "arange", "empty", "empty_like", "empty_strided", "empty_permuted", "zeros", "ones",
    "full", "full_like", "scalar_tensor", "new_empty", "new_full", "new_zeros", "new_ones",
    "copy", "copy_", "resize_", "set_", "as_strided", "_local_scalar_dense",
}


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[-1]}." \
               f"{target._overloadname}"
    return getattr(target, "__name__", str(target))


def _is_library(node: torch.fx.Node) -> bool:
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__ in _LIBRARY_PACKETS
    return False


def _produces_tensors(node: torch.fx.Node) -> bool:
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        return any(isinstance(v, torch.Tensor) for v in val)
    return isinstance(val, torch.Tensor)


def _tensor_metas(node: torch.fx.Node):
    vals = [node.meta.get("val")] + [a.meta.get("val") for a in node.all_input_nodes]
    for v in vals:
        for m in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(m, torch.Tensor):
                yield m


def _unsupported_reason(node: torch.fx.Node) -> str | None:
    """None when PowerFusion can take this aten node, else why not."""
    if node.target not in HANDLERS:
        return "PowerFusion has no lowering for this op"
    for m in _tensor_metas(node):
        if m.device.type not in DEVICES:
            return f"a tensor on {m.device}: PowerFusion runs on the CPU and CUDA GPUs"
        if m.dtype not in _TORCH_DTYPES:
            return f"dtype {m.dtype} is not supported by PowerFusion"
        if m.layout is not torch.strided:
            return f"layout {m.layout} is not supported"
    check = PREDICATES.get(node.target)
    return check(node) if check is not None else None


def _warn(op: str, reason: str) -> None:
    if stats.first_time((op, reason)):
        logger.warning("PowerFusion: %s runs eagerly in PyTorch: %s", op, reason)


# -- regions -------------------------------------------------------------------------------
_EAGER = object()


def _signature(args) -> tuple:
    key = []
    for a in args:
        if isinstance(a, torch.Tensor):
            key.append((tuple(a.shape), a.stride(), a.dtype, a.device.type))
        elif isinstance(a, (list, tuple)):
            key.append(_signature(a))
        else:
            key.append((type(a).__name__, repr(a)))
    return tuple(key)


def _flat_tensors(args, out: list) -> list:
    """The tensors among args (lists and tuples of tensors opened), in order."""
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            _flat_tensors(a, out)
    return out


# device type -> PowerFusion target; a region's tensors are all on one device
DEVICES = {"cpu": "cpu", "cuda": "cuda"}


def _device_of(flat: list) -> torch.device:
    return flat[0].device if flat else torch.device("cpu")


def _storage(t: torch.Tensor) -> np.ndarray:
    """The tensor's elements as a numpy view of the same memory (bfloat16 as uint16)."""
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.dtype is torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _from_storage(a: np.ndarray, dtype: DType) -> torch.Tensor:
    if dtype is DType.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


class _CpuLaunch:
    """A region's kernels run straight on torch CPU tensors: pointers from data_ptr(),
    outputs and temps from torch.empty (bfloat16 as itself), no numpy views; what to
    allocate and launch is the plan's launch sequence, computed once."""

    def __init__(self, executable):
        plan = executable.plan
        self.inputs = tuple(plan.input_names)
        self.allocations = tuple((name, shape, _TO_TORCH[dtype])
                                 for name, shape, dtype in plan.sequence.allocations)
        self.launches = tuple((executable.kernels[program.name], names)
                              for program, names in plan.sequence.launches)
        self.outputs = tuple(zip(plan.outputs, plan.out_shapes))

    def __call__(self, tensors: list) -> list:
        pointers = {name: t.data_ptr() for name, t in zip(self.inputs, tensors)}
        made = {}
        for name, shape, dtype in self.allocations:
            t = made[name] = torch.empty(shape, dtype=dtype)
            pointers[name] = t.data_ptr()
        for kernel, names in self.launches:
            kernel([pointers[n] for n in names])
        outs, returned = [], set()
        for spec, shape in self.outputs:
            if spec[0] == "buffer":
                t = made[spec[1]].view(shape)
                t = t.clone() if spec[1] in returned else t     # one value twice: two tensors
                returned.add(spec[1])
            elif spec[0] == "input":
                t = tensors[spec[1]].reshape(shape).clone(memory_format=torch.contiguous_format)
            else:
                t = torch.full(shape, spec[1], dtype=_TO_TORCH[spec[2]])
            outs.append(t)
        return outs


@dataclass
class _Compiled:
    executable: Any                  # None when every output is a constant
    tensor_args: tuple[int, ...]     # which of the flattened tensors are graph inputs
    outputs: tuple                   # ("graph", k, dtype, order), ("arg", k)
                                     # (flattened tensor k, returned as it is),
                                     # ("copy", k, order) (a copy of it) or
                                     # ("full", value, dtype, shape, order); order:
                                     # the layout PyTorch gives that result
    cpu_launch: _CpuLaunch | None = None   # the CPU executable, on torch tensors


def _layout_order(meta) -> tuple[int, ...] | None:
    """The order of meta's dims from outermost to innermost in memory (by decreasing
    stride; size-1 dims keep their place), or None when that is the logical order."""
    if not isinstance(meta, torch.Tensor):
        return None
    shape, strides = _concrete(meta.shape), _concrete(meta.stride())
    if shape is None or strides is None:
        return None
    big = [d for d in range(len(shape)) if shape[d] != 1]
    ranked = iter(sorted(big, key=lambda d: (-strides[d], d)))
    order = tuple(next(ranked) if shape[d] != 1 else d for d in range(len(shape)))
    return None if order == tuple(range(len(shape))) else order


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(order)
    for k, d in enumerate(order):
        inv[d] = k
    return tuple(inv)


def _passes_through(fx: torch.fx.Node) -> bool:
    """Whether the region returns this value as PyTorch would: the very argument."""
    while fx.op == "call_function" and fx.target is operator.getitem:
        fx = fx.args[0]
    return fx.op == "placeholder"


class Region(torch.nn.Module):
    """A run of aten ops compiled by PowerFusion per call signature; the original
    aten calls (`self.eager`) are kept to fall back on."""

    def __init__(self, eager: torch.fx.GraphModule, label: str):
        super().__init__()
        self.eager = eager
        self.label = label
        self.ops = [_op_name(n) for n in eager.graph.nodes
                    if n.op == "call_function" and n.target is not operator.getitem]
        out = next(n for n in eager.graph.nodes if n.op == "output")
        self.single = not isinstance(out.args[0], (tuple, list))
        self.cache: dict[tuple, _Compiled] = {}
        self.failed = False

    def forward(self, *args):
        if self.failed:
            return self.eager(*args)
        key = _signature(args)
        compiled = self.cache.get(key)
        if compiled is None:
            compiled = self._compile(args)
            if compiled is None:
                return self.eager(*args)
            self.cache[key] = compiled
        try:
            return self._run(compiled, args)
        except Exception as e:           # noqa: BLE001 - never break the model
            self._give_up(", ".join(dict.fromkeys(self.ops)),
                          f"running the compiled kernels failed: {type(e).__name__}: {e}")
            return self.eager(*args)

    def _run(self, compiled: _Compiled, args):
        outs = []
        flat = _flat_tensors(args, [])
        device = _device_of(flat)
        on_gpu = device.type == "cuda"
        if compiled.executable is not None:
            if on_gpu:          # torch tensors in and out, on torch's current stream
                outs = compiled.executable.run_device([flat[k] for k in compiled.tensor_args])
            elif compiled.cpu_launch is not None and not any(
                    flat[k].is_neg() or flat[k].is_conj() for k in compiled.tensor_args):
                outs = compiled.cpu_launch([flat[k] for k in compiled.tensor_args])
            else:
                outs = compiled.executable.run([_storage(flat[k])
                                                for k in compiled.tensor_args])
        results = []
        for spec in compiled.outputs:
            if spec[0] == "graph":
                _, k, dtype, order = spec
                if on_gpu:
                    t = outs[k].contiguous()
                elif isinstance(outs[k], torch.Tensor):      # the CPU launch's: contiguous
                    t = outs[k]
                else:
                    out = outs[k]
                    if not out.flags.c_contiguous:   # a copied input keeps its layout
                        out = np.ascontiguousarray(out)
                    t = _from_storage(out, dtype)
                results.append(t if order is None else t.permute(_inverse(order)))
            elif spec[0] == "arg":
                results.append(flat[spec[1]])
            elif spec[0] == "copy":
                _, k, order = spec
                src = flat[k]
                results.append(torch.empty_permuted(
                    src.shape, order or tuple(range(src.dim())), dtype=src.dtype,
                    device=device).copy_(src))
            else:
                _, value, dtype, shape, order = spec
                results.append(torch.empty_permuted(
                    shape, order or tuple(range(len(shape))), dtype=_TO_TORCH[dtype],
                    device=device).fill_(value))
        return results[0] if self.single else tuple(results)

    def _compile(self, args) -> _Compiled | None:
        from ..compiler import Executable, compile_graph

        try:
            graph, tensor_args, outputs = self._trace(args)
            flat = _flat_tensors(args, [])
            exe = None
            if graph.outputs:
                exe = compile_graph(graph, input_strides=tuple(
                    tuple(flat[k].stride()) for k in tensor_args),
                    target=DEVICES[_device_of(flat).type])
        except _Fallback as e:
            self._give_up(e.args[1] if len(e.args) > 1 else ", ".join(self.ops), e.args[0])
            return None
        except Exception as e:           # noqa: BLE001 - never break the model
            op = getattr(e, "powerfusion_op", None) or ", ".join(dict.fromkeys(self.ops))
            self._give_up(op, f"{type(e).__name__}: {e}")
            return None
        stats.count("compiles")
        if exe is not None:
            stats.count("kernels", len(exe.plan.kernels))
        cpu_launch = _CpuLaunch(exe) if isinstance(exe, Executable) else None
        return _Compiled(exe, tensor_args, outputs, cpu_launch)

    def _trace(self, args):
        env: dict[torch.fx.Node, Any] = {}
        inputs, tensor_args, flat_of = [], [], {}
        nodes = list(self.eager.graph.nodes)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        counter = iter(range(1 << 62))

        def symbolic(a):
            if isinstance(a, torch.Tensor):
                k = next(counter)
                node = Node(Op.INPUT, (), tuple(a.shape), _dt(a.dtype), len(inputs))
                inputs.append(node)
                tensor_args.append(k)
                flat_of[id(node)] = k
                return Tensor(node)
            if isinstance(a, (list, tuple)):
                return type(a)(symbolic(b) for b in a)
            return a

        for ph, a in zip(placeholders, args):
            env[ph] = symbolic(a)
        result = None
        for n in nodes:
            if n.op == "call_function":
                a = torch.fx.node.map_arg(n.args, lambda x: env[x])
                kw = torch.fx.node.map_arg(n.kwargs, lambda x: env[x])
                if n.target is operator.getitem:
                    env[n] = a[0][a[1]]
                    continue
                try:
                    meta = n.meta.get("val")
                    if _no_elements(meta):       # nothing to compute, whatever the op
                        env[n] = _finish(_zeros_like_meta(meta), meta)
                    else:
                        env[n] = _finish(HANDLERS[n.target](Ctx(n), *a, **kw), meta)
                except _Fallback as e:
                    raise _Fallback(e.args[0], _op_name(n)) from e
                except Exception as e:
                    e.powerfusion_op = _op_name(n)
                    raise
            elif n.op == "output":
                result = torch.fx.node.map_arg(n.args[0], lambda x: env[x])
                out_nodes = n.args[0]
        values = [result] if self.single else list(result)
        out_nodes = [out_nodes] if self.single else list(out_nodes)
        graph_outputs, outputs = [], []
        for v, fx in zip(values, out_nodes):
            # results are laid out as PyTorch lays them out (the order of their
            # strides): aten views downstream may rely on it
            order = _layout_order(fx.meta.get("val"))
            if isinstance(v, Splat):
                outputs.append(("full", v.value, v.dtype, v.shape, order))
            elif isinstance(v, Tensor) and v.node.op is Op.INPUT and _passes_through(fx):
                # an argument (or an item of a list argument) returned as it is
                outputs.append(("arg", flat_of[id(v.node)]))
            elif isinstance(v, Tensor) and v.node.op is Op.INPUT:
                outputs.append(("copy", flat_of[id(v.node)], order))     # a clone
            elif isinstance(v, Tensor) and 0 in v.shape:
                outputs.append(("full", 0, v.dtype, v.shape, order))     # no elements
            else:
                v = _tensor(v, "region output")
                outputs.append(("graph", len(graph_outputs), v.dtype, order))
                graph_outputs.append(v.node if order is None else
                                     build.permute(v.node, order))
        graph = Graph(tuple(inputs), tuple(graph_outputs), {"name": self.label})
        return graph, tuple(tensor_args), tuple(outputs)

    def _give_up(self, op: str, reason: str) -> None:
        if not self.failed:
            self.failed = True
            stats.count("failed_regions")
            stats.count_ops("fused_ops", self.ops, -1)
            stats.count_ops("fallback_ops", self.ops)
        _warn(op, reason)


# -- the aten-graph compiler -----------------------------------------------------------------
_NON_COMPUTE = [aten.view.default, aten._unsafe_view.default, aten.reshape.default,
                aten.permute.default, aten.transpose.int, aten.t.default,
                aten.expand.default, aten.unsqueeze.default, aten.squeeze.default,
                aten.squeeze.dim, aten.squeeze.dims, aten.slice.Tensor, aten.select.int,
                aten.alias.default, aten.detach.default, aten.split_with_sizes.default,
                aten.split.Tensor]
_NON_COMPUTE_NAMES = [_get_qualified_name(t) for t in _NON_COMPUTE]
_NON_COMPUTE_SET = set(_NON_COMPUTE) | {operator.getitem}


class _Support:
    """OperatorSupport for the partitioner, from decisions made once per node."""

    def __init__(self, supported: set):
        self.supported = supported

    def is_node_supported(self, submodules, node: torch.fx.Node) -> bool:
        return node in self.supported


def _classify(gm: torch.fx.GraphModule) -> set:
    supported = set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is operator.getitem:
            if node.args[0] in supported:
                supported.add(node)
            continue
        if not _produces_tensors(node):
            continue                     # arithmetic on sizes and the like
        if node.target in HANDLERS:
            reason = _unsupported_reason(node)
            if reason is None:
                supported.add(node)
                continue
            if _is_library(node):
                stats.count("library_ops")
                continue
            _warn(_op_name(node), reason)
            stats.count_ops("fallback_ops", [_op_name(node)])
        elif _is_library(node):
            stats.count("library_ops")
        else:
            _warn(_op_name(node), "PowerFusion has no lowering for this op")
            stats.count_ops("fallback_ops", [_op_name(node)])
    return supported


def partition(gm: torch.fx.GraphModule, label: str = "graph") -> torch.fx.GraphModule:
    """gm with each maximal run of supported ops replaced by a `Region` module."""
    from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner

    devices = {m.device for node in gm.graph.nodes if node.op == "placeholder"
               for m in [node.meta.get("val")] if isinstance(m, torch.Tensor)}
    unsupported = [d for d in devices if d.type not in DEVICES]
    if unsupported or len(devices) > 1:
        why = (f"its tensors are on {unsupported[0]}; PowerFusion runs on the CPU and CUDA "
               "GPUs" if unsupported else f"its tensors are on several devices "
               f"({', '.join(sorted(map(str, devices)))})")
        _warn(f"the {label} graph", why)
        return gm
    supported = _classify(gm)
    partitioner = CapabilityBasedPartitioner(
        gm, _Support(supported), allows_single_node_partition=True,
        non_compute_ops=_NON_COMPUTE_NAMES)
    parts = partitioner.propose_partitions()
    partitioner.remove_bookend_non_compute_ops(parts)
    parts = [p for p in parts
             if any(n.target not in _NON_COMPUTE_SET for n in p.nodes)]
    # library ops the partition left out are counted; supported ops left out run eagerly
    if not parts:
        return gm
    fused = partitioner.fuse_partitions(parts, prefix=REGION_PREFIX)
    for node in fused.graph.nodes:
        if node.op == "call_module" and node.target.startswith(REGION_PREFIX):
            sub = fused.get_submodule(node.target)
            region = Region(sub, f"{label}.{node.target}")
            setattr(fused, node.target, region)
            stats.count("regions")
            stats.count_ops("fused_ops", region.ops)
    fused.recompile()
    return fused


def _copy(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of gm's graph (node metadata shared, not deep-copied: it holds fake
    tensors) on the same submodules, so a failed partitioning leaves gm intact."""
    graph = torch.fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    return torch.fx.GraphModule(gm, graph)


def compile_aten_graph(gm: torch.fx.GraphModule, example_inputs, kind: str = "forward"):
    """fw/bw/inference compiler for AOTAutograd: a boxed callable running gm with its
    memory-intensive regions as PowerFusion kernels."""
    from functorch.compile import make_boxed_func

    stats.count("graphs")
    try:
        compiled = partition(_copy(gm), label=kind)
    except Exception as e:               # noqa: BLE001 - never break the model
        _warn(f"the whole {kind} graph", f"partitioning failed: {type(e).__name__}: {e}")
        compiled = gm
    return make_boxed_func(compiled.forward)


_DECOMPOSITIONS = None


def decompositions() -> dict:
    """PyTorch's core-aten decompositions, but for attention: normalisations, softmax
    and GELU stay whole (PowerFusion takes them as they are), and fused attention
    stays a library call (its CPU decomposition gives wrong gradients in training:
    the backward op reads a logsumexp the decomposed forward does not produce)."""
    global _DECOMPOSITIONS
    if _DECOMPOSITIONS is None:
        from torch._decomp import core_aten_decompositions
        _DECOMPOSITIONS = {op: fn for op, fn in core_aten_decompositions().items()
                           if "scaled_dot_product" not in str(op)}
    return _DECOMPOSITIONS


def powerfusion_backend(gm: torch.fx.GraphModule, example_inputs, **kwargs):
    """The torch.compile backend: `torch.compile(model, backend="powerfusion")`."""
    from functools import partial

    from torch._dynamo.backends.common import aot_autograd

    backend = aot_autograd(
        fw_compiler=partial(compile_aten_graph, kind="forward"),
        bw_compiler=partial(compile_aten_graph, kind="backward"),
        inference_compiler=partial(compile_aten_graph, kind="inference"),
        decompositions=decompositions())
    return backend(gm, example_inputs, **kwargs)


def register() -> None:
    """Make backend="powerfusion" known to torch.compile in this process, unless the
    installed package's entry point already provides it (torch loads that itself)."""
    from torch._dynamo.backends import registry

    if BACKEND_NAME in registry._COMPILER_FNS:
        return
    try:
        from importlib.metadata import entry_points
        if any(ep.name == BACKEND_NAME for ep in entry_points(group="torch_dynamo_backends")):
            return
    except Exception:                    # noqa: BLE001, S110 - metadata is optional here
        pass
    registry.register_backend(compiler_fn=powerfusion_backend, name=BACKEND_NAME)


register()
