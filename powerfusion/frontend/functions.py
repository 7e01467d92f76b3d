"""The functions users call as `pf.xxx`.

On traced tensors they build graph nodes; on anything else they compute with numpy,
so a function written with them also runs un-jitted (and gives the reference answer:
where numpy has no such function, it is computed in float64 and rounded once).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DTypeError
from ..graph.ops import Op
from . import build
from .tensor import Tensor, to_operand


def _any_traced(*values) -> bool:
    return any(isinstance(v, Tensor) for v in values)


def _float_result(x: np.ndarray) -> np.dtype:
    """numpy's result dtype of a float function of x (bool -> float16, int -> float64)."""
    if x.dtype.kind == "b":
        return np.dtype(np.float16)
    if x.dtype.kind in "iu":
        return np.dtype(np.float64)
    return x.dtype


def _in_float64(fn):
    """A numpy implementation computed in float64 and rounded once to the result dtype."""
    def concrete(x):
        x = np.asarray(x)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = fn(x.astype(np.float64))
        return np.asarray(out, dtype=np.float64).astype(_float_result(x))
    return concrete


_erf64 = np.frompyfunc(math.erf, 1, 1)


def _erf(x):
    return np.asarray(_erf64(x)).astype(np.float64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _unary(name: str, op: Op, concrete, traced=None):
    traced = traced or (lambda node: build.unary_float(op, node))

    def fn(x):
        if isinstance(x, Tensor):
            return Tensor(traced(x.node))
        return concrete(x)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Element-wise {name}: a graph node on traced tensors, numpy otherwise."
    return fn


exp = _unary("exp", Op.EXP, np.exp)
log = _unary("log", Op.LOG, np.log)
sqrt = _unary("sqrt", Op.SQRT, np.sqrt)
rsqrt = _unary("rsqrt", Op.RSQRT, _in_float64(lambda x: 1.0 / np.sqrt(x)))
abs = _unary("abs", Op.ABS, np.abs, build.absolute)  # noqa: A001 - numpy's name
tanh = _unary("tanh", Op.TANH, np.tanh)
erf = _unary("erf", Op.ERF, _in_float64(_erf))
sigmoid = _unary("sigmoid", Op.SIGMOID, _in_float64(_sigmoid))
silu = _unary("silu", Op.SILU, _in_float64(lambda x: x * _sigmoid(x)))
sin = _unary("sin", Op.SIN, np.sin)
cos = _unary("cos", Op.COS, np.cos)
tan = _unary("tan", Op.TAN, np.tan)
log1p = _unary("log1p", Op.LOG1P, np.log1p)
expm1 = _unary("expm1", Op.EXPM1, np.expm1)
log2 = _unary("log2", Op.LOG2, np.log2)
log10 = _unary("log10", Op.LOG10, np.log10)
exp2 = _unary("exp2", Op.EXP2, np.exp2)
floor = _unary("floor", Op.FLOOR, np.floor, lambda node: build.rounding(Op.FLOOR, node))
ceil = _unary("ceil", Op.CEIL, np.ceil, lambda node: build.rounding(Op.CEIL, node))
trunc = _unary("trunc", Op.TRUNC, np.trunc, lambda node: build.rounding(Op.TRUNC, node))
rint = _unary("rint", Op.RINT, np.rint, lambda node: build.rounding(Op.RINT, node))
sign = _unary("sign", Op.SIGN, np.sign, build.sign)


def round(x, decimals: int = 0):  # noqa: A001 - numpy's name
    """numpy.round: to nearest, ties to even, at 10**-decimals."""
    if isinstance(x, Tensor):
        return Tensor(build.round_decimals(x.node, decimals))
    return np.round(x, decimals)


def relu(x):
    """max(x, 0), keeping x's dtype."""
    if isinstance(x, Tensor):
        return Tensor(build.relu(x.node))
    x = np.asarray(x)
    if x.dtype.kind == "b":
        raise DTypeError("relu expects a numeric tensor, got bool")
    return np.maximum(x, np.zeros((), x.dtype))


_gelu_exact = _in_float64(lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))))
_gelu_tanh = _in_float64(lambda x: 0.5 * x * (1.0 + np.tanh(
    math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))))


def gelu(x, approximate: str = "none"):
    """GELU: x * Phi(x) exactly ("none"), or the tanh approximation ("tanh")."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    if isinstance(x, Tensor):
        op = Op.GELU if approximate == "none" else Op.GELU_TANH
        return Tensor(build.unary_float(op, x.node))
    return (_gelu_exact if approximate == "none" else _gelu_tanh)(x)


def where(condition, x, y):
    """x where condition holds, else y, broadcast together."""
    if _any_traced(condition, x, y):
        ops = [to_operand(v, what=f"pf.where operand {k}") for k, v in
               enumerate((condition, x, y))]
        return Tensor(build.where(*ops))
    return np.where(condition, x, y)


def _binary(name: str, op: Op, concrete):
    def fn(x, y):
        if _any_traced(x, y):
            a = to_operand(x, what=f"pf.{name} operand 0")
            b = to_operand(y, what=f"pf.{name} operand 1")
            return Tensor(build.binary(op, a, b))
        return concrete(x, y)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Element-wise {name} with numpy's broadcasting and type promotion."
    return fn


maximum = _binary("maximum", Op.MAXIMUM, np.maximum)
minimum = _binary("minimum", Op.MINIMUM, np.minimum)
remainder = mod = _binary("remainder", Op.MOD, np.remainder)   # the sign of the divisor
fmod = _binary("fmod", Op.FMOD, np.fmod)                       # the sign of the dividend


def sum(x, axis=None, keepdims: bool = False):  # noqa: A001 - numpy's name
    return x.sum(axis=axis, keepdims=keepdims) if isinstance(x, Tensor) \
        else np.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims: bool = False):
    return x.mean(axis=axis, keepdims=keepdims) if isinstance(x, Tensor) \
        else np.mean(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims: bool = False):  # noqa: A001 - numpy's name
    return x.max(axis=axis, keepdims=keepdims) if isinstance(x, Tensor) \
        else np.max(x, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims: bool = False):  # noqa: A001 - numpy's name
    return x.min(axis=axis, keepdims=keepdims) if isinstance(x, Tensor) \
        else np.min(x, axis=axis, keepdims=keepdims)


def reshape(x, shape):
    return x.reshape(shape) if isinstance(x, Tensor) else np.reshape(x, shape)


def transpose(x, axes=None):
    return x.transpose(axes) if isinstance(x, Tensor) else np.transpose(x, axes)


def concatenate(seq, axis: int = 0):
    """Join tensors along an existing axis; they agree on every other axis."""
    seq = list(seq)
    if _any_traced(*seq):
        nodes = []
        for k, v in enumerate(seq):
            o = to_operand(v, what=f"pf.concatenate operand {k}")
            if not hasattr(o, "shape"):
                raise DTypeError(f"pf.concatenate operand {k}: expected a tensor, "
                                 f"got {type(v).__name__}")
            nodes.append(o)
        return Tensor(build.concatenate(nodes, axis))
    return np.concatenate(seq, axis=axis)


__all__ = ["where", "maximum", "minimum", "remainder", "mod", "fmod", "exp", "log", "sqrt",
           "rsqrt", "abs", "tanh", "erf", "sigmoid", "relu", "silu", "gelu", "sin", "cos", "tan",
           "log1p", "expm1", "log2", "log10", "exp2", "floor", "ceil", "trunc", "rint", "round", "sign", "sum",
           "mean", "max", "min", "reshape", "transpose", "concatenate"]
