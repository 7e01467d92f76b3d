"""Short rows interleaved (passes/interleave.py): several rows per parallel iteration,
each phase for all of them. The same values as one row at a time, in the interpreter
and in compiled code, bit for bit; the cost model asks for it where arithmetic, not
memory, bounds a kernel; rows it cannot group are left as they are."""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from powerfusion.frontend.tracing import trace
from powerfusion.gir.ir import Level, Loop, Parallel
from powerfusion.passes.interleave import interleave_rows
from powerfusion.passes.util import cores_loop
from powerfusion.runtime.backends import executable, get_target, printed
from powerfusion.runtime.cpu_executable import InterpretedExecutable
from powerfusion.search.plan import Candidate
from powerfusion.search.space import plan_graph

RNG = np.random.default_rng(7)


def _target():
    """The CPU target as a 2-core machine: how many rows a group takes depends on the
    cores (each keeps enough iterations), and these tests pick their row counts for 2."""
    return dataclasses.replace(get_target("cpu"), cores=2)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x):
    s = x - x.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def layernorm(x, w):
    mu = x.mean(axis=-1, keepdims=True)
    d = x - mu
    return d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + 1e-5) * w


def masked_softmax(x, mask):
    s = x * 0.125 + mask
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def row_stats(x):
    return x.max(axis=-1), x.argmax(axis=-1), (x * x).sum(axis=-1)


def _bf16(a):
    return a.astype(ml_dtypes.bfloat16)


CASES = {
    "softmax": (softmax, lambda n: (RNG.standard_normal((n, 32), dtype=np.float32),)),
    "softmax_bf16": (softmax, lambda n: (_bf16(RNG.standard_normal((n, 32))),)),
    "log_softmax": (log_softmax, lambda n: (RNG.standard_normal((n, 40), dtype=np.float32),)),
    "layernorm": (layernorm, lambda n: (RNG.standard_normal((n, 48), dtype=np.float32),
                                        RNG.standard_normal(48, dtype=np.float32))),
    "masked_softmax": (masked_softmax, lambda n: (
        RNG.standard_normal((2, n // 2, 32), dtype=np.float32),
        np.where(RNG.random((n // 2, 32)) < 0.3, -1e9, 0.0).astype(np.float32))),
    "row_stats": (row_stats, lambda n: (RNG.standard_normal((n, 24), dtype=np.float32),)),
}


def _plans(fn, args, target, interleave):
    graph, _ = trace(fn, args)
    strides = [tuple(s // a.itemsize for s in a.strides) for a in args]
    return plan_graph(graph, strides, target, Candidate(interleave=interleave))


def _interleaved(plan) -> bool:
    return any(ck.interleaved for ck in plan.kernels)


def _outputs(result):
    return result if isinstance(result, (tuple, list)) else (result,)


def _same(a, b):
    for x, y in zip(_outputs(a), _outputs(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8))


@pytest.mark.parametrize("name", sorted(CASES))
def test_interleaved_rows_compute_the_same_bits(name):
    fn, make = CASES[name]
    args = make(64)
    target = _target()
    alone, grouped = (_plans(fn, args, target, flag) for flag in (False, True))
    assert not _interleaved(alone) and _interleaved(grouped)
    # the interpreter (what a program means) and the compiled code agree with the rows
    # taken one at a time, bit for bit: each row's arithmetic is unchanged
    _same(InterpretedExecutable(grouped).run(args), InterpretedExecutable(alone).run(args))
    compiled = [executable(p, "cpu", printed(p, "cpu")).run(args) for p in (alone, grouped)]
    _same(compiled[1], compiled[0])
    expected = fn(*[a.astype(np.float64) for a in args])
    for got, want in zip(_outputs(compiled[1]), _outputs(expected), strict=True):
        got = np.asarray(got)
        if "bf16" in name:                   # bfloat16 results come back as their bits
            got = got.view(ml_dtypes.bfloat16)
        np.testing.assert_allclose(got.astype(np.float64), want,
                                   rtol=2e-2 if "bf16" in name else 2e-5, atol=1e-6)


def test_the_program_keeps_each_rows_values_apart():
    fn, make = CASES["softmax_bf16"]
    plan = _plans(fn, make(64), _target(), True)
    program = plan.kernels[0].program
    loop = cores_loop(program)
    rows = loop.body[0].var.extent
    assert loop.var.extent * rows == 64 and rows > 1
    assert all(isinstance(s, Loop) and s.kind is Parallel.SERIAL for s in loop.body)
    # the max and the sum each kept per row between the phases, in float32
    kept = {a.buffer for s in loop.body for t in s.body if hasattr(t, "dst")
            for a in (t.dst,) if a.buffer.level is Level.LOCAL and a.buffer.shape == (rows,)}
    assert len(kept) == 2 and all(b.dtype.name == "float32" for b in kept)


@pytest.mark.parametrize("rows, cols", [(37, 32), (64, 4096), (8, 32)])
def test_rows_it_cannot_group_are_left_alone(rows, cols):
    """A row count no group size divides, rows too long to gain, too few rows for the
    cores: the program as it was."""
    x = RNG.standard_normal((rows, cols), dtype=np.float32)
    target = _target()
    plan = _plans(softmax, (x,), target, True)
    assert not _interleaved(plan)
    for ck in plan.kernels:
        assert interleave_rows(ck.program, target) is ck.program


def test_element_wise_kernels_have_no_rows_to_interleave():
    x = RNG.standard_normal((64, 32), dtype=np.float32)
    plan = _plans(lambda v: np.tanh(v) * 2.0, (x,), _target(), True)
    assert not _interleaved(plan)


def test_the_cost_model_interleaves_where_arithmetic_bounds_the_kernel():
    """bfloat16 softmax: the same arithmetic as float32 over half the bytes. With memory
    far faster than the arithmetic the default plan interleaves; with slow memory not."""
    x = _bf16(RNG.standard_normal((256, 128)))
    target = _target()
    graph, _ = trace(softmax, (x,))
    fast, slow = (target.with_bandwidths({Level.GLOBAL: bw}) for bw in (1e13, 1e9))
    assert _interleaved(plan_graph(graph, [(128, 1)], fast))
    assert not _interleaved(plan_graph(graph, [(128, 1)], slow))
    # the tuner's choice to take rows one at a time stands against the model
    assert not _interleaved(plan_graph(graph, [(128, 1)], fast, Candidate(interleave=False)))


# -- random row kernels: whatever the chain of row-wise steps, grouping rows changes no bit --

STEPS = ("center", "exp", "normalise", "scale", "standardise", "tanh", "square")


def _row_program(steps):
    def f(x):
        y = x
        for step in steps:
            if step == "center":
                y = y - y.max(axis=-1, keepdims=True)
            elif step == "exp":
                y = np.exp(y)
            elif step == "normalise":
                y = y / (np.abs(y).sum(axis=-1, keepdims=True) + 1.0)
            elif step == "scale":
                y = y * 0.5 + 1.0
            elif step == "standardise":
                d = y - y.mean(axis=-1, keepdims=True)
                y = d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + 1e-5)
            elif step == "tanh":
                y = np.tanh(y)
            else:
                y = y * y
        return y, y.min(axis=-1), np.argmax(y, axis=-1)
    return f


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.sampled_from([32, 48, 64, 96, 160, 256]), cols=st.integers(1, 300),
       steps=st.lists(st.sampled_from(STEPS), min_size=1, max_size=4),
       bf16=st.booleans())
def test_random_row_kernels_keep_every_bit(rows, cols, steps, bf16):
    x = RNG.standard_normal((rows, cols)).astype(ml_dtypes.bfloat16 if bf16 else np.float32)
    fn = _row_program(steps)
    target = _target()
    alone, grouped = (_plans(fn, (x,), target, flag) for flag in (False, True))
    compiled = [executable(p, "cpu", printed(p, "cpu")).run((x,)) for p in (alone, grouped)]
    _same(compiled[1], compiled[0])
