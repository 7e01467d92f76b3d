"""The op vocabulary: how each op prints, and how far two correct implementations of it
may differ (a first-order forward error bound, propagated node by node).

Every op has one or more *spellings* (numpy's method, function, operator and pf.*
forms), all meaning the same thing. `rule(node, xs, es, v)` gets the operands' values
`xs` (float64 or int), their error bounds `es` (float64 arrays; 0 where a value is
exact) and the op's numpy result `v`, and returns `(e, fragile)`: the bound on how far
any correct implementation's result may be from the exact one, and a mask (or bool) of
elements where the result is *discontinuous* within the operands' error bounds (a
comparison of nearly equal values, a float truncated to an integer near an integer, a
log of a value that may change sign): programs must not depend on those.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from typing import Callable

import ml_dtypes
import numpy as np

from .program import NAMESPACE, Node, _scalar_text, dtype_source

BF16 = np.dtype(ml_dtypes.bfloat16)
# unit roundoff, smallest subnormal, largest finite
FLOAT_INFO = {
    np.dtype(np.float64): (2.0 ** -53, 2.0 ** -1074, float(np.finfo(np.float64).max)),
    np.dtype(np.float32): (2.0 ** -24, 2.0 ** -149, float(np.finfo(np.float32).max)),
    np.dtype(np.float16): (2.0 ** -11, 2.0 ** -24, 65504.0),
    BF16: (2.0 ** -8, 2.0 ** -133, float(ml_dtypes.finfo(BF16).max)),
}
TRANSCENDENTAL_ULPS = 8         # pf's vectorised exp/log/tanh/sin/cos: a few ULP each
SIN_COS_DOMAIN = 1e5            # pf's sin/cos are tested for |x| <= 1e6 (pf_math.h)


def is_float(dtype) -> bool:
    return np.dtype(dtype) in FLOAT_INFO


def rounding(v: np.ndarray, ulps: float = 1.0) -> np.ndarray:
    """The error of rounding v to its own dtype (0 for ints and bools)."""
    info = FLOAT_INFO.get(np.asarray(v).dtype)
    if info is None:
        return np.zeros(np.shape(v))
    u, tiny, _ = info
    return ulps * (u * np.abs(np.asarray(v, np.float64)) + tiny)


def near(x, es, margin: float = 0.0):
    """Elements where x (a distance to a discontinuity) is within twice the error."""
    return (es > 0) & (np.abs(x) <= 2 * es + margin)


# -- rendering --------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpDef:
    spellings: tuple
    rule: Callable
    kind: str = "elementwise"     # elementwise, reduce, view, concat, cast, index


def scalar_param(node: Node) -> bool:
    return isinstance(node.param, tuple) and len(node.param) == 3 and node.param[0] == "scalar"


def operands(node: Node, srcs: list[str]) -> list[str]:
    """Operand sources with a scalar parameter inserted at its position."""
    if scalar_param(node):
        _, value, pos = node.param
        srcs = list(srcs)
        srcs.insert(pos, _scalar_text(value))
    return srcs


def _kw(param) -> str:
    axis, keepdims, *rest = param
    text = "" if axis is None else f", axis={axis!r}"
    text += ", keepdims=True" if keepdims else ""
    return text + (f", ddof={rest[0]}" if rest and rest[0] else "")


@functools.lru_cache(maxsize=65536)
def is_atom(text: str) -> bool:
    """A name, call, attribute, subscript or non-negative literal: safe anywhere."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return False
    return isinstance(tree, (ast.Name, ast.Call, ast.Attribute, ast.Subscript)) or (
        isinstance(tree, ast.Constant) and not str(text).startswith("-"))


def _needs_atom(template: str, k: int) -> bool:
    """Whether operand k sits where only an atom keeps its meaning (next to an operator,
    before a method or a subscript) rather than alone in a call's argument list."""
    at = template.index("{%d}" % k)
    before, after = template[:at].rstrip(" "), template[at + 3:].lstrip(" ")
    return not (before.endswith(("(", "[", ",")) and after[:1] in (")", "]", ","))


def render(node: Node, srcs: list[str]) -> str:
    spelling = OPS[node.op].spellings[node.spelling % len(OPS[node.op].spellings)]
    srcs = operands(node, srcs)
    if callable(spelling):
        srcs = [s if is_atom(s) else f"({s})" for s in srcs]
        return spelling(srcs, node.param)
    srcs = [s if is_atom(s) or "{%d}" % k not in spelling or not _needs_atom(spelling, k)
            else f"({s})" for k, s in enumerate(srcs)]
    p = node.param
    fields = {"args": ", ".join(srcs), "p": p}
    if OPS[node.op].kind == "reduce":
        fields["kw"] = _kw(p)
    if OPS[node.op].kind == "cast":
        fields["p"] = dtype_source(np.dtype(p) if p != "bfloat16" else BF16)
    return spelling.format(*srcs, **fields)


@functools.lru_cache(maxsize=4096)
def _expression(text: str):
    return compile(text, "<fuzz op>", "eval")


def apply(node: Node, values: list) -> object:
    """The node's op on these operand values, exactly as the program source runs it."""
    expr = render(node, [f"x{k}" for k in range(len(values))])
    scope = {f"x{k}": v for k, v in enumerate(values)}
    return eval(_expression(expr), NAMESPACE, scope)


def on_errors(node, es):
    """A view, select or concatenation applied to the error arrays as to the values."""
    return np.asarray(apply(node, es), np.float64)


# -- rules ----------------------------------------------------------------------------------
def exact(node, xs, es, v):
    return np.zeros(np.shape(v)), False


def carried(node, xs, es, v):      # views, concatenation: errors move with the values
    return on_errors(node, es), False


def same(node, xs, es, v):         # neg, abs: errors stay as they were
    return es[0], False


def _b(*arrays):
    return np.broadcast_arrays(*arrays)


def add_rule(node, xs, es, v):
    ea, eb = _b(*es)
    return ea + eb + rounding(v), False


def mul_rule(node, xs, es, v):
    a, b = (np.abs(x) for x in _b(*xs))
    ea, eb = _b(*es)
    return b * ea + a * eb + ea * eb + rounding(v), False


def div_rule(node, xs, es, v):
    a, b = _b(*xs)
    ea, eb = _b(*es)
    den = np.abs(b) - eb
    with np.errstate(all="ignore"):
        e = np.where(den > 0, (ea + np.abs(np.asarray(v, np.float64)) * eb) / den, np.inf)
    return e + rounding(v), False


def select_rule(node, xs, es, v):     # maximum, minimum, clip: errors never grow
    return np.maximum(*_b(*es)) if len(es) == 2 else es[0], False


def pow_rule(node, xs, es, v):
    if not is_float(np.asarray(v).dtype):      # numpy rejects int ** -k unless it is empty
        return np.zeros(np.shape(v)), bool(np.any(np.asarray(xs[1]) < 0))
    x, y = _b(*xs)
    ex, ey = _b(*es)
    av = np.abs(np.asarray(v, np.float64))
    with np.errstate(all="ignore"):
        e = av * (np.abs(y) * ex / np.abs(x) + np.abs(np.log(np.abs(x))) * ey)
    fragile = near(x, ex) | ((x < 0) & (ey > 0))
    e = np.where(ex + ey > 0, e, 0)
    return e + rounding(v, 4 + np.abs(y).clip(0, 16)), fragile


def transcendental(derivative):
    def rule(node, xs, es, v):
        x, ex = xs[0], es[0]
        with np.errstate(all="ignore"):
            d = np.abs(derivative(np.asarray(x, np.float64), np.asarray(v, np.float64)))
            e = np.where(ex > 0, d * ex, 0)
        return e + rounding(v, TRANSCENDENTAL_ULPS), False
    return rule


def domain_rule(derivative):        # log, sqrt: NaN below 0, so the sign must be certain
    inner = transcendental(derivative)

    def rule(node, xs, es, v):
        e, _ = inner(node, xs, es, v)
        return e, near(xs[0], es[0])
    return rule


def periodic(node, xs, es, v):      # sin, cos: absolute error grows with |x|
    x = np.abs(np.asarray(xs[0], np.float64))
    u = FLOAT_INFO[np.asarray(v).dtype][0]
    e = es[0] + TRANSCENDENTAL_ULPS * u * (1 + np.where(np.isfinite(x), x, 0))
    return e, np.isfinite(x) & (x > SIN_COS_DOMAIN)


def compare_rule(node, xs, es, v):
    a, b = _b(*xs)
    ea, eb = _b(*es)
    with np.errstate(all="ignore"):
        d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.zeros(np.shape(v)), near(np.where(np.isnan(d), np.inf, d), ea + eb)


def truth_rule(node, xs, es, v):    # logical ops, any/all, where's condition: x != 0
    fragile = False
    for x, e in zip(xs, es):
        fragile = fragile | np.any(near(np.asarray(x, np.float64), e))
    return np.zeros(np.shape(v)), fragile


def where_rule(node, xs, es, v):
    c, _, _ = _b(*xs)
    _, ea, eb = _b(*es)
    _, fragile = truth_rule(node, xs[:1], es[:1], v)
    return np.where(c.astype(bool), ea, eb), fragile


def cast_rule(node, xs, es, v):
    x, ex = np.asarray(xs[0]), es[0]
    out = np.asarray(v).dtype
    if not is_float(x.dtype):
        return np.zeros(np.shape(v)), False           # ints and bools convert exactly
    x = x.astype(np.float64)
    if out.kind == "b":
        return np.zeros(np.shape(v)), near(x, ex)
    if out.kind in "iu":
        bound = 2.0 ** (8 * out.itemsize - 1)
        with np.errstate(all="ignore"):
            outside = ~np.isfinite(x) | (np.trunc(x) < -bound) | (np.trunc(x) >= bound)
            return np.zeros(np.shape(v)), outside | near(x - np.rint(x), ex)
    return np.where(ex > 0, ex + rounding(v), 0), False   # exact values round correctly


def reduce_rule(node, xs, es, v):
    """sum and mean: the terms' errors plus (n-1) roundings of the running sum."""
    x = np.asarray(xs[0])
    if not is_float(np.asarray(v).dtype):
        return exact(node, xs, es, v)
    size = np.size(v)
    n = x.size // size if size else 0
    u = FLOAT_INFO[np.asarray(v).dtype][0]
    with np.errstate(all="ignore"):
        magnitude = on_errors(node, [np.abs(x.astype(np.float64))])
        e = on_errors(node, es) + max(n - 1, 0) * u * magnitude
    return e + 2 * rounding(v), False


def extreme_rule(node, xs, es, v):    # max, min over axes: one of the terms, with its error
    return on_errors(node, es), False


def spread_rule(node, xs, es, v):
    """var and std: x - mean, squared, averaged (and square-rooted)."""
    axis, keepdims, ddof = node.param
    x = np.asarray(xs[0]).astype(np.float64)
    v64 = np.asarray(v, np.float64)
    u = FLOAT_INFO[np.asarray(v).dtype][0]
    n = x.size // max(np.size(v), 1)
    with np.errstate(all="ignore"):
        mu = np.mean(x, axis=axis, keepdims=True)
        e_mu = np.mean(es[0], axis=axis, keepdims=True) + n * u * np.mean(
            np.abs(x), axis=axis, keepdims=True)
        d = np.abs(x - mu)
        ed = es[0] + e_mu + u * np.abs(x)
        e_var = np.mean(2 * d * ed + ed * ed + (n + 2) * u * d * d, axis=axis,
                        keepdims=keepdims) * (n / max(n - ddof, 1))
        if node.op == "std":          # |sqrt(a) - sqrt(b)| <= sqrt(|a - b|) near 0
            e_var = np.where(e_var > 0, np.minimum(e_var / (2 * v64), np.sqrt(e_var)), 0)
    return np.where(np.isnan(e_var), np.inf, e_var) + 2 * rounding(v), False


def arg_rule(node, xs, es, v):       # argmax, argmin: ties within the error are fragile
    return np.zeros(np.shape(v)), bool(np.any(es[0] > 0))


def _method_reduce(method: str):
    return lambda srcs, p: f"{srcs[0]}.{method}({_kw(p)[2:]})"


OPS: dict[str, OpDef] = {
    # element-wise, one operand (or one operand and a scalar parameter)
    "neg": OpDef(("-{0}", "np.negative({0})"), same),
    "abs": OpDef(("abs({0})", "np.abs({0})", "pf.abs({0})", "np.absolute({0})"), same),
    "exp": OpDef(("np.exp({0})", "pf.exp({0})"), transcendental(lambda x, v: v)),
    "log": OpDef(("np.log({0})", "pf.log({0})"), domain_rule(lambda x, v: 1 / x)),
    "sqrt": OpDef(("np.sqrt({0})", "pf.sqrt({0})"), domain_rule(lambda x, v: 0.5 / v)),
    "tanh": OpDef(("np.tanh({0})", "pf.tanh({0})"), transcendental(lambda x, v: 1 - v * v)),
    "sin": OpDef(("np.sin({0})", "pf.sin({0})"), periodic),
    "cos": OpDef(("np.cos({0})", "pf.cos({0})"), periodic),
    "square": OpDef(("np.square({0})", "{0} * {0}"), lambda n, xs, es, v: mul_rule(
        n, xs * 2, es * 2, v)),
    "reciprocal": OpDef(("np.reciprocal({0})", "1 / {0}"), lambda n, xs, es, v: div_rule(
        n, [np.ones(()), xs[0]], [np.zeros(()), es[0]], v)),
    "not": OpDef(("np.logical_not({0})", "~{0}"), truth_rule),   # ~ only on bools
    "isnan": OpDef(("np.isnan({0})",), exact),
    "isinf": OpDef(("np.isinf({0})",), exact),
    "isfinite": OpDef(("np.isfinite({0})",), exact),
    "clip": OpDef((lambda s, p: f"np.clip({s[0]}, {_scalar_text(p[0])}, "
                   f"{_scalar_text(p[1])})",), select_rule),
    # element-wise, two operands (either may be a scalar parameter)
    "add": OpDef(("{0} + {1}", "np.add({0}, {1})"), add_rule),
    "sub": OpDef(("{0} - {1}", "np.subtract({0}, {1})"), add_rule),
    "mul": OpDef(("{0} * {1}", "np.multiply({0}, {1})"), mul_rule),
    "div": OpDef(("{0} / {1}", "np.divide({0}, {1})", "np.true_divide({0}, {1})"), div_rule),
    "pow": OpDef(("{0} ** {1}", "np.power({0}, {1})"), pow_rule),
    "maximum": OpDef(("np.maximum({0}, {1})", "pf.maximum({0}, {1})"), select_rule),
    "minimum": OpDef(("np.minimum({0}, {1})", "pf.minimum({0}, {1})"), select_rule),
    "lt": OpDef(("{0} < {1}", "np.less({0}, {1})"), compare_rule),
    "le": OpDef(("{0} <= {1}", "np.less_equal({0}, {1})"), compare_rule),
    "gt": OpDef(("{0} > {1}", "np.greater({0}, {1})"), compare_rule),
    "ge": OpDef(("{0} >= {1}", "np.greater_equal({0}, {1})"), compare_rule),
    "eq": OpDef(("{0} == {1}", "np.equal({0}, {1})"), compare_rule),
    "ne": OpDef(("{0} != {1}", "np.not_equal({0}, {1})"), compare_rule),
    "and": OpDef(("np.logical_and({0}, {1})", "{0} & {1}"), truth_rule),  # & only on bools
    "or": OpDef(("np.logical_or({0}, {1})", "{0} | {1}"), truth_rule),
    "xor": OpDef(("np.logical_xor({0}, {1})",), truth_rule),
    "where": OpDef(("np.where({0}, {1}, {2})", "pf.where({0}, {1}, {2})"), where_rule),
    # reductions: param (axis, keepdims) or (axis, keepdims, ddof)
    "sum": OpDef((_method_reduce("sum"), "np.sum({0}{kw})", "pf.sum({0}{kw})",
                  "np.add.reduce({0}{kw})"), reduce_rule, "reduce"),
    "mean": OpDef((_method_reduce("mean"), "np.mean({0}{kw})", "pf.mean({0}{kw})"),
                  reduce_rule, "reduce"),
    "max": OpDef((_method_reduce("max"), "np.max({0}{kw})", "pf.max({0}{kw})",
                  "np.amax({0}{kw})", "np.maximum.reduce({0}{kw})"), extreme_rule, "reduce"),
    "min": OpDef((_method_reduce("min"), "np.min({0}{kw})", "pf.min({0}{kw})",
                  "np.amin({0}{kw})", "np.minimum.reduce({0}{kw})"), extreme_rule, "reduce"),
    "var": OpDef(("np.var({0}{kw})", _method_reduce("var")), spread_rule, "reduce"),
    "std": OpDef(("np.std({0}{kw})", _method_reduce("std")), spread_rule, "reduce"),
    "any": OpDef((_method_reduce("any"), "np.any({0}{kw})"), truth_rule, "reduce"),
    "all": OpDef((_method_reduce("all"), "np.all({0}{kw})"), truth_rule, "reduce"),
    "argmax": OpDef((_method_reduce("argmax"), "np.argmax({0}{kw})"), arg_rule, "reduce"),
    "argmin": OpDef((_method_reduce("argmin"), "np.argmin({0}{kw})"), arg_rule, "reduce"),
    # views: param as printed
    "transpose": OpDef(("{0}.transpose({p})", "np.transpose({0}, {p})", "pf.transpose({0}, {p})",
                        lambda s, p: f"{s[0]}.T"), carried, "view"),
    "swapaxes": OpDef(("np.swapaxes({0}, {p[0]}, {p[1]})", "{0}.swapaxes({p[0]}, {p[1]})"),
                      carried, "view"),
    "reshape": OpDef(("{0}.reshape({p})", "np.reshape({0}, {p})", "pf.reshape({0}, {p})"),
                     carried, "view"),
    "ravel": OpDef(("{0}.ravel()", "np.ravel({0})", "{0}.flatten()"), carried, "view"),
    "expand_dims": OpDef(("np.expand_dims({0}, {p})",), carried, "view"),
    "squeeze": OpDef(("np.squeeze({0}, {p})",), carried, "view"),
    "index": OpDef(("{0}[{p}]",), carried, "view"),
    "broadcast_to": OpDef(("np.broadcast_to({0}, {p})",), carried, "view"),
    # casts: param is the dtype name
    "astype": OpDef(("{0}.astype({p})", "np.astype({0}, {p})"), cast_rule, "cast"),
    # concatenation: param is the axis
    "concatenate": OpDef(("np.concatenate([{args}], axis={p})",
                          "pf.concatenate([{args}], axis={p})",
                          "np.concatenate(({args},), {p})"), carried, "concat"),
    "stack": OpDef(("np.stack([{args}], axis={p})",), carried, "concat"),
}
