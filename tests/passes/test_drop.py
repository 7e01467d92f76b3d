"""drop: stores nobody reads, values nobody uses, and their buffers go."""

from support import assert_stages_match_oracle, plan_of, rand, softmax

from powerfusion.gir.ir import Role


def test_no_temp_buffer_survives_a_fused_kernel():
    _, plan = plan_of(softmax, rand(4, 16))
    program = dict(plan.kernels[0].log.programs)["drop"]
    naive = plan.kernels[0].naive
    assert any(p.role is Role.TEMP for p in naive.params)
    assert not any(p.role is Role.TEMP for p in program.params)


def test_drop_keeps_meaning():
    assert_stages_match_oracle(lambda x: (x.max(-1), x.sum(-1)), rand(4, 16),
                               stages=["naive", "drop"])
