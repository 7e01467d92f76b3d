"""Shared by the pass tests: plan a traced function, run stages in the interpreter."""

from __future__ import annotations

import numpy as np

import powerfusion as pf
from powerfusion.frontend import trace
from powerfusion.gir.ir import Loop, Move, walk
from powerfusion.graph.reference import evaluate
from powerfusion.runtime.backends import get_target
from powerfusion.runtime.cpu_executable import InterpretedExecutable
from powerfusion.search.space import plan_graph

CPU = get_target("cpu")
STAGES = ["naive", "forward", "hoist", "merge", "drop", "promote", "reuse", "optimized"]


def plan_of(fn, *args, target=CPU):
    graph, _ = trace(fn, args)
    strides = [tuple(s // a.itemsize for s in a.strides) for a in args]
    return graph, plan_graph(graph, strides, target)


def assert_stages_match_oracle(fn, *args, stages=STAGES, target=CPU):
    """Every pass's output program computes what the numpy oracle computes."""
    graph, plan = plan_of(fn, *args, target=target)
    expected = evaluate(graph, list(args))
    for stage in stages:
        got = InterpretedExecutable(plan, stage).run(list(args))
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=2e-5,
                                       atol=1e-6, err_msg=f"after {stage}")
    return plan


def moves(program, level_from=None, level_to=None):
    return [s for s, _ in walk(program.body) if isinstance(s, Move)
            and (level_from is None or s.src.buffer.level.value == level_from)
            and (level_to is None or s.dst.buffer.level.value == level_to)]


def loops(program):
    return [s for s, _ in walk(program.body) if isinstance(s, Loop)]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def layernorm(x, w, b):
    mu = x.mean(axis=-1, keepdims=True)
    d = x - mu
    return d * pf.rsqrt((d * d).mean(axis=-1, keepdims=True) + 1e-5) * w + b
