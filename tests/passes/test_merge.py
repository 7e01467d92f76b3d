"""merge: one load and one instruction per value; rows reused across loops on chip."""

from support import assert_stages_match_oracle, layernorm, moves, plan_of, rand, softmax


def after(plan, stage):
    return dict(plan.kernels[0].log.programs)[stage]


def test_the_row_is_read_from_global_once_and_reused_from_local():
    _, plan = plan_of(softmax, rand(4, 64))
    merged = after(plan, "merge")
    x_loads = [m for m in moves(merged, "global", "register") if m.src.buffer.name == "in0"]
    assert len(x_loads) == 1
    assert moves(merged, "local", "register")             # later loops read the stash


def test_identical_instructions_are_computed_once():
    _, plan = plan_of(lambda x: (x * 3.0 + 1.0) * (x * 3.0 + 1.0), rand(4, 8))
    merged = after(plan, "merge")
    muls = [s for s in merged.body[0].body[0].body if getattr(s, "op", None) is not None
            and s.op.name == "MUL"]
    assert len(muls) == 2                # x*3 once, the final product once


def test_two_accumulators_with_equal_initial_values_stay_apart():
    # sum(x) and sum(x*x) both start from 0.0: merging their inits would fuse them
    assert_stages_match_oracle(lambda x: x.sum(-1) * (x * x).sum(-1), rand(4, 16),
                               stages=["naive", "merge", "optimized"])


def test_merge_keeps_meaning():
    assert_stages_match_oracle(layernorm, rand(3, 16), rand(16), rand(16),
                               stages=["naive", "merge"])


def test_a_cpu_stashes_a_row_only_while_it_fits_in_l1():
    # A copy larger than L1 sits in L2 beside the row it copies: re-read the row instead.
    # A GPU (l1_bytes 0: LOCAL is a scratchpad) stashes whatever fits its LOCAL memory.
    from dataclasses import replace

    from support import CPU

    small_l1 = replace(CPU, l1_bytes=2 * 4 * 512)           # half of it holds 512 floats
    scratchpad = replace(CPU, l1_bytes=0)
    for cols, target, stashed in [(256, small_l1, True), (2048, small_l1, False),
                                  (2048, scratchpad, True)]:
        _, plan = plan_of(softmax, rand(4, cols), target=target)
        merged = after(plan, "merge")
        x_loads = [m for m in moves(merged, "global", "register") if m.src.buffer.name == "in0"]
        assert len(x_loads) == (1 if stashed else 2), (cols, target.l1_bytes)
        assert_stages_match_oracle(softmax, rand(4, cols), target=target)
