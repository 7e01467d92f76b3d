"""What the replay of aten ops on frontend Tensors works with: `Splat` constants, the
node's recorded metadata (`Ctx`), operands converted to an op's dtype, and results
made to agree with what PyTorch recorded (`_finish`). A handler that cannot replay
its op raises `_Fallback`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

from ...dtypes import DType
from ...graph.ops import Op
from .. import build
from ..torch_storage import TORCH_TO_DTYPE
from ..tensor import Tensor


class _Fallback(Exception):
    """Why one aten op could not be replayed; carries the op's name."""


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
        return TORCH_TO_DTYPE[torch_dtype]
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


def _truth(x) -> Tensor:
    if isinstance(x, Splat):
        return Tensor(build.const(bool(x.value), DType.bool))
    return Tensor(build.to_bool(_tensor(x).node))


def _empty(x) -> bool:
    """Whether x has no elements: then each element of a reduction of x, if it has
    any, reduces over nothing, and is the reduction's identity (sum 0, mean NaN)."""
    return math.prod(x.shape) == 0 if isinstance(x, (Tensor, Splat)) else False


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
