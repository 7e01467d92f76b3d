"""The differential fuzzer in CI: a fixed budget of seeded random programs on the CPU
target, a smaller share on OpenCL, on the SIMT-legalised GIR of CUDA and HIP plans
(run by the interpreter) and at random points of the tuner's search space, each
compared against numpy; plus tests of the fuzzer itself
(its generator, error analysis, checker and shrinker).

A failing campaign test prints the classes of failures with shrunk, runnable repros.
The budget can be changed with $PF_FUZZ_CPU_PROGRAMS, $PF_FUZZ_OPENCL_PROGRAMS,
$PF_FUZZ_GIR_PROGRAMS and $PF_FUZZ_SPACE_PROGRAMS.
"""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest

from .analysis import Fragile, analyze, native
from .campaign import run_campaign
from .check import check
from .generator import generate
from .ops import OPS
from .program import Input, Node, Program
from .report import describe, shrink_all
from .shrink import shrink

CI_SEED = 20261201
CPU_PROGRAMS = int(os.environ.get("PF_FUZZ_CPU_PROGRAMS", "3000"))
OPENCL_PROGRAMS = int(os.environ.get("PF_FUZZ_OPENCL_PROGRAMS", "300"))
GIR_PROGRAMS = int(os.environ.get("PF_FUZZ_GIR_PROGRAMS", "200"))
SPACE_PROGRAMS = int(os.environ.get("PF_FUZZ_SPACE_PROGRAMS", "600"))


def _report(summary) -> str:
    shrunk = shrink_all(summary, per_class=1, budget_s=30, total_s=180)
    return summary.text() + "\n\n" + "\n".join(describe(s) for s in shrunk)


# -- the campaigns -----------------------------------------------------------------------------
def test_fuzz_cpu():
    summary = run_campaign(CPU_PROGRAMS, seed=CI_SEED, target="cpu", jobs=2, batch=16)
    assert summary.programs == CPU_PROGRAMS
    assert not summary.failures, _report(summary)


def test_fuzz_opencl():
    from helpers import opencl_or_skip

    opencl_or_skip()
    summary = run_campaign(OPENCL_PROGRAMS, seed=CI_SEED + 1, target="opencl", jobs=2,
                           batch=16)
    assert summary.programs == OPENCL_PROGRAMS
    assert not summary.failures, _report(summary)


@pytest.mark.parametrize("target,seed", [("cuda-gir", CI_SEED + 2), ("hip-gir", CI_SEED + 3)])
def test_fuzz_simt_legalised_gir(target, seed):
    """The plans a GPU would run (launch, collectives, barriers in GIR), run by the
    interpreter as a block's threads would: numpy's answers, and no race."""
    programs = GIR_PROGRAMS if target == "cuda-gir" else GIR_PROGRAMS // 2
    summary = run_campaign(programs, seed=seed, target=target, jobs=2, batch=16)
    assert summary.programs == programs
    assert not summary.failures, _report(summary)


def test_fuzz_points_of_the_search_space():
    """Each batch of programs compiled at a point of the tuner's search space drawn for
    it (computations, placements, every schedule knob, recomputing under broadcasts):
    numpy's answers whichever point a tuner picks."""
    summary = run_campaign(SPACE_PROGRAMS, seed=CI_SEED + 4, target="cpu-space", jobs=2,
                           batch=4)
    assert summary.programs == SPACE_PROGRAMS
    assert not summary.failures, _report(summary)


# -- the fuzzer itself -------------------------------------------------------------------------
def test_a_point_of_the_search_space_is_named_and_drawn_again(monkeypatch):
    """cpu-space draws a program's point from its source; the name a report gives
    (cpu-space:N) draws the same point again; the patch ends with the block, and a
    failure's message names the point."""
    from powerfusion import api, compiler
    from powerfusion.search import space

    from .check import DRAWN, compiled_for, judge, point_target

    program, expected = generate(11)
    target = point_target("cpu-space", program.source())
    assert target == point_target(target, "anything") and target.startswith("cpu-space:")
    drawn = []
    for name in ("cpu-space", target):
        outcome = check(program, expected, name)
        assert not outcome.failed, outcome
        drawn.append(DRAWN[-1])
    assert drawn[0] == drawn[1]
    assert api.compile_graph is compiler.compile_graph
    with compiled_for("cpu-space:1") as compiled_target:     # the point F26 needed
        assert compiled_target == "cpu" and api.compile_graph is not compiler.compile_graph
    assert api.compile_graph is compiler.compile_graph

    def planted(*args, **kwargs):
        raise IndexError("planted")

    monkeypatch.setattr(space, "plan_graph", planted)
    (first, *_) = judge(program, expected, "cpu-space:1")
    assert api.compile_graph is compiler.compile_graph
    assert first.kind == "untyped" and "planted" in first.message
    assert "--target cpu-space:1" in first.message and "recomputed" in first.message



def test_a_seed_always_gives_the_same_program():
    for seed in (1, 77, 12345):
        a, b = generate(seed)[0], generate(seed)[0]
        assert a.source() == b.source()
        assert all(np.array_equal(x.base, y.base, equal_nan=True)
                   for x, y in zip(a.inputs, b.inputs))


def test_the_generator_covers_the_vocabulary_and_the_edges():
    ops, dtypes, seen = collections.Counter(), set(), collections.Counter()
    raising = 0
    for seed in range(800):
        program, expected = generate(seed)
        raising += expected.error is not None
        ops.update(program.ops())
        for i in program.inputs:
            a = native(i.array())
            dtypes.add(str(a.dtype))
            seen["empty"] += a.size == 0
            seen["0-d"] += np.ndim(a) == 0
            seen["layout " + i.layout] += 1
            if a.dtype.kind in "fV":
                seen["nan"] += bool(np.isnan(a.astype(np.float64)).any())
                seen["inf"] += bool(np.isinf(a.astype(np.float64)).any())
            if a.dtype.kind == "i":
                seen["int limits"] += bool((a == np.iinfo(a.dtype).min).any())
        seen["several outputs"] += len(program.outputs) > 1
    assert set(OPS) <= set(ops), f"never drawn: {sorted(set(OPS) - set(ops))}"
    assert len(dtypes) == 7, dtypes
    for edge in ("empty", "0-d", "nan", "inf", "int limits", "several outputs",
                 "layout fortran", "layout strided", "layout reversed", "layout broadcast",
                 "layout offset", "layout scalar", "layout python", "layout bigendian",
                 "layout unaligned"):
        assert seen[edge] >= 3, (edge, seen)
    assert 0.02 <= raising / 800 <= 0.2, raising


def _program(source_op: str, *values, param=None, dtype=np.float32) -> Program:
    inputs = [Input(np.asarray(v, dtype)) for v in values]
    nodes = [Node("input", (), k) for k in range(len(values))]
    return Program(inputs, [Node(source_op, tuple(nodes), param)])


def test_results_that_depend_on_rounding_are_not_tests():
    # 0.1 + 0.2 > 0.3 in float32 is decided by one rounding: not a valid test
    a = Node("input", (), 0)
    sum_ = Node("add", (a, Node("input", (), 1)))
    tie = Program([Input(np.float32([0.1])), Input(np.float32([0.2]))],
                  [Node("gt", (sum_,), ("scalar", 0.3, 1))])
    with pytest.raises(Fragile):
        analyze(tie)
    clear = Program(tie.inputs, [Node("gt", (sum_,), ("scalar", 0.5, 1))])
    assert analyze(clear).outputs[0].array.tolist() == [False]
    # a float truncated to int right at an integer, after arithmetic
    near_int = Program([Input(np.float32([0.5]))], [Node("astype", (
        Node("mul", (Node("input", (), 0),), ("scalar", 6.0, 1)),), "int32")])
    with pytest.raises(Fragile):
        analyze(near_int)
    # float -> int of NaN is platform-defined in numpy
    with pytest.raises(Fragile):
        analyze(_program("astype", [np.nan], param="int32"))


def test_the_checker_sees_small_errors_but_not_rounding(monkeypatch):
    from . import check as check_module

    program = _program("exp", [0.5, 1.0, 2.0])
    expected = analyze(program)
    exact = np.exp(np.float32([0.5, 1.0, 2.0]))

    def returning(values):
        return lambda p, target: ([np.asarray(values, np.float32)], p.arrays())
    monkeypatch.setattr(check_module, "run", returning(np.nextafter(exact, np.inf)))
    assert check(program, expected).kind == "ok"           # one ULP: fine
    monkeypatch.setattr(check_module, "run", returning(exact * (1 + 1e-3)))
    assert check(program, expected).signature() == "mismatch: values float32"
    # a cast of an input is exact: one ULP off is a defect (double rounding)
    cast = _program("astype", [0.1], param="float16", dtype=np.float64)
    right = np.float16(0.1)
    monkeypatch.setattr(check_module, "run", lambda p, t: ([np.asarray([np.nextafter(
        right, np.float16(1))])], p.arrays()))
    assert check(cast, analyze(cast)).signature() == "mismatch: values float16"


def test_the_shrinker_finds_the_smallest_program_that_fails():
    seed = next(s for s in range(500) if "exp" in generate(s)[0].ops()
                and generate(s)[0].size() >= 4)
    program = generate(seed)[0]

    def fails(p: Program) -> bool:          # "pf fails on every program with an exp"
        try:
            return analyze(p).error is None and "exp" in p.ops()
        except Fragile:
            return False
    small, _ = shrink(program, fails, budget_s=60)
    assert small.ops() == ["exp"] and len(small.outputs) == 1, small.source()
    assert len(small.inputs) == 1 and small.inputs[0].base.size <= 1, small.repro()


def _drive(seeds, batch: int, verdict):
    """The campaign's bookkeeping on fake workers: verdict(payload) -> outcome per seed."""
    from collections import deque

    from .campaign import Summary, _handle
    from .check import Outcome

    summary = Summary("fake")
    tasks = deque(("seeds", tuple(seeds[i:i + batch]), None)
                  for i in range(0, len(seeds), batch))
    while tasks:
        _, payload, origin = tasks.popleft()
        summary.compiles += 1
        outcomes = verdict(payload)
        reply = ("done", [(s, outcomes.get(s, Outcome("ok")), len(payload) > 1)
                          for s in payload])
        _handle(reply, payload, origin, tasks, summary)
    return summary


def test_the_campaign_bisects_batches_and_keeps_batch_only_failures():
    from .check import Outcome

    boom = Outcome("untyped", "KeyError in x")
    # seed 5 makes any call it is part of raise: found by bisection, in few calls
    summary = _drive(list(range(64)), 16, lambda p: {s: boom for s in p} if 5 in p else {})
    assert summary.programs == 64
    assert [f.seeds for f in summary.failures] == [(5,)]
    assert summary.compiles <= 4 + 2 * 4
    # 3 and 4 fail only together: one batch-only failure, holding both
    summary = _drive(list(range(16)), 8, lambda p: {s: boom for s in p}
                     if {3, 4} <= set(p) else {})
    assert summary.programs == 16
    assert len(summary.failures) == 1 and summary.failures[0].batch_only
    assert {3, 4} <= set(summary.failures[0].seeds)
    # a wrong output is pinned on its program at once
    wrong = Outcome("mismatch", "values float32")
    summary = _drive(list(range(16)), 16, lambda p: {7: wrong} if 7 in p else {})
    assert [f.seeds for f in summary.failures] == [(7,)] and summary.programs == 16
