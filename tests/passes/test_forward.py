"""forward: sibling loops fuse, stored values reach their loads, intermediates die."""

from support import assert_stages_match_oracle, loops, moves, plan_of, rand, softmax

import powerfusion as pf


def after(plan, stage):
    return dict(plan.kernels[0].log.programs)[stage]


def test_elementwise_chain_becomes_one_loop_with_no_global_intermediate():
    x = rand(4, 16)
    _, plan = plan_of(lambda x: pf.tanh(pf.exp(x) * 2.0 + 1.0), x)
    naive, fwd = plan.kernels[0].naive, after(plan, "forward")
    assert len(loops(naive)) > len(loops(fwd)) == 2      # the parallel loop and one inner
    stores = [m for m in moves(fwd, "register", "global") if m.dst.buffer.role.value == "temp"]
    loads = [m for m in moves(fwd, "global", "register") if m.src.buffer.role.value == "temp"]
    assert stores and not loads          # forwarded: nothing reads the temps back


def test_a_reduction_result_is_not_used_before_it_is_complete():
    # max over the row must finish before x - max: those loops must not fuse
    x = rand(4, 16)
    _, plan = plan_of(softmax, x)
    fwd = after(plan, "forward")
    inner = [lp for lp in loops(fwd) if lp.kind.value == "simd"]
    assert len(inner) == 3               # max | sub-exp-sum | divide


def test_forward_keeps_meaning():
    assert_stages_match_oracle(softmax, rand(3, 8), stages=["naive", "forward"])
    assert_stages_match_oracle(lambda x, y: (x + y) * (x - y), rand(5, 7), rand(5, 7),
                               stages=["naive", "forward"])
