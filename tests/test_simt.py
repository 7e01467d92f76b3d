"""The SIMT backends: OpenCL runs (on PoCL in CI), CUDA and HIP sources compile.

- OpenCL: every graph below is planned for the OpenCL target, printed, built and run,
  and compared with the numpy oracle (graph/reference.py);
- CUDA: every generated source compiles with nvcc for sm_80 and sm_90;
- HIP: every generated source compiles with hipcc (Debian's, clang based) for gfx90a;
- the printer: deterministic; barriers only where threads exchange data; what it
  cannot map to threads it refuses with a typed error.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess

import numpy as np
import pytest

import graphs as G
from helpers import make, opencl_or_skip, tolerance
from powerfusion.codegen import simt
from powerfusion.codegen.simt import build_simt, emit_simt
from powerfusion.dtypes import DType
from powerfusion.errors import UnsupportedError
from powerfusion.gir.expr import Expr, Var
from powerfusion.gir.ir import (Access, Buffer, Compute, Const, Level, Loop, Move, Parallel,
                                Program, Role)
from powerfusion.graph.graph import Graph
from powerfusion.graph.ops import Op
from powerfusion.graph.reference import bfloat16_to_float32, evaluate
from powerfusion.search.space import plan_graph
from powerfusion.targets import SIMT_TARGETS

F32, F16, BF16, I32 = DType.float32, DType.float16, DType.bfloat16, DType.int32


# -- the graphs ------------------------------------------------------------------------------
def elementwise() -> Graph:
    x, y = G.inp(0, (33, 70)), G.inp(1, (33, 70))
    a = G.ew(Op.MUL, G.ew(Op.GELU, x), G.ew(Op.SIGMOID, y))
    b = G.ew(Op.ADD, G.ew(Op.TANH, x), G.ew(Op.MUL, G.ew(Op.EXP, y), G.ew(Op.ERF, x)))
    return Graph((x, y), (G.ew(Op.WHERE, G.ew(Op.GT, x, y, dtype=DType.bool), a, b,
                                dtype=F32),))


def rounding_math(dtype=F32) -> Graph:
    """Every rounding op, sign and the log/exp variants and tan, in one kernel, plus
    sign of an int (the int family of the op table)."""
    x, i = G.inp(0, (9, 70), dtype), G.inp(1, (9, 70), I32)
    ops = (Op.FLOOR, Op.CEIL, Op.TRUNC, Op.RINT, Op.SIGN, Op.LOG1P, Op.EXPM1, Op.LOG2,
           Op.LOG10, Op.EXP2, Op.TAN)
    # ties and fractions in every unit; not for 16 bits, whose product pf keeps in float32
    # where the oracle rounds it: a floor of the two may differ by one
    scaled = x if dtype.itemsize == 2 else G.ew(Op.MUL, x, G.const(2.5, dtype))
    return Graph((x, i), tuple(G.ew(op, scaled) for op in ops) + (G.ew(Op.SIGN, i),))


def modulo(dtype=F32) -> Graph:
    """FMOD and MOD through the dialect's helpers (pf_mod_*, pf_fmod_*): float fmod is
    exact, an integer divisor of 0 (make() draws some) gives numpy's 0."""
    x, y = G.inp(0, (9, 70), dtype), G.inp(1, (9, 70), dtype)
    return Graph((x, y), (G.ew(Op.MOD, x, y), G.ew(Op.FMOD, x, y),
                          G.ew(Op.MOD, x, G.const(-3, dtype)),
                          G.ew(Op.FMOD, G.const(7, dtype), y)))


def reduction(op: Op, shape, axes, dtype=F32) -> Graph:
    x = G.inp(0, shape, dtype)
    return Graph((x,), (G.reduce(op, x, axes),))


def reversed_softmax(m: int, n: int) -> Graph:
    """softmax(x)[:, ::-1]: the last loop reads the row stash at another thread's index."""
    softmax = G.softmax(m, n)
    (y,) = softmax.outputs
    return Graph(softmax.inputs, (G.slice_(y, ((0, m, 1), (n - 1, -1, -1))),))


def cast_chain(storage: DType) -> Graph:
    x, y = G.inp(0, (64, 33), storage), G.inp(1, (64, 33), storage)
    up = [G.ew(Op.CAST, t, dtype=F32) for t in (x, y)]
    z = G.ew(Op.ADD, G.ew(Op.MUL, up[0], up[1]), G.ew(Op.EXP, up[0]))
    return Graph((x, y), (G.ew(Op.CAST, z, dtype=storage),))


def half_softmax(storage: DType) -> Graph:
    x = G.inp(0, (6, 300), storage)
    xf = G.ew(Op.CAST, x, dtype=F32)
    mx = G.reduce(Op.MAX, xf, (1,))
    e = G.ew(Op.EXP, G.ew(Op.SUB, xf, G.expand(mx, (6, 300))))
    s = G.reduce(Op.SUM, e, (1,))
    return Graph((x,), (G.ew(Op.CAST, G.ew(Op.DIV, e, G.expand(s, (6, 300))), dtype=storage),))


def _bf16_rows(m: int, n: int) -> Graph:
    """bfloat16 rows: eight elements per 128-bit chunk, a float32 row stash in LOCAL."""
    x = G.inp(0, (m, n), BF16)
    xf = G.ew(Op.CAST, x, dtype=F32)
    s = G.reduce(Op.SUM, G.ew(Op.MUL, xf, xf), (1,))
    return Graph((x,), (G.ew(Op.CAST, G.ew(Op.MUL, xf, G.expand(s, (m, n))), dtype=BF16),))


def float64_sum_exp(m: int, n: int) -> Graph:
    x = G.inp(0, (m, n), DType.float64)
    return Graph((x,), (G.reduce(Op.SUM, G.ew(Op.EXP, x), (1,)),))


CASES = {
    "elementwise": elementwise,
    "rounding_math": rounding_math,
    "rounding_math_float64": lambda: rounding_math(DType.float64),
    "rounding_math_bfloat16": lambda: rounding_math(BF16),
    "modulo": modulo,
    "modulo_float64": lambda: modulo(DType.float64),
    "modulo_int32": lambda: modulo(I32),
    "modulo_int64": lambda: modulo(DType.int64),
    "softmax": lambda: G.softmax(6, 1000),
    "layernorm": lambda: G.layernorm(5, 768),
    "rmsnorm_residual": lambda: G.rmsnorm(4, 300, residual=True),
    "masked_softmax": lambda: G.masked_scaled_softmax(3, 50),
    "group_norm": lambda: G.group_norm(2, 8, 4, 4, 2),
    "column_sum": lambda: reduction(Op.SUM, (300, 7), (0,)),
    "sum_all": lambda: reduction(Op.SUM, (37, 129), (0, 1)),
    "max_rows": lambda: reduction(Op.MAX, (9, 77), (1,)),
    "min_int_all": lambda: reduction(Op.MIN, (40, 50), (0, 1), I32),
    "int64_sum_rows": lambda: reduction(Op.SUM, (6, 333), (1,), DType.int64),
    "bool_any_rows": lambda: reduction(Op.MAX, (6, 90), (1,), DType.bool),
    "float64_sum_exp": lambda: float64_sum_exp(5, 400),
    "long_softmax": lambda: G.softmax(3, 70000),
    "reversed_softmax": lambda: reversed_softmax(4, 200),
    "float16": lambda: cast_chain(F16),
    "bfloat16": lambda: cast_chain(BF16),
    "float16_softmax": lambda: half_softmax(F16),
    "bfloat16_softmax": lambda: half_softmax(BF16),
    "ragged_softmax": lambda: G.softmax(5, 1001),        # rows not a multiple of a chunk
    "split_column_sum": lambda: reduction(Op.SUM, (8192, 40), (0,)),
    "split_column_max": lambda: reduction(Op.MAX, (16, 512, 24), (0, 1)),
    "bfloat16_rows": lambda: _bf16_rows(4, 520),
    # short rows, one warp each, several per block (8, 4, 2 as the row count allows)
    "short_rows_softmax": lambda: G.softmax(24, 200),
    "short_rows_rmsnorm": lambda: G.rmsnorm(12, 100, residual=True),
    "short_rows_int_max": lambda: reduction(Op.MAX, (6, 77), (1,), I32),
    # rows too long for registers: each thread's part partly in shared memory
    "long_layernorm": lambda: G.layernorm(2, 65536),
    "long_bfloat16_rows": lambda: _bf16_rows(2, 65536),
}
# rows too long for one block's registers and shared memory: CUDA (sm_90) spreads each
# over a thread block cluster; compiled here for sm_90 only, run by test_cuda on a GPU
CLUSTER_CASES = {
    "cluster_softmax": lambda: G.softmax(32, 262144),
    "cluster_layernorm": lambda: G.layernorm(32, 262144),
    "cluster_bfloat16_rows": lambda: _bf16_rows(32, 262144),
    "cluster_rmsnorm_128256": lambda: G.rmsnorm(64, 128256),   # LLaMA 3's vocabulary
}
TRANSCENDENTAL = {"elementwise", "rounding_math", "rounding_math_float64",
                  "rounding_math_bfloat16", "float64_sum_exp", "softmax", "masked_softmax", "long_softmax",
                  "reversed_softmax", "float16", "bfloat16", "float16_softmax",
                  "bfloat16_softmax", "ragged_softmax", "bfloat16_rows", "long_bfloat16_rows",
                  "cluster_softmax", "cluster_bfloat16_rows", "short_rows_softmax"}


def _inputs(graph: Graph, rng) -> list[np.ndarray]:
    out = []
    for node in graph.inputs:
        name = "bool" if node.dtype is DType.bool else str(node.dtype)
        a = make(rng, node.shape, name) if name != "bfloat16" else \
            _bf16_bits(rng.standard_normal(node.shape))
        out.append(a)
    return out


def _bf16_bits(x) -> np.ndarray:
    from powerfusion.graph.reference import float32_to_bfloat16_bits

    return float32_to_bfloat16_bits(np.asarray(x, np.float32))


def _strides(arrays) -> list[tuple[int, ...]]:
    return [tuple(s // a.itemsize for s in a.strides) for a in arrays]


def _values(a: np.ndarray, dtype: DType) -> np.ndarray:
    if dtype is BF16:
        return bfloat16_to_float32(a).astype(np.float64)
    return a.astype(np.float64)


# -- OpenCL ----------------------------------------------------------------------------------
def run_opencl(graph: Graph, inputs):
    from powerfusion.runtime.simt_executable import compile_plan_simt, simt_target

    opencl_or_skip()
    plan = plan_graph(graph, _strides(inputs), simt_target("opencl"))
    return compile_plan_simt(plan, "opencl").run(inputs)


def assert_matches_oracle(graph: Graph, inputs, got, transcendental: bool) -> None:
    expected = evaluate(graph, inputs)
    for k, (g, e, node) in enumerate(zip(got, expected, graph.outputs)):
        assert g.shape == e.shape, f"output {k}: shape {g.shape}, expected {e.shape}"
        if not node.dtype.is_float:
            np.testing.assert_array_equal(g, e, err_msg=f"output {k}")
            continue
        rtol, atol = tolerance(str(node.dtype), transcendental, factor=4)
        np.testing.assert_allclose(_values(g, node.dtype), _values(e, node.dtype), rtol=rtol,
                                   atol=atol, equal_nan=True, err_msg=f"output {k}")


@pytest.mark.parametrize("case", sorted(set(CASES) - {"reversed_softmax"}))
def test_opencl_matches_numpy(case, rng):
    graph = CASES[case]()
    inputs = _inputs(graph, rng)
    got = run_opencl(graph, inputs)
    assert_matches_oracle(graph, inputs, got, case in TRANSCENDENTAL)


@pytest.mark.parametrize("layout", ["transposed", "reversed", "strided"])
@pytest.mark.parametrize("case", ["softmax", "column_sum", "elementwise"])
def test_opencl_strided_inputs(case, layout, rng):
    graph = CASES[case]()
    inputs = []
    for a in _inputs(graph, rng):
        if layout == "transposed":
            a = np.asfortranarray(a)
        elif layout == "reversed":
            a = np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]
        else:
            big = np.zeros((a.shape[0], 3 * a.shape[1]), a.dtype)
            big[:, ::3] = a
            a = big[:, ::3]
        inputs.append(a)
    got = run_opencl(graph, inputs)
    assert_matches_oracle(graph, inputs, got, case in TRANSCENDENTAL)


def test_opencl_vector_loads_take_inputs_at_any_offset(rng):
    """Rows at element 1 of their storage: the chunks are vector loads all the same
    (OpenCL's vloadn needs only the element's alignment)."""
    graph = CASES["softmax"]()
    (node,) = graph.inputs
    storage = rng.standard_normal(node.size + 1).astype(np.float32)
    x = storage[1:].reshape(node.shape)
    got = run_opencl(graph, [x])
    assert_matches_oracle(graph, [x], got, transcendental=True)


def test_opencl_reversed_rows_cross_threads(rng):
    # reference.evaluate reads the normalised slice (n-1, -1, -1) as Python's [n-1:-1:-1]
    # (empty), so the reference here is numpy's own
    x = rng.standard_normal((4, 200)).astype(np.float32)
    (got,) = run_opencl(reversed_softmax(4, 200), [x])
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got, (e / e.sum(axis=1, keepdims=True))[:, ::-1],
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("op", [Op.MAX, Op.MIN])
def test_opencl_nan_propagates_through_max_and_min(op, rng):
    x = rng.standard_normal((8, 700)).astype(np.float32)
    x[2, 5] = np.nan          # early in a thread's share of the row
    x[5, 699] = np.nan        # the last element: another thread, another warp
    x[7, :] = np.nan
    (got,) = run_opencl(reduction(op, (8, 700), (1,)), [x])
    expected = (np.max if op is Op.MAX else np.min)(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(got, expected)


def test_opencl_softmax_of_a_row_with_nan(rng):
    x = rng.standard_normal((3, 500)).astype(np.float32)
    x[1, 17] = np.nan
    (got,) = run_opencl(G.softmax(3, 500), [x])
    assert np.isnan(got[1]).all() and not np.isnan(got[[0, 2]]).any()


def test_opencl_build_error_is_a_compile_error():
    from powerfusion.errors import CompileError
    from powerfusion.runtime import opencl

    opencl_or_skip()
    with pytest.raises(CompileError) as info:
        opencl.build("__kernel void broken(__global float *x) { x[0] = undefined_name; }")
    assert "undefined_name" in str(info.value)


# -- CUDA and HIP: the sources compile -------------------------------------------------------
@functools.cache
def _all_kernels(dialect: str, names: tuple[str, ...] = tuple(CASES),
                 device: str | None = None) -> str:
    """The cases' kernels in one translation unit (one compiler run), each kernel named
    after its case so an error points at it: printed as the runtime prints them, for
    the shipped description of `device` (CUDA: "a100", "h100")."""
    from types import SimpleNamespace

    from powerfusion.runtime.simt_executable import simt_module, simt_target

    target = simt_target(dialect, device)
    programs = []
    for name in sorted(names):
        graph = (CASES | CLUSTER_CASES)[name]()
        plan = plan_graph(graph, G.strides_of(graph), target)
        programs += [dataclasses.replace(ck.program, name=f"{name}_{ck.program.name}")
                     for ck in plan.kernels]
    kernels = [SimpleNamespace(program=p) for p in programs]
    return simt_module(SimpleNamespace(target=target, kernels=kernels), dialect).source


def _compile(command: list[str], source: str, suffix: str, tmp_path, env=None) -> None:
    path = tmp_path / f"kernels{suffix}"
    path.write_text(source)
    result = subprocess.run(command + [str(path)], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, (f"{' '.join(command)} failed:\n{result.stderr}\n"
                                    f"source kept at {path}")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not on PATH")
def test_cuda_sources_compile_for_sm80_and_sm90(tmp_path):
    """As planned for an A100 (sm_80: no clusters) and for an H100 (sm_90)."""
    for device, arch in (("a100", "80"), ("h100", "90")):
        _compile(["nvcc", "-gencode", f"arch=compute_{arch},code=sm_{arch}", "-Werror",
                  "all-warnings", "-c", "-o", os.devnull], _all_kernels("cuda", device=device),
                 f".sm{arch}.cu", tmp_path)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not on PATH")
def test_cuda_cluster_sources_compile_for_sm90(tmp_path):
    source = _all_kernels("cuda", tuple(CLUSTER_CASES), "h100")
    assert source.count("void __cluster_dims__(") == len(CLUSTER_CASES)
    _compile(["nvcc", "-gencode", "arch=compute_90,code=sm_90", "-Werror", "all-warnings",
              "-c", "-o", os.devnull], source, ".cu", tmp_path)


@pytest.mark.skipif(shutil.which("hipcc") is None,
                    reason="hipcc is not on PATH (Debian: apt-get install hipcc)")
def test_hip_sources_compile_for_gfx90a(tmp_path):
    env = dict(os.environ, HIP_PLATFORM="amd")   # not nvcc, even where CUDA is installed
    _compile(["hipcc", "--offload-arch=gfx90a", "--cuda-device-only", "-Werror", "-c",
              "-o", os.devnull], _all_kernels("hip"), ".hip", tmp_path, env)


# -- the printer -----------------------------------------------------------------------------
def _module(graph: Graph, dialect: str = "cuda"):
    from powerfusion.runtime.simt_executable import simt_target

    device = "h100" if dialect == "cuda" else None    # the same plans on any machine
    plan = plan_graph(graph, G.strides_of(graph), simt_target(dialect, device))
    return build_simt([ck.program for ck in plan.kernels], dialect)


def _legal(program: Program, dialect: str = "cuda") -> Program:
    """A hand-written program with the launch and barriers the SIMT passes give it for the
    dialect (CUDA: as on an H100)."""
    from powerfusion.passes.simt.launch import plan_launch
    from powerfusion.passes.simt.sync import place_barriers
    from powerfusion.runtime.simt_executable import simt_target

    target = simt_target(dialect, "h100" if dialect == "cuda" else None)
    return place_barriers(plan_launch(program, target))


def _kernel_text(source: str) -> str:
    return source[source.index('extern "C"'):]


def test_source_is_deterministic():
    assert _module(G.layernorm(4, 512)).source == _module(G.layernorm(4, 512)).source


def test_softmax_needs_no_barrier_beyond_its_reductions():
    module = _module(G.softmax(4, 1000))
    kernel = _kernel_text(module.source)
    assert "__syncthreads" not in kernel        # each thread re-reads what it stashed
    assert kernel.count("pf_block_") == 2       # the row max and the row sum
    (launch,) = module.kernels
    assert launch.block == 64 and launch.blocks == 4      # 16 elements per thread
    assert launch.shared_bytes == 0      # the stashed row and exponentials: registers


def _reverse_rows(rows: int, n: int) -> Program:
    """Each row through a LOCAL tile, written at i and read back at n-1-j: the element a
    thread reads was stored by another thread."""
    p, i, j = Var("p", rows), Var("i", n), Var("j", n)
    x = Buffer("x", Level.GLOBAL, F32, (rows, n), Role.INPUT)
    y = Buffer("y", Level.GLOBAL, F32, (rows, n), Role.OUTPUT)
    tile = Buffer("tile", Level.LOCAL, F32, (n,))
    r, s = (Access(Buffer(name, Level.REGISTER, F32)) for name in ("r", "s"))
    return Program("reverse_rows", (x, y), (Loop(p, Parallel.CORES, (
        Loop(i, Parallel.SIMD, (Move(r, Access(x, Expr.of(p) * n + i)),
                                Move(Access(tile, Expr.of(i)), r))),
        Loop(j, Parallel.SIMD, (Move(s, Access(tile, n - 1 - Expr.of(j))),
                                Move(Access(y, Expr.of(p) * n + j), s))))),))


def test_rows_move_in_128_bit_chunks():
    """float32 rows: four elements per thread and chunk, one uint4 load and store each;
    bfloat16: eight. A row that is not a multiple of the chunk moves element-wise."""
    kernel = _kernel_text(_module(G.softmax(4, 1000)).source)
    assert "*(const uint4 *)((in0 + i" in kernel and "*(uint4 *)((out0 + i" in kernel
    assert "#pragma unroll" in kernel and "(pf_k * 64 + pf_tid) * 4" in kernel
    assert "(pf_k * 64 + pf_tid) * 8" in _kernel_text(_module(_bf16_rows(4, 520)).source)
    ragged = _kernel_text(_module(G.softmax(4, 1001)).source)
    assert "uint4" not in ragged and ">= 1001) continue;" in ragged


def test_rows_a_thread_reads_back_itself_stay_in_registers():
    """softmax's stashed row and exponentials: each thread re-reads only what it wrote,
    so they are per-thread arrays (no shared memory); a row read back at another
    thread's element (reversed) stays in shared memory, behind barriers."""
    module = _module(G.softmax(4, 4096))
    kernel = _kernel_text(module.source)
    assert "this thread's part of the row" in kernel and "pf_smem" not in kernel
    assert module.kernels[0].shared_bytes == 0 and "__syncthreads" not in kernel
    assert "for (int pf_k = 0; pf_k < 4; ++pf_k)" in kernel     # 256 threads x 4 chunks
    shared = _kernel_text(emit_simt([_legal(_reverse_rows(5, 300))], "cuda"))
    assert "this thread's part" not in shared and "__syncthreads" in shared


def test_rows_too_long_for_registers_keep_the_rest_in_shared_memory():
    """A 65536-element float32 row (256 KB) fits neither the H100's registers nor its
    shared memory (227 KB), but both together: each of 1024 threads keeps 12 elements in
    registers and 52 in its slots of shared memory, so the row is read once, not twice
    (as before: 64% of copy bandwidth). The register chunks unroll; the shared ones
    index a block-wide slice per slot (a warp reads 32 consecutive words)."""
    from powerfusion.runtime.simt_executable import simt_target

    graph = G.layernorm(1024, 65536)
    plan = plan_graph(graph, G.strides_of(graph), simt_target("cuda", "h100"))
    assert len(plan.kernels) == 1
    module = build_simt([ck.program for ck in plan.kernels], "cuda")
    kernel = _kernel_text(module.source)
    assert module.kernels[0].block == 1024
    assert module.kernels[0].shared_bytes == 52 * 1024 * 4
    assert "float in0_stash0[12];" in kernel
    assert "for (int pf_k = 0; pf_k < 3; ++pf_k)" in kernel
    assert "for (int pf_k = 3; pf_k < 16; ++pf_k)" in kernel
    assert "in0_stash0_rest[(pf_k * 4 + pf_v - 12) * 1024 + pf_tid]" in kernel
    assert kernel.count("__syncthreads") == 0       # only the reductions' own
    # one read of the input, one write of the output, the weight and bias rows, and
    # each row's first element (the one-pass variance's shift)
    from powerfusion.passes.traffic import footprint
    moved = footprint(plan.kernels[0].program)["global"]
    assert moved["write"] == 1024 * 65536 * 4
    assert moved["read"] == (1024 * 65536 + 2 * 65536 + 1024) * 4


def test_short_rows_take_a_warp_each_several_per_block():
    """softmax over 4096 rows of 256: a row is one warp's work (32 threads x 8). One
    row per block would be 32-thread blocks, and an H100 multiprocessor holds at most
    32 blocks: a quarter of its threads. Eight rows per 256-thread block, each warp its
    own row, reduced by shuffles alone: no shared memory, no barrier."""
    module = _module(G.softmax(4096, 256))
    (launch,) = module.kernels
    assert launch.block == 256 and launch.blocks == 4096 // 8
    kernel = _kernel_text(module.source)
    assert "const int pf_tid = pf_lane % 32;" in kernel
    assert "for (int pf_g = blockIdx.x; pf_g < 512; pf_g += gridDim.x)" in kernel
    assert "const int p = pf_g * 8 + pf_seg;" in kernel
    assert "pf_lanes_maximum_float32(acc1, pf_red)" in kernel
    assert "__syncthreads" not in kernel and "pf_block_" not in kernel
    assert launch.describe() == ("512 blocks of 256 threads (8 rows per block, a warp each), "
                                 "0 B of shared memory per block")
    # rows that 8 does not divide take 4 or 2 per block; an odd count one
    assert _module(G.softmax(12, 256)).kernels[0].block == 128
    assert _module(G.softmax(6, 256)).kernels[0].block == 64
    assert _module(G.softmax(7, 256)).kernels[0].block == 32


def test_a_vocabulary_wide_log_softmax_keeps_its_rows_on_chip_on_a_gpu():
    """log_softmax over 256 rows of 50257 (GPT-2's vocabulary): each row (201 KB) fits a
    1024-thread block's registers and shared memory, so the row is read once. 256
    such blocks keep a 132-multiprocessor GPU busy (the cost model counts threads, not
    blocks), so the model no longer prefers the online softmax's more, smaller units
    (1.5x the bytes)."""
    from powerfusion.runtime.simt_executable import simt_target

    x = G.inp(0, (256, 50257))
    mx = G.expand(G.reduce(Op.MAX, x, (1,)), (256, 50257))
    shifted = G.ew(Op.SUB, x, mx)
    lse = G.ew(Op.LOG, G.reduce(Op.SUM, G.ew(Op.EXP, shifted), (1,)))
    graph = Graph((x,), (G.ew(Op.SUB, shifted, G.expand(lse, (256, 50257))),))
    plan = plan_graph(graph, G.strides_of(graph), simt_target("cuda", "h100"))
    assert plan.choice.label == "as written" and len(plan.kernels) == 1
    from powerfusion.passes.traffic import footprint
    moved = footprint(plan.kernels[0].program)["global"]
    assert moved == {"read": 256 * 50257 * 4, "write": 256 * 50257 * 4}


def test_rows_too_long_for_a_block_spread_over_a_thread_block_cluster(monkeypatch):
    """softmax over rows of 262144 float32 (1 MB) on an H100: a row fits no block (227 KB
    of shared memory, 48 KB of row registers), but fits 4 blocks of a cluster. Each
    block's 1024 threads are lanes 1024 r .. 1024 r + 1023 of the row; partial maxima
    and sums meet through distributed shared memory; the row is read once (the online
    softmax read it twice: 62% of copy bandwidth). The exponentials are recomputed, not
    kept: keeping them would take 8 blocks. Without clusters (A100, or
    POWERFUSION_SIMT_CLUSTERS=0) the online softmax comes back."""
    from powerfusion.passes.traffic import footprint
    from powerfusion.runtime.simt_executable import simt_module, simt_target

    graph = G.softmax(256, 262144)
    plan = plan_graph(graph, G.strides_of(graph), simt_target("cuda", "h100"))
    assert plan.choice.label == "as written" and len(plan.kernels) == 1
    assert footprint(plan.kernels[0].program)["global"] == {"read": 256 * 262144 * 4,
                                                            "write": 256 * 262144 * 4}
    module = simt_module(plan, "cuda")
    (launch,) = module.kernels
    assert launch.cluster == 4 and launch.block == 1024 and launch.grid(132) % 4 == 0
    kernel = _kernel_text(module.source)
    assert "__cluster_dims__(4, 1, 1) __launch_bounds__(1024)" in kernel
    assert "pf_tid = pf_lane + pf_cluster_rank() * 1024" in kernel
    assert "for (int p = pf_cluster_id(); p < 256; p += pf_cluster_count())" in kernel
    assert "(pf_k * 4096 + pf_tid) * 4" in kernel           # 4 blocks x 1024 lanes
    assert "[(pf_k * 4 + pf_v - 12) * 1024 + pf_lane]" in kernel   # this block's slots
    assert "pf_cluster_maximum_float32(acc1, pf_red)" in kernel
    assert "pf_cluster_add_float64(acc14_wide, pf_red)" in kernel   # long: float64
    assert "pf_red[33]" in kernel and "__syncthreads" not in kernel
    from powerfusion.compiler import explain_graph
    report = str(explain_graph(graph, input_strides=G.strides_of(graph), target="cuda"))
    assert "launch: 1024 blocks of 1024 threads (a row spread over a cluster of 4), " \
           "212,992 B of shared memory per block" in report

    assert plan.kernels[0].log.decisions == [
        "g13: recomputed where used: 1048576 B per unit exceeds the -767496 B left on chip;"
        " its inputs are on chip"]
    # a row whose recomputation would re-read global memory stays on the cluster instead
    rows = _bf16_rows(32, 262144)
    plan = plan_graph(rows, G.strides_of(rows), simt_target("cuda", "h100"))
    assert plan.kernels[0].log.decisions == [
        "g4: promoted to local: 1048576 B per unit, spread over a thread block cluster's "
        "blocks"]
    assert footprint(plan.kernels[0].program)["global"]["read"] == 32 * 262144 * 2
    assert simt_module(plan, "cuda").kernels[0].cluster == 4

    monkeypatch.setenv("POWERFUSION_SIMT_CLUSTERS", "0")
    plan = plan_graph(graph, G.strides_of(graph), simt_target("cuda", "h100"))
    assert plan.choice.label == "online softmax"
    assert "__cluster_dims__" not in simt_module(plan, "cuda").source


def test_only_cuda_has_thread_block_clusters():
    from powerfusion.runtime.simt_executable import simt_target

    from powerfusion.targets import Target, shipped, shipped_names

    assert simt_target("cuda", "h100").cluster_blocks == 8
    assert simt_target("cuda", "h200").cluster_blocks == 8
    assert simt_target("cuda", "a100").cluster_blocks == 1     # sm_80: none
    assert simt_target("hip").cluster_blocks == simt_target("opencl").cluster_blocks == 1
    for name in shipped_names():                                # descriptions round-trip
        assert Target.from_json(shipped(name).to_json()) == shipped(name)
    program = plan_graph(G.softmax(4, 100), G.strides_of(G.softmax(4, 100)),
                         simt_target("opencl")).kernels[0].program
    clustered = dataclasses.replace(program, launch=dataclasses.replace(program.launch,
                                                                        cluster=2))
    for dialect in ("opencl", "hip"):
        with pytest.raises(UnsupportedError, match="no thread block clusters"):
            build_simt([clustered], dialect)


def test_a_local_array_that_fits_no_shared_memory_is_a_typed_error():
    """Registers hold only rows each thread keeps its own part of; a row read back at
    another thread's element lives in shared memory whole. Too big for it: refused
    before anything is built, naming the kernel."""
    from types import SimpleNamespace

    from powerfusion.search.plan import CompiledKernel
    from powerfusion.runtime.simt_executable import simt_module, simt_target

    target = simt_target("cuda", "h100")
    program = _legal(_reverse_rows(4, 65536))
    plan = SimpleNamespace(target=target, kernels=[SimpleNamespace(program=program)])
    with pytest.raises(UnsupportedError, match=r"kernel reverse_rows needs 262144 B of shared"):
        simt_module(plan, "cuda")
    assert CompiledKernel       # (the plan above stands in for one of these)


def test_a_gpu_splits_a_long_column_reduction_and_a_cpu_does_not():
    """sum over 65536 rows of 1024 columns: as written, a GPU gets 8 blocks of 128
    columns; split into 256-row partials it gets 2048, for 1 MB more traffic. The cost
    model prices the missing parallelism on the GPU only."""
    from powerfusion.runtime.backends import get_target

    graph = reduction(Op.SUM, (65536, 1024), (0,))
    gpu = plan_graph(graph, G.strides_of(graph), get_target("cuda"))
    cpu = plan_graph(graph, G.strides_of(graph), get_target("cpu"))
    assert gpu.choice.label == "split columns" and cpu.choice.label == "as written"
    first = gpu.kernels[0]
    assert first.schedule.columns == 128 and first.schedule.outer_extent == 2048
    kernel = _kernel_text(build_simt([ck.program for ck in gpu.kernels], "cuda").source)
    assert "#pragma unroll 4" in kernel and "*(const uint4 *)((in0 + " in kernel


def test_chunks_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("POWERFUSION_SIMT_VECTOR", "0")
    kernel = _kernel_text(_module(G.softmax(4, 1000)).source)
    assert "uint4" not in kernel and "pf_v < 1;" in kernel      # one element at a time


def test_reading_another_threads_element_puts_barriers_around_it():
    kernel = _kernel_text(emit_simt([_legal(_reverse_rows(5, 300))], "cuda"))
    # one between the loops; one before the next row overwrites the tile
    assert kernel.count("__syncthreads();") == 2


def test_opencl_barriers_hold_when_one_block_runs_every_row(rng):
    from powerfusion.runtime import opencl

    opencl_or_skip()
    module = build_simt([_legal(_reverse_rows(5, 300), "opencl")], "opencl")
    kernel = opencl.OpenCLKernel(opencl.build(module.source), "reverse_rows")
    x = rng.standard_normal((5, 300)).astype(np.float32)
    y = np.empty_like(x)
    out = opencl.empty(y.nbytes)
    kernel(1, module.kernels[0].block, [opencl.to_device(x), np.int64(0), out])
    opencl.to_host(out, y)
    np.testing.assert_array_equal(y, x[:, ::-1])


def test_opencl_inputs_take_an_offset_and_locals_are_local_arrays():
    source = _module(G.softmax(4, 1000), "opencl").source
    assert "long in0_offset" in source and "__local float" in source
    assert "reqd_work_group_size(64, 1, 1)" in source


def test_a_running_value_read_inside_a_simd_loop_is_refused():
    p, i = Var("p", 2), Var("i", 8)
    x = Buffer("x", Level.GLOBAL, F32, (2, 8), Role.INPUT)
    y = Buffer("y", Level.GLOBAL, F32, (2, 8), Role.OUTPUT)
    acc, r = Access(Buffer("acc", Level.REGISTER, F32)), Access(Buffer("r", Level.REGISTER, F32))
    index = Expr.of(p) * 8 + i
    cumsum = Program("cumsum", (x, y), (Loop(p, Parallel.CORES, (
        Compute(None, acc, (Const(0.0, F32),)),
        Loop(i, Parallel.SIMD, (Move(r, Access(x, index)),
                                Compute(Op.ADD, acc, (acc, r)),
                                Move(Access(y, index), acc))))),))
    with pytest.raises(UnsupportedError, match="partial"):
        emit_simt([_legal(cumsum)], "cuda")


def test_unknown_dialect_is_refused():
    with pytest.raises(UnsupportedError, match="dialect"):
        emit_simt([], "metal")


def test_chunk_alignment_sees_through_divisions_by_multiples_of_the_chunk():
    from powerfusion.codegen.simt_vectors import _chunk_aligned
    from powerfusion.gir.expr import Expr, Var

    i, p = Var("i", 1024), Var("p", 8)
    tile = Expr.of(i) // 32 * 512 + Expr.of(i) % 32 + Expr.of(p) * 16384
    assert _chunk_aligned(tile, i, 4)                        # a transpose tile's row
    assert _chunk_aligned(Expr.of(i) % 96, i, 4)             # a broadcast row w[i % 96]
    assert not _chunk_aligned(Expr.of(i) % 30, i, 4)         # wraps inside a chunk
    assert not _chunk_aligned(Expr.of(i) // 32 * 6 + Expr.of(i) % 32, i, 4)   # misaligned
    assert not _chunk_aligned(Expr.of(i) + Expr.of(i) % 32, i, 4)             # stride 2
    assert not _chunk_aligned((Expr.of(i) % 32) * 33, i, 4)  # a padded column


def test_every_simt_target_has_one_printer():
    """targets.SIMT_TARGETS is the one list of dialects; the printers are keyed by it."""
    assert sorted(simt.DIALECTS) == sorted(SIMT_TARGETS)


@pytest.mark.parametrize("columns", [32, 64, 128])
def test_the_cost_model_prices_the_launch_the_printer_prints(columns):
    """HIP softmax over short rows: a row is one 64-wide wavefront's, eight rows share a
    512-thread block. The cost model once priced 32-lane rows in 256-thread blocks (a
    warp of 32 of its own) while the printer launched 512: both now read the program's
    launch, which the launch pass decided from the HIP Target's warp."""
    from powerfusion.search.cost import _threads
    from powerfusion.runtime.simt_executable import simt_target

    target = simt_target("hip")
    graph = G.softmax(4096, columns)
    (ck,) = plan_graph(graph, G.strides_of(graph), target).kernels
    launch = ck.program.launch
    assert (target.warp, launch.lanes, launch.rows, launch.block) == (64, 64, 8, 512)
    assert build_simt([ck.program], "hip").kernels[0].block == launch.block
    assert _threads(ck, target) == 4096 * 64
