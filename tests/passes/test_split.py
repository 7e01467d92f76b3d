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


def rotate_half(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin


def _clamps_in_simd_loops(program):
    from powerfusion.gir.expr import Clamp

    return [e for var, indices in _simd_indices(program) for e in indices
            if any(isinstance(a, Clamp) and var in a.arg.vars() for a, _ in e.terms)]


def test_a_concatenation_is_cut_where_its_parts_meet():
    x, c, s = rand(2, 16, 64), rand(16, 64), rand(16, 64)
    _, plan = plan_of(rotate_half, x, c, s)
    program = plan.kernels[0].program
    assert not _clamps_in_simd_loops(program)          # every piece reads contiguously
    simd = [lp for lp in loops(program) if lp.kind is Parallel.SIMD]
    assert sorted(lp.var.extent for lp in simd) == [32, 32]
    assert_stages_match_oracle(rotate_half, x, c, s, stages=["naive", "optimized"])


def test_three_parts_of_one_row_and_a_flat_concatenation():
    three = lambda a, b: np.concatenate([a * 2.0, b, -a], axis=-1) + 1.0
    a, b = rand(6, 24), rand(6, 40)
    _, plan = plan_of(three, a, b)
    assert not _clamps_in_simd_loops(plan.kernels[0].program)
    assert_stages_match_oracle(three, a, b, stages=["naive", "optimized"])
    flat = lambda u, v: np.concatenate([u, v * 3.0]) - 0.5
    u, v = rand(100), rand(156)
    _, plan = plan_of(flat, u, v)
    assert not _clamps_in_simd_loops(plan.kernels[0].program)
    assert_stages_match_oracle(flat, u, v, stages=["naive", "optimized"])


def test_pieces_too_short_to_pay_stay_one_loop():
    short = lambda a, b: np.concatenate([a, b], axis=-1) * 2.0
    _, plan = plan_of(short, rand(64, 3), rand(64, 61))          # a piece of 3 elements
    assert_stages_match_oracle(short, rand(64, 3), rand(64, 61), stages=["naive", "optimized"])
    assert all(lp.var.extent >= 8 or lp.kind is not Parallel.SIMD
               for lp in loops(plan.kernels[0].program))


def _tangled_in_simd_loops(program):
    return [e for var, indices in _simd_indices(program) for e in indices
            if any(not isinstance(a, Var) and var in a.arg.vars() for a, _ in e.terms)]


def qkv_gradient(q, k, v):
    """GPT-2's backward: the q, k, v gradients, [batch, seq, heads, dim] seen through
    their head permutes, concatenated into the [batch, seq, 3 * width] of c_attn."""
    b, s, h, d = q.shape
    return np.concatenate([q.reshape(b, s, h * d), k.reshape(b, s, h * d),
                           v.reshape(b, s, h * d)], axis=-1)


def test_a_concatenation_of_head_split_parts_is_cut_then_split_by_the_head():
    """Each part is read through clamp(j - offset) // dim and % dim: the loop is cut
    where the parts meet, then each piece split by dim, every read contiguous."""
    q, k, v = (np.ascontiguousarray(rand(2, 12, 4, 16).transpose(0, 2, 1, 3))
               .transpose(0, 2, 1, 3) for _ in range(3))        # strides of a permute
    _, plan = plan_of(qkv_gradient, q, k, v)
    program = plan.kernels[0].program
    assert not _tangled_in_simd_loops(program)
    assert sorted(lp.var.extent for lp in loops(program) if lp.kind is Parallel.SIMD) \
        == [16, 16, 16]
    assert_stages_match_oracle(qkv_gradient, q, k, v, stages=["naive", "optimized"])


def test_a_cut_piece_that_no_divisor_untangles_stays_whole():
    """A part read through a division by a period that does not divide its piece (7
    into 24) cannot be split: the loop stays as it was, and right."""
    f = lambda a, b: np.concatenate([a.reshape(3, 21), b], axis=-1) * 2.0
    a, b = rand(3, 3, 7), rand(3, 24)
    _, plan = plan_of(f, a.transpose(0, 2, 1).copy().transpose(0, 2, 1), b)
    assert_stages_match_oracle(f, a, b, stages=["naive", "optimized"])


def _outer_registers_written_in_simd_loops(program):
    """Registers a vector loop writes that are also written outside it (not as an
    accumulation): the C printer keeps such a loop scalar."""
    from powerfusion.gir.ir import Compute, Level, Loop

    found = []
    for lp in loops(program):
        if lp.kind is not Parallel.SIMD:
            continue
        inside = {id(s) for s, _ in walk(lp.body)}
        written = {s.dst.buffer.name for s, _ in walk(lp.body)
                   if hasattr(s, "dst") and s.dst.buffer.level is Level.REGISTER
                   and not (isinstance(s, Compute) and s.is_accumulate)}
        outside = {s.dst.buffer.name for s, _ in walk(program.body)
                   if not isinstance(s, Loop) and id(s) not in inside and hasattr(s, "dst")}
        found += sorted(written & outside)
    return found


def test_the_pieces_of_a_cut_loop_keep_their_registers_apart():
    """Each piece of rotate_half reads the other part at a clamped, constant place;
    hoisted, that read defined a register another piece wrote per lane, and both
    pieces stayed scalar (LLaMA's rotary kernels)."""
    x, c, s = rand(8, 16, 64), rand(16, 64), rand(16, 64)
    _, plan = plan_of(rotate_half, x, c, s)
    program = plan.kernels[0].program
    assert not _outer_registers_written_in_simd_loops(program)
    from powerfusion.runtime.cpu_executable import generate_source
    assert "kept serial" not in generate_source(plan)
    assert_stages_match_oracle(rotate_half, x, c, s, stages=["naive", "optimized"])
