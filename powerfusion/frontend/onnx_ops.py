"""The ONNX operators PowerFusion claims, each replayed on graph Nodes through `build`.

A rule says how one ONNX op becomes graph nodes (`handler`), which of its inputs are
read as values while tracing (`static`: a Reshape's shape, a Slice's bounds, a
reduction's axes) and, from what is known at load time, why a node cannot be
claimed (`check`: an int Div, an opset whose semantics differ). ONNX's binary ops
take operands of one dtype, so numpy's promotion in `build` never changes a type;
where ONNX and numpy still differ (int32 sums, 16-bit accumulation) the importer
casts each result to the dtype ONNX's type inference gives.

Imports nothing from onnx: the importer hands each handler an `OpContext`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError, UnsupportedError
from ..graph.graph import Node
from ..graph.ops import Op
from . import build


# ONNX's TensorProto element types that PowerFusion computes with
ELEM_DTYPES = {1: DType.float32, 10: DType.float16, 16: DType.bfloat16, 11: DType.float64,
               6: DType.int32, 7: DType.int64, 9: DType.bool}


@dataclass
class NodeInfo:
    """What is known about one ONNX node at load time."""

    name: str
    op_type: str
    inputs: list[str]            # "" for an optional input left out
    outputs: list[str]
    attrs: dict[str, Any]
    opset: int                   # the model's version of the default domain
    in_dtypes: list[DType | None] = field(default_factory=list)   # None: unknown
    out_dtypes: list[DType | None] = field(default_factory=list)
    known: dict[int, np.ndarray] = field(default_factory=dict)    # inputs that are constants

    @property
    def label(self) -> str:
        return f"node {self.name!r} ({self.op_type})"


class OpContext:
    """A node's inputs while its region is traced: graph Nodes, and the values of the
    inputs known at trace time (load-time constants, statics)."""

    def __init__(self, info: NodeInfo, nodes: dict[str, Node], known: dict[str, np.ndarray]):
        self.info, self._nodes, self._known = info, nodes, known

    def attr(self, name: str, default=None):
        return self.info.attrs.get(name, default)

    def has(self, k: int) -> bool:
        return k < len(self.info.inputs) and self.info.inputs[k] != ""

    def node(self, k: int) -> Node:
        if not self.has(k):
            raise ShapeError(f"input {k} is required")
        return self._nodes[self.info.inputs[k]]

    def nodes(self) -> list[Node]:
        return [self.node(k) for k in range(len(self.info.inputs)) if self.has(k)]

    def static(self, k: int) -> np.ndarray | None:
        """Input k's value (None when left out); only for inputs a rule lists as static."""
        return self._known[self.info.inputs[k]] if self.has(k) else None

    def known(self, k: int) -> np.ndarray | None:
        """Input k's value if it is known while tracing (a constant), else None."""
        return self._known.get(self.info.inputs[k]) if self.has(k) else None

    def operands(self) -> tuple[list[Node], tuple[int, ...]]:
        """The inputs of an element-wise op and ONNX's broadcast shape of them. A
        one-element constant becomes a scalar CONST of its dtype (strongly typed, so
        no promotion), unless every operand is one."""
        names = [n for n in self.info.inputs if n != ""]
        shapes = [self._nodes[n].shape for n in names]
        lift = [n in self._known and self._known[n].size == 1 and
                self._known[n].dtype.kind in "biuf" for n in names]
        nodes = []
        for n, lifted in zip(names, lift):
            if lifted and not all(lift):
                node = self._nodes[n]
                nodes.append(build.const(self._known[n].reshape(()).item(), node.dtype))
            else:
                nodes.append(self._nodes[n])
        return nodes, build.broadcast_shapes(*shapes)


class Delegate(Exception):
    """Raised by a handler for static values it cannot compile (a Slice with negative
    steps): the region then runs in the library for those values."""


@dataclass(frozen=True)
class Rule:
    handler: Callable[[OpContext], list[Node | None]]
    static: frozenset[int] = frozenset()
    check: Callable[[NodeInfo], str | None] | None = None


RULES: dict[str, Rule] = {}


def rule(*op_types: str, static=(), check=None):
    def deco(fn):
        for t in op_types:
            RULES[t] = Rule(fn, frozenset(static), check)
        return fn
    return deco


# -- checks at load time ---------------------------------------------------------------------
def _float_only(info: NodeInfo) -> str | None:
    known = [d for d in info.in_dtypes[:1] if d is not None]
    if known and not known[0].is_float:
        return f"{info.op_type} of {known[0]} (PowerFusion claims it on floats)"
    return None


def _numeric(info: NodeInfo) -> str | None:
    if info.in_dtypes and info.in_dtypes[0] is DType.bool:
        return f"{info.op_type} of bool"
    return None


def _shaped(x: Node, shape: tuple[int, ...]) -> Node:
    """x broadcast to ONNX's result shape (a lifted scalar may have hidden some dims)."""
    return build.expand(x, shape) if x.shape != shape else x


# -- element-wise ------------------------------------------------------------------------------
def _unary(fn):
    def handler(ctx: OpContext):
        (x,), shape = ctx.operands()
        return [_shaped(fn(x, ctx), shape)]
    return handler


_FLOAT_UNARY = {"Exp": Op.EXP, "Log": Op.LOG, "Sqrt": Op.SQRT, "Tanh": Op.TANH,
                "Erf": Op.ERF, "Sigmoid": Op.SIGMOID, "Sin": Op.SIN, "Cos": Op.COS,
                "Tan": Op.TAN}
for _name, _op in _FLOAT_UNARY.items():
    rule(_name, check=_float_only)(_unary(lambda x, ctx, op=_op: build.unary_float(op, x)))
# ONNX's Round is numpy's rint: halves to even
for _name, _op in {"Floor": Op.FLOOR, "Ceil": Op.CEIL, "Round": Op.RINT}.items():
    rule(_name, check=_float_only)(_unary(lambda x, ctx, op=_op: build.rounding(op, x)))
rule("Sign", check=_numeric)(_unary(lambda x, ctx: build.sign(x)))

rule("Neg", check=_numeric)(_unary(lambda x, ctx: build.negative(x)))
rule("Abs", check=_numeric)(_unary(lambda x, ctx: build.absolute(x)))
rule("Relu", check=_numeric)(_unary(lambda x, ctx: build.relu(x)))
rule("Reciprocal", check=_float_only)(
    _unary(lambda x, ctx: build.binary(Op.DIV, build.const(1, x.dtype), x)))
rule("Not")(_unary(lambda x, ctx: build.logical_not(x)))
rule("Identity")(lambda ctx: [ctx.node(0)])
rule("IsNaN", check=_float_only)(_unary(lambda x, ctx: build.compare(Op.NE, x, x)))


@rule("IsInf", check=_float_only)
def _isinf(ctx: OpContext):
    x = ctx.node(0)
    pos, neg = ctx.attr("detect_positive", 1), ctx.attr("detect_negative", 1)
    hits = [build.compare(Op.EQ, x, build.const(v, x.dtype))
            for v, on in ((math.inf, pos), (-math.inf, neg)) if on]
    if not hits:
        return [build.compare(Op.LT, x, x)]            # all false, NaN included
    return [hits[0] if len(hits) == 1 else build.logical(Op.OR, *hits)]


def _scalar(dtype: DType, value: float) -> Node:
    return build.const(value, dtype)


def _leaky(x, ctx):
    a = _scalar(x.dtype, ctx.attr("alpha", 0.01))
    return build.where(build.compare(Op.LT, x, _scalar(x.dtype, 0)), build.binary(Op.MUL, x, a), x)


def _elu(x, ctx):
    a = _scalar(x.dtype, ctx.attr("alpha", 1.0))
    neg = build.binary(Op.MUL, a, build.binary(Op.SUB, build.unary_float(Op.EXP, x),
                                               _scalar(x.dtype, 1)))
    return build.where(build.compare(Op.LT, x, _scalar(x.dtype, 0)), neg, x)


def _hard_sigmoid(x, ctx, alpha=None, beta=None):
    a = _scalar(x.dtype, ctx.attr("alpha", 0.2) if alpha is None else alpha)
    b = _scalar(x.dtype, ctx.attr("beta", 0.5) if beta is None else beta)
    y = build.binary(Op.ADD, build.binary(Op.MUL, a, x), b)
    return build.binary(Op.MINIMUM, build.binary(Op.MAXIMUM, y, _scalar(x.dtype, 0)),
                        _scalar(x.dtype, 1))


def _softplus(x):
    # log(1 + exp(x)) without overflow: max(x, 0) + log(1 + exp(-|x|))
    tail = build.unary_float(Op.LOG, build.binary(Op.ADD, _scalar(x.dtype, 1), build.unary_float(
        Op.EXP, build.negative(build.absolute(x)))))
    return build.binary(Op.ADD, build.relu(x), tail)


rule("LeakyRelu", check=_float_only)(_unary(_leaky))
rule("Elu", check=_float_only)(_unary(_elu))
rule("HardSigmoid", check=_float_only)(_unary(_hard_sigmoid))
rule("HardSwish", check=_float_only)(_unary(
    lambda x, ctx: build.binary(Op.MUL, x, _hard_sigmoid(x, ctx, 1 / 6, 0.5))))
rule("Softplus", check=_float_only)(_unary(lambda x, ctx: _softplus(x)))
rule("Softsign", check=_float_only)(_unary(lambda x, ctx: build.binary(
    Op.DIV, x, build.binary(Op.ADD, _scalar(x.dtype, 1), build.absolute(x)))))
rule("Mish", check=_float_only)(_unary(lambda x, ctx: build.binary(
    Op.MUL, x, build.unary_float(Op.TANH, _softplus(x)))))


@rule("Gelu", check=_float_only)
def _gelu(ctx: OpContext):
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise UnsupportedError(f"attribute approximate={approximate!r}: expected 'none' "
                               "or 'tanh'")
    op = Op.GELU if approximate == "none" else Op.GELU_TANH
    return [build.unary_float(op, ctx.node(0))]


def _binary(op: Op):
    def handler(ctx: OpContext):
        (a, b), shape = ctx.operands()
        return [_shaped(build.binary(op, a, b), shape)]
    return handler


rule("Add", check=_numeric)(_binary(Op.ADD))
rule("Sub", check=_numeric)(_binary(Op.SUB))
rule("Mul", check=_numeric)(_binary(Op.MUL))
rule("Div", check=_float_only)(_binary(Op.DIV))     # ONNX's int Div truncates: a library op


def _mod_check(info: NodeInfo) -> str | None:
    """ONNX's Mod: fmod=1 is C's fmod, fmod=0 Python's % (the divisor's sign): numpy's
    remainder, special values included, on floats from opset 28 (before, fmod=0 on floats
    is invalid, and left to the library to reject). An integer x % 0, undefined in ONNX,
    gives 0 here, as in numpy."""
    fmod = info.attrs.get("fmod", 0)
    if fmod not in (0, 1):
        return f"Mod with fmod={fmod!r} (ONNX allows 0 or 1)"
    dtype = info.in_dtypes[0] if info.in_dtypes else None
    if not fmod and info.opset < 28 and (dtype is None or dtype.is_float):
        return f"Mod of floats with fmod=0 at opset {info.opset} (ONNX requires fmod=1 " \
               "for floats before opset 28)"
    return _numeric(info)


@rule("Mod", check=_mod_check)
def _mod(ctx: OpContext):
    return _binary(Op.FMOD if ctx.attr("fmod", 0) else Op.MOD)(ctx)


@rule("PRelu", check=_float_only)
def _prelu(ctx: OpContext):
    (x, slope), shape = ctx.operands()
    neg = build.compare(Op.LT, x, _scalar(x.dtype, 0))
    return [_shaped(build.where(neg, build.binary(Op.MUL, x, slope), x), shape)]


@rule("Pow", check=_float_only)
def _pow(ctx: OpContext):
    base = ctx.node(0)
    known = ctx.known(1)
    if known is not None and known.size == 1 and known.dtype.kind in "iuf":
        e = known.reshape(()).item()               # x ** 2 as x * x, x ** 0.5 as sqrt
        out = build.power_scalar(base, int(e) if float(e).is_integer() else float(e))
        shape = build.broadcast_shapes(base.shape, known.shape)
        return [_shaped(build.cast(out, base.dtype), shape)]
    expo = build.cast(ctx.node(1), base.dtype)          # ONNX: the result has the base's type
    return [build.binary(Op.POW, base, expo)]


def _comparison(op: Op):
    def handler(ctx: OpContext):
        (a, b), shape = ctx.operands()
        return [_shaped(build.compare(op, a, b), shape)]
    return handler


for _name, _op in [("Equal", Op.EQ), ("Less", Op.LT), ("LessOrEqual", Op.LE),
                   ("Greater", Op.GT), ("GreaterOrEqual", Op.GE)]:
    rule(_name)(_comparison(_op))


def _logical(fn):
    def handler(ctx: OpContext):
        (a, b), shape = ctx.operands()
        return [_shaped(fn(a, b), shape)]
    return handler


rule("And")(_logical(lambda a, b: build.logical(Op.AND, a, b)))
rule("Or")(_logical(lambda a, b: build.logical(Op.OR, a, b)))
rule("Xor")(_logical(lambda a, b: build.compare(Op.NE, a, b)))


@rule("Where")
def _where(ctx: OpContext):
    (c, a, b), shape = ctx.operands()
    return [_shaped(build.where(c, a, b), shape)]


def _variadic(op: Op, mean: bool = False):
    def handler(ctx: OpContext):
        nodes, shape = ctx.operands()
        out = nodes[0]
        for n in nodes[1:]:
            out = build.binary(op, out, n)
        if mean:
            out = build.binary(Op.DIV, out, build.const(len(nodes), out.dtype))
        return [_shaped(out, shape)]
    return handler


rule("Max", check=_numeric)(_variadic(Op.MAXIMUM))
rule("Min", check=_numeric)(_variadic(Op.MINIMUM))
rule("Sum", check=_numeric)(_variadic(Op.ADD))
rule("Mean", check=_float_only)(_variadic(Op.ADD, mean=True))


@rule("Clip", check=_numeric)
def _clip(ctx: OpContext):
    nodes, shape = ctx.operands()
    x = nodes[0]
    present = [k for k in (1, 2) if ctx.has(k)]
    bounds = dict(zip(present, nodes[1:]))
    if 1 in bounds:
        x = build.binary(Op.MAXIMUM, x, bounds[1])
    if 2 in bounds:
        x = build.binary(Op.MINIMUM, x, bounds[2])
    return [_shaped(x, ctx.node(0).shape)]


@rule("Cast", check=lambda info: None if info.out_dtypes and info.out_dtypes[0] else
      "Cast to a dtype PowerFusion does not have")
def _cast(ctx: OpContext):
    return [build.cast(ctx.node(0), ctx.info.out_dtypes[0])]


@rule("CastLike", check=lambda info: None if info.out_dtypes and info.out_dtypes[0] else
      "CastLike to a dtype PowerFusion does not have")
def _cast_like(ctx: OpContext):
    return [build.cast(ctx.node(0), ctx.node(1).dtype)]
