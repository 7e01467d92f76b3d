"""sums: long float sums cut into blocks (CPU) or accumulated in float64 (GPU)."""

import numpy as np
from support import assert_stages_match_oracle, loops, plan_of, rand, softmax

from powerfusion.dtypes import DType
from powerfusion.gir.ir import Compute, Parallel, walk
from powerfusion.passes.sums import LANE_ADDS, accurate_sums
from powerfusion.runtime.backends import get_target

CPU = get_target("cpu")
BLOCK = CPU.simd_bytes // 4 * LANE_ADDS         # values per block on this CPU


def _registers(program, dtype):
    return {s.dst.buffer.name for s, _ in walk(program.body)
            if isinstance(s, Compute) and s.dst.buffer.dtype is dtype}


def test_a_long_row_sum_is_cut_into_blocks_with_a_float64_total():
    n = 2 * BLOCK + 100                            # two full blocks and a tail
    _, plan = plan_of(lambda x: x.sum(-1), rand(3, n))
    program = plan.kernels[0].program
    simd = [lp for lp in loops(program) if lp.kind is Parallel.SIMD]
    assert sorted(lp.var.extent for lp in simd) == [100, BLOCK]
    assert any(lp.kind is Parallel.SERIAL and lp.var.extent == 2 for lp in loops(program))
    assert _registers(program, DType.float64) == {"acc1_total"}


def test_blocked_sums_keep_their_meaning():
    n = BLOCK + 37
    assert_stages_match_oracle(lambda x: x.sum(-1), rand(2, n), stages=["naive", "optimized"])
    assert_stages_match_oracle(softmax, rand(2, n), stages=["naive", "optimized"])
    assert_stages_match_oracle(lambda x: (x * x).mean(-1, keepdims=True) + x.max(-1),
                               rand(2, 3 * BLOCK), stages=["naive", "optimized"])


def test_a_gpu_accumulates_a_long_sum_in_float64():
    from powerfusion.runtime.simt_executable import simt_target

    target = simt_target("cuda", "h100")
    _, plan = plan_of(lambda x: x.sum(-1), rand(2, 1 << 18), target=target)
    program = plan.kernels[0].program
    assert _registers(program, DType.float64) == {"acc1_wide"}
    assert all(lp.kind is not Parallel.SERIAL for lp in loops(program))


def test_short_sums_and_other_reductions_are_the_same_object():
    for fn, shape in ((lambda x: x.sum(-1), (4, BLOCK)),          # one block: nothing to cut
                      (lambda x: x.max(-1), (4, 4 * BLOCK)),       # not a sum
                      (lambda x: x.sum(0), (4 * BLOCK, 8))):       # columns: numpy's in order
        _, plan = plan_of(fn, rand(*shape))
        (_, before), (last, after) = plan.kernels[0].log.programs[-2:]
        assert last == "sums" and after is before
        assert accurate_sums(after, CPU) is after


def test_a_long_sum_compiles_as_accurately_as_numpys():
    import powerfusion as pf

    x = np.full((2, 1 << 20), 0.1, np.float32)
    exact = np.float64(np.float32(0.1)) * x.shape[1]
    got = pf.jit(lambda x: x.sum(-1))(x)
    assert np.abs(got / exact - 1).max() < 2e-6
