"""The operator enum of the tensor graph, with the property sets passes ask about.

A new op is one enum member plus one line per backend (its C expression), not a class.
"""

from __future__ import annotations

import enum


class Op(enum.Enum):
    # leaves
    INPUT = enum.auto()      # arg: position among the function's tensor arguments
    CONST = enum.auto()      # arg: Python scalar; shape (); broadcasts implicitly
    # unary element-wise
    NEG = enum.auto()
    EXP = enum.auto()
    LOG = enum.auto()
    SQRT = enum.auto()
    RSQRT = enum.auto()
    ABS = enum.auto()
    TANH = enum.auto()
    ERF = enum.auto()
    SIGMOID = enum.auto()
    RELU = enum.auto()
    SILU = enum.auto()
    GELU = enum.auto()       # exact: x * Phi(x)
    GELU_TANH = enum.auto()  # tanh approximation
    SIN = enum.auto()
    COS = enum.auto()
    TAN = enum.auto()
    LOG1P = enum.auto()      # log(1 + x), accurate near 0
    EXPM1 = enum.auto()      # exp(x) - 1, accurate near 0
    LOG2 = enum.auto()
    LOG10 = enum.auto()
    EXP2 = enum.auto()
    FLOOR = enum.auto()      # rounding to an integer value, in the float dtype
    CEIL = enum.auto()
    TRUNC = enum.auto()
    RINT = enum.auto()       # to nearest, ties to even (numpy's rint and round)
    SIGN = enum.auto()       # -1, 0 or 1; NaN stays NaN
    NOT = enum.auto()        # logical not of a bool
    CAST = enum.auto()       # to node.dtype
    # binary element-wise
    ADD = enum.auto()
    SUB = enum.auto()
    MUL = enum.auto()
    DIV = enum.auto()        # true division on floats, floor division never
    FMOD = enum.auto()       # C's fmod, exact: the sign of the dividend (x fmod 0: NaN, int 0)
    MOD = enum.auto()        # numpy's remainder, exact: the sign of the divisor (x % 0: NaN, int 0)
    POW = enum.auto()
    MAXIMUM = enum.auto()
    MINIMUM = enum.auto()
    LT = enum.auto()
    LE = enum.auto()
    GT = enum.auto()
    GE = enum.auto()
    EQ = enum.auto()
    NE = enum.auto()
    AND = enum.auto()        # logical, on bools
    OR = enum.auto()
    # ternary element-wise
    WHERE = enum.auto()      # srcs: (cond: bool, a, b)
    # reductions; arg: sorted tuple of axes; result keeps reduced dims as 1
    SUM = enum.auto()
    MAX = enum.auto()
    MIN = enum.auto()
    # movement (views): no arithmetic, only a new map from indices to elements
    RESHAPE = enum.auto()    # arg: None; node.shape is the new shape
    PERMUTE = enum.auto()    # arg: the permutation, as numpy.transpose takes it
    EXPAND = enum.auto()     # broadcast size-1 dims to node.shape
    SLICE = enum.auto()      # arg: tuple of (start, stop, step) per axis, normalised
    CONCAT = enum.auto()     # arg: axis; srcs agree on every other axis
    # internal: made by canonicalisation, never by tracing
    IOTA = enum.auto()       # leaf: int64 index along axis `arg`, of node.shape
    SHIFT = enum.auto()      # view: arg (axis, offset): src[clamp(i - offset)] along axis


class Group:
    """Property sets of ops (class attributes, frozensets)."""

    UNARY = frozenset({Op.NEG, Op.EXP, Op.LOG, Op.SQRT, Op.RSQRT, Op.ABS, Op.TANH, Op.ERF,
                       Op.SIGMOID, Op.RELU, Op.SILU, Op.GELU, Op.GELU_TANH, Op.SIN, Op.COS,
                       Op.TAN, Op.LOG1P, Op.EXPM1, Op.LOG2, Op.LOG10, Op.EXP2, Op.FLOOR,
                       Op.CEIL, Op.TRUNC, Op.RINT, Op.SIGN, Op.NOT, Op.CAST})
    BINARY = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.FMOD, Op.MOD, Op.POW, Op.MAXIMUM,
                        Op.MINIMUM, Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.AND, Op.OR})
    TERNARY = frozenset({Op.WHERE})
    ELEMENTWISE = UNARY | BINARY | TERNARY
    COMPARISON = frozenset({Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE})
    LOGICAL = frozenset({Op.NOT, Op.AND, Op.OR})
    REDUCE = frozenset({Op.SUM, Op.MAX, Op.MIN})
    MOVEMENT = frozenset({Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SLICE, Op.SHIFT})
    COMMUTATIVE = frozenset({Op.ADD, Op.MUL, Op.MAXIMUM, Op.MINIMUM, Op.EQ, Op.NE, Op.AND,
                             Op.OR})
    TRANSCENDENTAL = frozenset({Op.EXP, Op.LOG, Op.TANH, Op.ERF, Op.SIGMOID, Op.SILU, Op.GELU,
                                Op.GELU_TANH, Op.SIN, Op.COS, Op.TAN, Op.LOG1P, Op.EXPM1,
                                Op.LOG2, Op.LOG10, Op.EXP2})
    LEAF = frozenset({Op.INPUT, Op.CONST, Op.IOTA})


# The element-wise op a reduction combines with.
REDUCE_COMBINE = {Op.SUM: Op.ADD, Op.MAX: Op.MAXIMUM, Op.MIN: Op.MINIMUM}


ACCUMULATES = {Op.ADD: Op.SUM, Op.MAXIMUM: Op.MAX, Op.MINIMUM: Op.MIN, Op.MUL: None}


def accumulate_identity(op: Op, dtype) -> bool | int | float | None:
    """The value an accumulation `r = op(r, x)` starts from in each thread that holds a
    partial of it (None: op has no identity, so it cannot be split over threads)."""
    if op is Op.MUL:
        return True if dtype.is_bool else 1 if dtype.is_int else 1.0
    return reduce_identity(ACCUMULATES[op], dtype) if op in ACCUMULATES else None


def reduce_identity(op: Op, dtype) -> bool | int | float:
    """The value a reduction starts from (and gives over no elements): 0 for a sum, the
    lowest value of the dtype for a max, the highest for a min."""
    if dtype.is_bool:
        return op is Op.MIN
    if op is Op.SUM:
        return 0 if dtype.is_int else 0.0
    if dtype.is_float:
        return float("-inf") if op is Op.MAX else float("inf")
    bits = dtype.itemsize * 8
    return -2**(bits - 1) if op is Op.MAX else 2**(bits - 1) - 1
