"""Greedy shrinking: the smallest program (fewest ops, outputs, inputs, elements; plainest
spellings, layouts and values) that still fails the same way.

Every candidate is a valid program (analysis.py: numpy's result does not depend on
rounding) judged by pf in a worker process, so crashes shrink too. Candidates are
tried in order, biggest cut first; the first that keeps the failure's signature is
taken and the search starts over, until none does or the time budget is spent.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np

from .program import Input, Node, Program

Predicate = Callable[[Program], bool]
REDUCTIONS = ("sum", "mean", "max", "min", "var", "std", "any", "all", "argmax", "argmin")


def rebuild(program: Program, replace: dict[int, Node], outputs=None) -> Program:
    """The program with nodes replaced (by uid), rebuilt bottom-up, sharing kept."""
    memo: dict[int, Node] = {}

    def visit(n: Node) -> Node:
        if n.uid in replace:
            n = replace[n.uid]
            if n.uid in memo:
                return memo[n.uid]
        if n.uid in memo:
            return memo[n.uid]
        new = n if not n.args else Node(n.op, tuple(visit(a) for a in n.args), n.param,
                                         n.spelling)
        if new.args == n.args:
            new = n
        memo[n.uid] = new
        return new
    return Program(program.inputs, [visit(o) for o in (outputs or program.outputs)])


def drop_unused_inputs(program: Program) -> Program:
    used = sorted({n.param for n in program.nodes() if n.op == "input"})
    if used == list(range(len(program.inputs))):
        return program
    index = {old: new for new, old in enumerate(used)}
    replace = {n.uid: Node("input", (), index[n.param]) for n in program.nodes()
               if n.op == "input"}
    return Program([program.inputs[k] for k in used], rebuild(program, replace).outputs)


def _outputs(program: Program) -> Iterator[Program]:
    outs = program.outputs
    if len(outs) > 1:
        for o in outs:
            yield Program(program.inputs, [o])
        for k in range(len(outs)):
            yield Program(program.inputs, outs[:k] + outs[k + 1:])


def _bypass(program: Program) -> Iterator[Program]:
    """Each op replaced by one of its operands, or by an input."""
    nodes = [n for n in program.nodes() if n.op != "input"]
    inputs = {n.param: n for n in program.nodes() if n.op == "input"}
    for n in reversed(nodes):
        for a in dict.fromkeys(n.args):
            yield rebuild(program, {n.uid: a})
    for n in reversed(nodes):
        for k, node in sorted(inputs.items()):
            yield rebuild(program, {n.uid: node})


def _plainer(program: Program) -> Iterator[Program]:
    """Spelling 0, no keepdims, fewer reduced axes, for each op."""
    for n in program.nodes():
        if n.op == "input":
            continue
        if n.spelling:
            yield rebuild(program, {n.uid: Node(n.op, n.args, n.param, 0)})
        p = n.param
        if n.op in REDUCTIONS:
            axis, keepdims, *rest = p
            if keepdims:
                yield rebuild(program, {n.uid: Node(n.op, n.args, (axis, False, *rest),
                                                    n.spelling)})
            if isinstance(axis, tuple) and len(axis) > 1:
                for a in axis:
                    yield rebuild(program, {n.uid: Node(n.op, n.args, (a, keepdims, *rest),
                                                        n.spelling)})


def _with_input(program: Program, k: int, new: Input) -> Program:
    inputs = list(program.inputs)
    inputs[k] = new
    return Program(inputs, program.outputs)


def _smaller_inputs(program: Program) -> Iterator[Program]:
    """Each input: contiguous, fewer elements along an axis, simpler values."""
    for k, inp in enumerate(program.inputs):
        base = inp.base
        if inp.layout != "contiguous":
            yield _with_input(program, k, Input(np.broadcast_to(base, inp.shape).copy()
                                                if inp.layout == "broadcast" else base))
        for axis, n in enumerate(inp.shape):
            for keep in [k for k in dict.fromkeys((1, n // 2, n - 1, 0)) if k < n]:
                shape = inp.shape[:axis] + (keep,) + inp.shape[axis + 1:]
                part = base if inp.layout == "broadcast" and axis == 0 else \
                    base[(slice(None),) * axis + (slice(0, keep),)]
                yield _with_input(program, k, Input(part, inp.layout, shape if
                                                    inp.layout == "broadcast" else None))
        yield from _simpler_values(program, k)


def _simpler_values(program: Program, k: int) -> Iterator[Program]:
    inp = program.inputs[k]
    base = inp.base
    if base.size == 0:
        return
    flat = base.reshape(-1)
    candidates = [np.zeros_like(base), np.ones_like(base), np.full_like(base, flat[0])]
    if base.dtype.kind not in "biu":
        wide = base.astype(np.float64)
        with np.errstate(all="ignore"):
            candidates.append(np.where(np.isfinite(wide), np.round(wide), wide)
                              .astype(base.dtype))
            candidates.append(np.where(np.isfinite(wide), wide, 0).astype(base.dtype))
    for i in range(min(base.size, 8)):
        one = flat.copy()
        one[i] = 0 if base.dtype.kind != "b" else False
        candidates.append(one.reshape(base.shape))
    for c in candidates:
        if not np.array_equal(c, base, equal_nan=True):
            yield _with_input(program, k, Input(c, inp.layout, inp.shape))


def candidates(program: Program) -> Iterator[Program]:
    yield from _outputs(program)
    yield from _bypass(program)
    yield from _plainer(program)
    yield from _smaller_inputs(program)


def _value_cost(a: np.ndarray) -> int:
    """Distinct values, plus those that are not small integers: simpler values cost less."""
    if a.size == 0:
        return 0
    wide = a.reshape(-1).astype(np.float64) if a.dtype.kind in "fV" else a.reshape(-1)
    with np.errstate(all="ignore"):
        plain = np.isfinite(wide) & (wide == np.round(wide)) & (np.abs(wide) < 100)
    return len(np.unique(wide.astype(str))) + int(np.sum(~plain))


def _elements(i: Input) -> float:
    """An input's size; an empty one costs between one element and two, less the
    shorter its other axes."""
    return i.base.size or 1 + 0.01 * sum(i.shape)


def cost(program: Program) -> tuple:
    """What shrinking lowers, most important first; every accepted step lowers it."""
    nodes = [n for n in program.nodes() if n.op != "input"]
    knobs = sum(n.spelling for n in nodes) + sum(
        bool(n.param[1]) + (len(n.param[0]) if isinstance(n.param[0], tuple) else 0)
        for n in nodes if n.op in REDUCTIONS)
    return (len(nodes), len(program.outputs), len(program.inputs),
            sum(_elements(i) for i in program.inputs),
            sum(i.layout != "contiguous" for i in program.inputs), knobs,
            sum(_value_cost(i.base) for i in program.inputs))


def shrink(program: Program, fails: Predicate, budget_s: float = 60.0,
           log: Callable[[str], None] | None = None) -> tuple[Program, int]:
    """(smallest failing program found, candidates tried)."""
    deadline = time.monotonic() + budget_s
    tried = 0
    current = drop_unused_inputs(program)
    progress = True
    while progress and time.monotonic() < deadline:
        progress = False
        for cand in candidates(current):
            if time.monotonic() >= deadline:
                break
            cand = drop_unused_inputs(cand)
            if cost(cand) >= cost(current):
                continue
            tried += 1
            if fails(cand):
                current, progress = cand, True
                if log:
                    log(f"  shrunk to {current.size()} ops, "
                        f"{sum(i.base.size for i in current.inputs)} elements")
                break
    return current, tried
