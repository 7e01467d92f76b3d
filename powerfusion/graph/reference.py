"""The numpy oracle: evaluates a Graph op by op, the meaning compiled code must match.

Values of 16-bit float nodes are computed in float32 and rounded to the node's dtype
after every op. bfloat16 needs no ml_dtypes here: inside, a bfloat16 value is a
float32 array holding bfloat16-representable numbers, rounded by `round_to_bfloat16`
(round to nearest even); at the boundary it is uint16 storage, as `exe.run` takes and
gives it. Transcendentals and sums of floats are computed in float64 and rounded once,
so the oracle is at least as accurate as numpy.
"""

from __future__ import annotations

import math

import numpy as np

from ..dtypes import DType
from ..errors import DTypeError, ShapeError
from .graph import Graph, Node
from .ops import Op


# -- bfloat16 without ml_dtypes -----------------------------------------------------------
def round_to_bfloat16(x) -> np.ndarray:
    """Float values rounded to the nearest bfloat16 (ties to even), as float32."""
    x = np.asarray(x)
    return bfloat16_to_float32(float32_to_bfloat16_bits(
        float64_to_float32_odd(x) if x.dtype == np.float64 else x))


def float64_to_float32_odd(x) -> np.ndarray:
    """float64 -> float32 rounded to odd (an inexact result gets its last bit set), so
    rounding on to bfloat16 rounds once, as a direct conversion would."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        f = x.astype(np.float32)
        inexact = f.astype(np.float64) != x
        away = np.abs(f.astype(np.float64)) > np.abs(x)
    bits = f.view(np.uint32) - away.astype(np.uint32) | inexact.astype(np.uint32)
    return np.where(inexact, bits.view(np.float32), f)


def float32_to_bfloat16_bits(x) -> np.ndarray:
    """uint16 bfloat16 storage of float32 values, rounded to nearest even; NaN stays NaN."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, ((bits >> 16) | 0x40).astype(np.uint16), rounded)


def bfloat16_to_float32(bits) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# -- values --------------------------------------------------------------------------------
def _value_dtype(d: DType) -> np.dtype:
    """How the oracle holds a node's value (bfloat16 as float32)."""
    return np.dtype(np.float32) if d is DType.bfloat16 else d.to_numpy()


def _round(value, d: DType) -> np.ndarray:
    """A computed value rounded to d, as the node stores it."""
    value = np.asarray(value)
    if d is DType.bfloat16:
        return round_to_bfloat16(value if value.dtype == np.float64 else
                                 value.astype(np.float32))
    with np.errstate(invalid="ignore", over="ignore"):
        return value.astype(_value_dtype(d))


def _load_input(node: Node, array) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != node.shape:
        raise ShapeError(f"input {node.arg}: expected shape {node.shape}, got {array.shape}")
    if node.dtype is DType.bfloat16:
        if array.dtype == np.uint16 or array.dtype.name == "bfloat16":
            return bfloat16_to_float32(array.view(np.uint16))
        if array.dtype.kind == "f":
            return round_to_bfloat16(array)
    elif array.dtype == node.dtype.to_numpy():
        return array
    raise DTypeError(f"input {node.arg}: expected {node.dtype}, got {array.dtype}")


def _erf(x):
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x)).astype(np.float64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# computed in float64 when the operands are floats, then rounded once
_PRECISE = {
    Op.EXP: np.exp, Op.LOG: np.log, Op.SQRT: np.sqrt, Op.RSQRT: lambda x: 1.0 / np.sqrt(x),
    Op.TANH: np.tanh, Op.ERF: _erf, Op.SIGMOID: _sigmoid, Op.SILU: lambda x: x * _sigmoid(x),
    Op.GELU: lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    Op.GELU_TANH: lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi)
                                                     * (x + 0.044715 * x ** 3))),
    Op.SIN: np.sin, Op.COS: np.cos, Op.POW: np.power, Op.TAN: np.tan, Op.LOG1P: np.log1p,
    Op.EXPM1: np.expm1, Op.LOG2: np.log2, Op.LOG10: np.log10, Op.EXP2: np.exp2,
}

# computed in the node's compute dtype, exactly as numpy does
_EXACT = {
    Op.NEG: np.negative, Op.ABS: np.abs, Op.RELU: lambda x: np.maximum(x, x.dtype.type(0)),
    Op.NOT: np.logical_not, Op.FLOOR: np.floor, Op.CEIL: np.ceil, Op.TRUNC: np.trunc,
    Op.RINT: np.rint, Op.SIGN: np.sign,
    Op.ADD: np.add, Op.SUB: np.subtract, Op.MUL: np.multiply, Op.DIV: np.true_divide,
    Op.FMOD: np.fmod, Op.MOD: np.remainder,     # exact; of ints, x % 0 and x fmod 0 are 0
    Op.MAXIMUM: np.maximum, Op.MINIMUM: np.minimum,
    Op.LT: np.less, Op.LE: np.less_equal, Op.GT: np.greater, Op.GE: np.greater_equal,
    Op.EQ: np.equal, Op.NE: np.not_equal, Op.AND: np.logical_and, Op.OR: np.logical_or,
    Op.WHERE: np.where,
}


def _compute(d: DType) -> np.dtype:
    return _value_dtype(d.compute)


def _elementwise(n: Node, srcs: list[np.ndarray]) -> np.ndarray:
    if n.op is Op.CAST:
        return srcs[0]                    # _round converts to the node's dtype
    if n.op in _PRECISE and all(s.dtype.kind == "f" for s in srcs):
        return _PRECISE[n.op](*(s.astype(np.float64) for s in srcs))
    if n.op is Op.WHERE:
        cond, a, b = srcs
        return np.where(cond, a.astype(_compute(n.dtype)), b.astype(_compute(n.dtype)))
    fn = _EXACT.get(n.op) or _PRECISE[n.op]
    args = [s.astype(_compute(n.srcs[k].dtype)) for k, s in enumerate(srcs)]
    if n.op is Op.DIV and n.dtype.is_int:
        return np.trunc(np.true_divide(*args))
    return fn(*args)


def _reduce(n: Node, src: np.ndarray) -> np.ndarray:
    axes = tuple(n.arg)
    if n.op is Op.SUM:
        acc = np.float64 if n.dtype.is_float else _value_dtype(n.dtype)
        return np.sum(src.astype(acc), axis=axes, keepdims=True)
    fn = np.max if n.op is Op.MAX else np.min
    return fn(src, axis=axes, keepdims=True)


def _movement(n: Node, src: np.ndarray) -> np.ndarray:
    if n.op is Op.RESHAPE:
        return src.reshape(n.shape)
    if n.op is Op.PERMUTE:
        return np.transpose(src, n.arg)
    if n.op is Op.EXPAND:
        return np.broadcast_to(src, n.shape)
    if n.op is Op.SLICE:
        # a normalised stop of -1 means 'before index 0', which slice() reads as the end
        return src[tuple(slice(a, b if b >= 0 else None, c) for a, b, c in n.arg)]
    if n.op is Op.SHIFT:
        axis, offset = n.arg
        index = np.clip(np.arange(n.shape[axis]) - offset, 0, src.shape[axis] - 1)
        return np.take(src, index, axis=axis)
    raise AssertionError(f"not a movement op: {n}")


def _node_value(n: Node, srcs: list[np.ndarray], inputs) -> np.ndarray:
    if n.op is Op.INPUT:
        return _load_input(n, inputs[n.arg])
    if n.op is Op.CONST:
        return np.asarray(n.arg)
    if n.op is Op.IOTA:
        shape = [1] * len(n.shape)
        shape[n.arg] = n.shape[n.arg]
        return np.broadcast_to(np.arange(n.shape[n.arg]).reshape(shape), n.shape)
    if n.op is Op.CONCAT:
        return np.concatenate(srcs, axis=n.arg)
    if n.op in (Op.SUM, Op.MAX, Op.MIN):
        return _reduce(n, srcs[0])
    if n.op in (Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SLICE, Op.SHIFT):
        return _movement(n, srcs[0])
    return _elementwise(n, srcs)


def evaluate(graph: Graph, inputs: list) -> list[np.ndarray]:
    """The graph's outputs for these inputs: fresh C-contiguous arrays, bfloat16 as
    uint16 storage. Inputs are numpy arrays of the INPUT dtypes (bfloat16 as uint16
    storage, an ml_dtypes array, or floats to round)."""
    if len(inputs) != len(graph.inputs):
        raise ShapeError(f"the graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    values: dict[int, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for n in graph.toposort():
            srcs = [values[id(s)] for s in n.srcs]
            values[id(n)] = _round(_node_value(n, srcs, inputs), n.dtype)
    outs = []
    for o in graph.outputs:
        v = values[id(o)]
        v = float32_to_bfloat16_bits(v) if o.dtype is DType.bfloat16 else v
        outs.append(np.array(v, order="C", copy=True))
    return outs
