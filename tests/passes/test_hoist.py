"""hoist: per-row instructions leave the per-element loop."""

from support import assert_stages_match_oracle, layernorm, plan_of, rand

from powerfusion.gir.ir import Compute, Loop


def test_rsqrt_of_the_variance_runs_once_per_row():
    _, plan = plan_of(layernorm, rand(4, 16), rand(16), rand(16))
    program = dict(plan.kernels[0].log.programs)["hoist"]
    row_level = program.body[0].body
    rsqrt = [s for s in row_level if isinstance(s, Compute) and s.op and s.op.name == "RSQRT"]
    in_loops = [s for lp in row_level if isinstance(lp, Loop) for s in lp.body
                if isinstance(s, Compute) and s.op and s.op.name == "RSQRT"]
    assert rsqrt and not in_loops


def test_hoist_keeps_meaning():
    assert_stages_match_oracle(layernorm, rand(3, 16), rand(16), rand(16),
                               stages=["naive", "hoist", "optimized"])
