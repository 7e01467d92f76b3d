"""The op vocabulary: how each op prints, and which error rule (bounds.py) it follows.

Every op has one or more *spellings* (numpy's method, function, operator and pf.*
forms), all meaning the same thing; the printed source is the op's definition, for
numpy and for pf alike.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

import math

from .bounds import (BF16, arg_rule, carried, cast_rule, compare_rule, div_rule, domain_rule,
                     exact, extreme_rule, log1p_rule, mod_rule, mul_rule, add_rule, periodic, pow_rule,
                     reduce_rule, rounding_rule, same, select_rule, sign_rule, spread_rule,
                     tan_rule, transcendental, truth_rule, where_rule)
from .program import NAMESPACE, Node, _scalar_text, dtype_source

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
    "tan": OpDef(("np.tan({0})", "pf.tan({0})"), tan_rule),
    "log1p": OpDef(("np.log1p({0})", "pf.log1p({0})"), log1p_rule),
    "expm1": OpDef(("np.expm1({0})", "pf.expm1({0})"), transcendental(lambda x, v: v + 1)),
    "log2": OpDef(("np.log2({0})", "pf.log2({0})"),
                  domain_rule(lambda x, v: 1 / (x * math.log(2)))),
    "log10": OpDef(("np.log10({0})", "pf.log10({0})"),
                   domain_rule(lambda x, v: 1 / (x * math.log(10)))),
    "exp2": OpDef(("np.exp2({0})", "pf.exp2({0})"),
                  transcendental(lambda x, v: v * math.log(2))),
    "floor": OpDef(("np.floor({0})", "pf.floor({0})"), rounding_rule),
    "ceil": OpDef(("np.ceil({0})", "pf.ceil({0})"), rounding_rule),
    "trunc": OpDef(("np.trunc({0})", "pf.trunc({0})"), rounding_rule),
    "rint": OpDef(("np.rint({0})", "pf.rint({0})"), rounding_rule),
    "round": OpDef(("np.round({0})", "np.around({0})", "pf.round({0})",
                    "np.round({0}, 0)"), rounding_rule),
    "sign": OpDef(("np.sign({0})", "pf.sign({0})"), sign_rule),
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
    "mod": OpDef(("{0} % {1}", "np.mod({0}, {1})", "np.remainder({0}, {1})",
                  "pf.remainder({0}, {1})"), mod_rule),
    "fmod": OpDef(("np.fmod({0}, {1})", "pf.fmod({0}, {1})"), mod_rule),
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
