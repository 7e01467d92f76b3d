"""The whole pipeline: every pass preserves meaning on composites and random programs."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import STAGES, assert_stages_match_oracle, layernorm, rand, softmax

import powerfusion as pf
from powerfusion.frontend import trace
from powerfusion.graph import alternatives
from powerfusion.graph.reference import evaluate
from powerfusion.runtime.backends import get_target
from powerfusion.runtime.cpu_executable import InterpretedExecutable
from powerfusion.search.space import _plan_roots


def groupnorm(x, g, b):
    n, c, h, w = x.shape
    xr = x.reshape(n, 2, -1)
    d = xr - xr.mean(-1, keepdims=True)
    y = (d * pf.rsqrt((d * d).mean(-1, keepdims=True) + 1e-5)).reshape(n, c, h, w)
    return y * g[:, None, None] + b[:, None, None]


def rotary(x, c, s):
    h = x.shape[-1] // 2
    return x * c + pf.concatenate([-x[..., h:], x[..., :h]], axis=-1) * s


COMPOSITES = {
    "softmax": (softmax, (rand(3, 16),)),
    "layernorm": (layernorm, (rand(3, 16), rand(16), rand(16))),
    "group norm": (groupnorm, (rand(2, 4, 2, 2), rand(4), rand(4))),
    "rotary": (rotary, (rand(2, 3, 8), rand(3, 8), rand(3, 8))),
    "column sum": (lambda x: x.sum(0), (rand(6, 5),)),
    "cross-entropy": (lambda x: x.max(-1) + np.log(np.exp(x - x.max(-1)[:, None]).sum(-1)),
                      (rand(4, 10),)),
    "transpose": (lambda x: (x * 2).T + 1, (rand(5, 3),)),
}


@pytest.mark.parametrize("name", COMPOSITES)
def test_every_stage_matches_the_oracle(name):
    fn, args = COMPOSITES[name]
    assert_stages_match_oracle(fn, *args)


@pytest.mark.parametrize("rewrite", sorted(alternatives.REWRITES))
def test_alternative_computations_keep_meaning(rewrite, monkeypatch):
    monkeypatch.setattr(alternatives, "TILE_BYTES", 32)      # 8-float tiles: rows of 64
    monkeypatch.setattr(alternatives, "SPLIT_ROWS", 4)       # partials of 4 rows
    x = rand(3, 64) * 4
    x[1, 8:16] = -np.inf                                      # a fully masked tile
    if rewrite == "online softmax":
        fn, args = softmax, (x,)
    elif rewrite == "split columns":   # column sums and maxima over (16 x 8) rows
        fn, args = (lambda a: (a.sum(axis=(0, 1)), a.max(axis=(0, 1)))), (rand(16, 8, 5),)
    else:       # far from zero, so a careless one-pass variance would cancel badly
        fn, args = layernorm, (rand(3, 64) + 100, rand(64), rand(64))
    graph, _ = trace(fn, args)
    roots = alternatives.REWRITES[rewrite](list(graph.outputs))
    assert roots is not None
    plan = _plan_roots(graph, roots, [tuple(s // 4 for s in a.strides) for a in args],
                       get_target("cpu"))
    expected = evaluate(graph, list(args))
    for stage in ("naive", "optimized"):
        got = InterpretedExecutable(plan, stage).run(list(args))
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


UNARY = [pf.exp, pf.tanh, pf.sigmoid, lambda x: x * x, lambda x: -x, pf.relu,
         lambda x: pf.sqrt(pf.abs(x) + 1.0)]
BINARY = [lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a - b, pf.maximum]


@st.composite
def programs(draw):
    """A random function of two (m, n) inputs: element-wise chains, reductions with
    broadcasts back, transposes and slices."""
    m, n = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    steps = draw(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6), st.integers(0, 3)),
                          min_size=1, max_size=6))

    def fn(x, y):
        vals = [x, y]
        for kind, a, b in steps:
            u = vals[a % len(vals)]
            v = vals[b % len(vals)]
            if kind == 0:
                vals.append(UNARY[a % len(UNARY)](u))
            elif kind == 1:
                vals.append(BINARY[b % len(BINARY)](u, v))
            elif kind == 2:
                vals.append(u - u.max(-1, keepdims=True) + v)
            elif kind == 3:
                vals.append(u * u.sum(0, keepdims=True) + v)
            elif kind == 4:
                vals.append(u.T.T * 0.5 + v)
            else:
                vals.append(u / (pf.abs(u).sum(-1, keepdims=True) + 1.0))
        return vals[-1], vals[-1].sum(-1)

    return fn, (rand(m, n, seed=1), rand(m, n, seed=2))


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_programs_mean_the_same_before_and_after_every_pass(case):
    fn, args = case
    assert_stages_match_oracle(fn, *args, stages=STAGES)
