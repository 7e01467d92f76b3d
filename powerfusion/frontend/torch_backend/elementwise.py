"""Handlers of element-wise aten ops, casts, copies and constants: each computes in
the dtype PyTorch recorded for the node (`ctx.dtype`); constants are `Splat`s."""

from __future__ import annotations

import operator

import torch
import torch.fx

from ...graph.ops import Op
from .. import build
from .. import functions as F
from ..tensor import Tensor
from .registry import PREDICATES, handles
from .values import Splat, _dt, _operand, _tensor, _truth

aten = torch.ops.aten
prims = torch.ops.prims


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


# -- modulo --------------------------------------------------------------------------------
def _modulo_check(node):
    """Integer modulo compiles only by a nonzero Python scalar: PyTorch raises
    ZeroDivisionError for a zero divisor, which a kernel cannot; its bool kernels do
    not exist (eager raises)."""
    out = node.meta.get("val")
    if not isinstance(out, torch.Tensor) or out.dtype.is_floating_point:
        return None
    if out.dtype is torch.bool:
        return "modulo of bools (PyTorch has no such kernel)"
    divisor = node.args[1]
    if isinstance(divisor, torch.fx.Node) or divisor == 0:
        return ("integer modulo by a tensor or by 0 (PyTorch raises ZeroDivisionError for a "
                "zero divisor; a kernel cannot)")
    return None


@handles(aten.fmod.Tensor, aten.fmod.Scalar, elementwise=True, check=_modulo_check)
def _fmod(ctx, a, b):
    a, b = _operand(a, ctx.dtype), _operand(b, ctx.dtype)
    return F.fmod(a, b)


@handles(aten.remainder.Tensor, aten.remainder.Scalar, aten.remainder.Scalar_Tensor,
         elementwise=True, check=_modulo_check)
def _remainder(ctx, a, b):
    """PyTorch's remainder: fmod, plus b where a nonzero result's sign differs from b's.
    On floats a zero result keeps fmod's sign (the dividend's), where numpy's remainder
    (Op.MOD) gives the divisor's: 0 % -1 is +0 here, -0 in numpy."""
    a, b = _operand(a, ctx.dtype), _operand(b, ctx.dtype)
    if not ctx.dtype.is_float:
        return F.remainder(a, b)          # ints: the two agree (x % 0 is refused above)
    m = F.fmod(a, b)
    return F.where((m != 0) & ((m < 0) != (b < 0)), m + b, m)


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


# -- constants -----------------------------------------------------------------------------
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
