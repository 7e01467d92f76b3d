"""split: vector loops whose indices divide the loop variable become two loops."""

import numpy as np
from support import assert_stages_match_oracle, loops, plan_of, rand

from powerfusion.gir.expr import Var
from powerfusion.gir.ir import Access, IndexValue, Parallel, walk
from powerfusion.passes.split import split_div


def group_norm(x, w, b):
    n, c, h, wd = x.shape
    g = x.reshape(n, 4, -1)
    mu = g.mean(axis=-1, keepdims=True)
    d = g - mu
    y = (d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + 1e-5)).reshape(n, c, h, wd)
    return y * w.reshape(c, 1, 1) + b.reshape(c, 1, 1)


def _simd_indices(program):
    for s, enclosing in walk(program.body):
        if enclosing and enclosing[-1].kind is Parallel.SIMD and hasattr(s, "dst"):
            srcs = s.srcs if hasattr(s, "srcs") else (s.src,)
            yield enclosing[-1].var, [s.dst.index] + [o.index for o in srcs
                                                      if isinstance(o, (Access, IndexValue))]


def test_per_channel_weight_is_affine_in_the_vector_loop():
    _, plan = plan_of(group_norm, rand(2, 8, 4, 4), rand(8), rand(8))
    program = plan.kernels[0].program
    for var, indices in _simd_indices(program):
        for e in indices:           # no i // 16 or i % 16 left: contiguous runs, broadcasts
            assert all(isinstance(a, Var) or var not in a.arg.vars() for a, _ in e.terms), e
    assert any(lp.kind is Parallel.SERIAL for lp in loops(program))


def test_split_keeps_meaning():
    assert_stages_match_oracle(group_norm, rand(2, 8, 4, 4), rand(8), rand(8),
                               stages=["naive", "optimized"])


def test_nothing_to_split_is_the_same_object():
    _, plan = plan_of(lambda x: x * 2.0, rand(4, 64))
    program = plan.kernels[0].program
    assert split_div(program) is program
