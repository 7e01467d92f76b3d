"""stream: float32 output rows go through a LOCAL row and leave with streaming stores."""

import dataclasses

import numpy as np
import pytest
from support import CPU, assert_stages_match_oracle, rand, softmax

from powerfusion.frontend import trace
from powerfusion.gir.ir import Level, Loop, Move, Parallel, walk
from powerfusion.runtime.cpu_executable import Executable, InterpretedExecutable, generate_source
from powerfusion.search.space import plan_graph


def plans(fn, *args):
    """The cost model's plan and the same with streaming stores."""
    graph, _ = trace(fn, args)
    strides = [tuple(s // a.itemsize for s in a.strides) for a in args]
    plain = plan_graph(graph, strides, CPU)
    return plain, plan_graph(graph, strides, CPU,
                             dataclasses.replace(plain.choice, streaming=True))


def test_the_output_row_is_written_on_chip_then_streamed():
    plain, streamed = plans(softmax, rand(8, 256))
    assert "immintrin" not in generate_source(plain)     # pf_rows.h: slow to parse, left out
    program = streamed.kernels[0].program
    moves = [s for s, _ in walk(program.body) if isinstance(s, Move)]
    to_out = [m for m in moves if m.dst.buffer.name == "out0"]
    assert len(to_out) == 1 and to_out[0].stream
    assert to_out[0].src.buffer.level is Level.LOCAL
    (loop,) = [s for s, _ in walk(program.body) if isinstance(s, Loop) and s.body == (to_out[0],)]
    assert loop.kind is Parallel.SIMD and loop.var.extent == 256
    source = generate_source(streamed)
    assert "pf_stream_f32(out0 + 256*p, out0_row, 256);" in source
    assert source.count("pf_stream_fence();") == 1


@pytest.mark.parametrize("shape", [(8, 256), (3, 100), (5, 1000)], ids=str)
def test_streaming_changes_no_bit(shape):
    x = rand(*shape) * 4
    plain, streamed = plans(softmax, x)
    a, b = (Executable(p, generate_source(p)).run([x])[0] for p in (plain, streamed))
    np.testing.assert_array_equal(a, b)          # same arithmetic, other stores
    np.testing.assert_allclose(a, softmax(x.astype(np.float64)), rtol=1e-5, atol=1e-7)


def test_stream_keeps_meaning():
    x = rand(4, 128)
    _, streamed = plans(softmax, x)
    before, after = (InterpretedExecutable(streamed, stage).run([x])[0]
                     for stage in ("preload", "rows"))
    np.testing.assert_array_equal(before, after)
    assert_stages_match_oracle(softmax, x, stages=["naive", "optimized"])


def test_not_for_short_rows_nor_16_bit_outputs():
    import ml_dtypes

    _, short = plans(softmax, rand(8, 32))
    assert not any(isinstance(s, Move) and s.stream for s, _ in walk(short.kernels[0].program.body))
    _, half = plans(softmax, rand(8, 256).astype(ml_dtypes.bfloat16))
    assert not any(isinstance(s, Move) and s.stream for s, _ in walk(half.kernels[0].program.body))


def test_bfloat16_rows_are_rounded_whole_where_the_cpu_has_the_instruction():
    import ml_dtypes
    from dataclasses import replace

    from support import layernorm

    bf16 = lambda *shape, seed=0: rand(*shape, seed=seed).astype(ml_dtypes.bfloat16)  # noqa: E731
    args = (bf16(64, 256), bf16(256, seed=1), bf16(256, seed=2))
    graph, _ = trace(layernorm, args)
    strides = [tuple(s // a.itemsize for s in a.strides) for a in args]
    with_it = plan_graph(graph, strides, replace(CPU, features=("avx512_bf16",)))
    without = plan_graph(graph, strides, replace(CPU, features=()))
    source = generate_source(with_it)
    assert "pf_f32_to_bf16_row(out0 + 256*p, out0_row, 256);" in source
    assert "pf_f32_to_bf16_row" not in generate_source(without)
    assert "pf_stream_f32(" not in source.split("void pf_kernel")[1]   # rounded, not streamed
    storage = [a.view(np.uint16) for a in args]
    a, b = (Executable(p, generate_source(p)).run(storage)[0] for p in (with_it, without))
    np.testing.assert_array_equal(a, b)                # the same bits either way
    # a row that would not fit beside the stash in half of L1 stays element by element
    tight = plan_graph(graph, strides, replace(CPU, features=("avx512_bf16",), l1_bytes=2048))
    assert "pf_f32_to_bf16_row" not in generate_source(tight)


def test_a_big_layout_change_streams_by_default_a_small_one_does_not():
    from dataclasses import replace

    heads = lambda x: x.transpose(0, 2, 1, 3)       # (B, S, H, D) -> (B, H, S, D), a copy  # noqa: E731
    small_l2 = replace(CPU, memory=tuple(replace(m, capacity=4096) if m.level is Level.LOCAL
                                         else m for m in CPU.memory))
    x = rand(1, 64, 8, 64)                           # 128 KB out: past 2 x 2 x 4 KB of "L2"
    for target, streams in ((small_l2, True), (CPU, False)):
        graph, _ = trace(heads, (x,))
        plan = plan_graph(graph, [tuple(s // 4 for s in x.strides)], target)
        source = generate_source(plan)
        assert ("pf_stream_f32(" in source) is streams, target
        out = Executable(plan, source).run([x])[0]
        np.testing.assert_array_equal(out.reshape(1, 8, 64, 64), heads(x))
