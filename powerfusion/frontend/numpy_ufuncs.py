"""numpy's ufuncs as graph builders: each table entry maps a ufunc's name to the node
it builds from operands (frontend/tensor.py's `__array_ufunc__` dispatches here)."""

from __future__ import annotations

import math

from ..errors import DTypeError
from ..graph.ops import Op
from . import build


def _float_fn(op: Op):
    return lambda x: build.unary_float(op, x)


def _reciprocal(x):
    if not x.dtype.is_float:
        raise DTypeError(f"numpy.reciprocal of a {x.dtype} tensor is integer division in "
                         "numpy; cast to a float dtype first")
    return build.binary(Op.DIV, 1, x)


def _power(a, b):
    if isinstance(b, (bool, int, float)) and not isinstance(a, (bool, int, float)):
        return build.power_scalar(a, b, ufunc=True)
    return build.binary(Op.POW, a, b)


def _invert(x):
    if not x.dtype.is_bool:
        raise DTypeError(f"numpy.invert of a {x.dtype} tensor (bitwise not) is not "
                         "supported; PowerFusion supports ~ on bool tensors only")
    return build.logical_not(x)


UFUNCS = {
    "add": lambda a, b: build.binary(Op.ADD, a, b),
    "subtract": lambda a, b: build.binary(Op.SUB, a, b),
    "multiply": lambda a, b: build.binary(Op.MUL, a, b),
    "true_divide": lambda a, b: build.binary(Op.DIV, a, b),
    "divide": lambda a, b: build.binary(Op.DIV, a, b),
    "remainder": lambda a, b: build.binary(Op.MOD, a, b),     # numpy.mod is remainder too
    "fmod": lambda a, b: build.binary(Op.FMOD, a, b),
    "power": _power,
    "maximum": lambda a, b: build.binary(Op.MAXIMUM, a, b),
    "minimum": lambda a, b: build.binary(Op.MINIMUM, a, b),
    "negative": build.negative,
    "positive": lambda x: x,
    "absolute": build.absolute,
    "square": build.square,
    "reciprocal": _reciprocal,
    "exp": _float_fn(Op.EXP),
    "log": _float_fn(Op.LOG),
    "sqrt": _float_fn(Op.SQRT),
    "tanh": _float_fn(Op.TANH),
    "sin": _float_fn(Op.SIN),
    "cos": _float_fn(Op.COS),
    "tan": _float_fn(Op.TAN),
    "log1p": _float_fn(Op.LOG1P),
    "expm1": _float_fn(Op.EXPM1),
    "log2": _float_fn(Op.LOG2),
    "log10": _float_fn(Op.LOG10),
    "exp2": _float_fn(Op.EXP2),
    "floor": lambda x: build.rounding(Op.FLOOR, x),
    "ceil": lambda x: build.rounding(Op.CEIL, x),
    "trunc": lambda x: build.rounding(Op.TRUNC, x),
    "rint": lambda x: build.rounding(Op.RINT, x),
    "sign": build.sign,
    "greater": lambda a, b: build.compare(Op.GT, a, b),
    "greater_equal": lambda a, b: build.compare(Op.GE, a, b),
    "less": lambda a, b: build.compare(Op.LT, a, b),
    "less_equal": lambda a, b: build.compare(Op.LE, a, b),
    "equal": lambda a, b: build.compare(Op.EQ, a, b),
    "not_equal": lambda a, b: build.compare(Op.NE, a, b),
    "logical_and": lambda a, b: build.logical(Op.AND, a, b),
    "logical_or": lambda a, b: build.logical(Op.OR, a, b),
    "logical_xor": lambda a, b: build.compare(Op.NE, build.to_bool(a), build.to_bool(b)),
    "logical_not": build.logical_not,
    "bitwise_and": lambda a, b: build.bitwise(Op.AND, a, b),
    "bitwise_or": lambda a, b: build.bitwise(Op.OR, a, b),
    "invert": _invert,
    "isnan": lambda x: build.compare(Op.NE, x, x),
    "isinf": lambda x: build.compare(Op.EQ, build.absolute(x), math.inf),
    "isfinite": lambda x: build.compare(Op.LT, build.absolute(x), math.inf),
}

UFUNC_REDUCE = {"add": Op.SUM, "maximum": Op.MAX, "minimum": Op.MIN}
UFUNC_DEFAULTS = {"where": True, "casting": "same_kind", "order": "K", "subok": True,
                  "dtype": None, "signature": None}
