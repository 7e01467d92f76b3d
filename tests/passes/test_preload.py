"""preload: 16-bit rows every parallel unit reads alike are widened once, before the loop."""

import numpy as np
import pytest
from support import layernorm, moves, plan_of, rand

import powerfusion as pf
from powerfusion.gir.ir import Level, Loop, Parallel, buffers
from powerfusion.runtime.cpu_executable import InterpretedExecutable

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)


def bf16(*shape, seed=0):
    return rand(*shape, seed=seed).astype(BF16)


def widened(program) -> set[str]:
    return {name for name, b in buffers(program).items()
            if b.level is Level.LOCAL and name.endswith("_wide")}


def test_weight_and_bias_rows_are_widened_once_before_the_parallel_loop():
    _, plan = plan_of(layernorm, bf16(64, 256), bf16(256), bf16(256))
    program = plan.kernels[0].program
    fills = [s for s in program.body if isinstance(s, Loop) and s.kind is Parallel.SIMD]
    (par,) = [s for s in program.body if isinstance(s, Loop) and s.kind is Parallel.CORES]
    assert len(fills) == 2 and widened(program) == {"in1_wide", "in2_wide"}     # w and b
    inside = {m.src.buffer.name for m in moves(Loop(par.var, par.kind, par.body), "global")}
    assert inside == {"in0"}                                    # only x is read per row
    assert all(m.dst.buffer.dtype.name == "float32" for f in fills for m in f.body
               if m.dst.buffer.level is Level.LOCAL)


def test_not_for_float32_nor_for_operands_that_differ_per_unit():
    _, plan = plan_of(layernorm, rand(64, 256), rand(256), rand(256))     # float32: a copy
    assert not widened(plan.kernels[0].program)
    _, plan = plan_of(lambda x, s: x.sum(-1) * s[:, 0], bf16(64, 256), bf16(64, 256))
    assert not widened(plan.kernels[0].program)                 # s is read per row


def test_preload_changes_no_value():
    args = (bf16(64, 256), bf16(256, seed=1), bf16(256, seed=2))
    _, plan = plan_of(layernorm, *args)
    before, after = (InterpretedExecutable(plan, stage).run(list(args))[0]
                     for stage in ("split", "preload"))
    np.testing.assert_array_equal(before, after)                # bit for bit
    got = np.asarray(pf.jit(layernorm)(*args)).astype(np.float64)
    want = after.view(BF16).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=2 ** -7, atol=2 ** -7)


def test_an_input_read_per_unit_anywhere_is_not_widened():
    """a[0] + a[row p]: the first read is the same for every unit, the second each
    unit's own. Only the first qualified, but both were pointed at the widened buffer,
    which holds the first's elements alone: the second read past its end (fuzzer seed
    4242001896, `x[-5, 0] % x` in bfloat16 at a tiled point: a GIRError)."""
    from powerfusion.dtypes import DType
    from powerfusion.gir.check import check
    from powerfusion.gir.expr import Expr, Var
    from powerfusion.gir.interpreter import run
    from powerfusion.gir.ir import Access, Buffer, Compute, Move, Program, Role
    from powerfusion.graph.ops import Op
    from powerfusion.passes.preload import preload
    from support import CPU

    a = Buffer("a", Level.GLOBAL, DType.bfloat16, (4, 8), Role.INPUT)
    z = Buffer("z", Level.GLOBAL, DType.bfloat16, (4, 8), Role.OUTPUT)
    p, i = Var("p", 4), Var("i", 8)
    r, s, t = (Access(Buffer(n, Level.REGISTER, DType.bfloat16)) for n in "rst")
    row = Expr.of(p) * 8 + i
    body = (Move(r, Access(a, Expr.of(i))), Move(s, Access(a, row)),
            Compute(Op.ADD, t, (r, s)), Move(Access(z, row), t))
    program = Program("k", (a, z), (Loop(p, Parallel.CORES, (Loop(i, Parallel.SIMD, body),)),))
    after = preload(program, CPU)
    check(after)
    assert not widened(after)
    x = bf16(4, 8).view(np.uint16)          # (the interpreter's bfloat16 storage)
    np.testing.assert_array_equal(run(after, {"a": x.copy()})["z"],
                                  run(program, {"a": x.copy()})["z"])
    # the first read alone: widened
    shared = Program("k", (a, z), (Loop(p, Parallel.CORES, (Loop(i, Parallel.SIMD, (
        body[0], Compute(Op.ADD, t, (r, r)), Move(Access(z, row), t))),)),))
    assert widened(preload(shared, CPU)) == {"a_wide"}
