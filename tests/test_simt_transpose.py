"""Layout changes on the SIMT backends: staged through a padded LOCAL tile.

An element-wise kernel whose input is stored with its last two axes swapped reads
each tile column by column (neighbouring threads, neighbouring input elements) into
a (rows x cols+1) shared tile, and writes it row by row. The CPU stages the same way
into a per-thread LOCAL tile that stays in cache: contiguous reads and writes, each a
vector loop.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil

import numpy as np
import pytest

import powerfusion as pf
from powerfusion.codegen.simt import emit_simt
from helpers import assert_close, make, np_dtype, needs_bf16, opencl_or_skip
from test_simt import _compile

FUNCTIONS = {
    "T": lambda x: x.T * 2.0,
    "swap_affine": lambda x, w, b: np.swapaxes(x, -1, -2) * w + b,
    "batched": lambda x: np.exp(x.transpose(0, 2, 1)) + 1.0,
}

# (function, input shapes): square, rectangular, not multiples of 32, batched 3-D
CASES = [
    ("T", [(64, 64)]),
    ("T", [(256, 96)]),
    ("T", [(1000, 300)]),
    ("T", [(33, 70)]),
    ("T", [(100, 8)]),
    ("swap_affine", [(3, 50, 70), (50,), (70, 1)]),
    ("batched", [(2, 40, 129)]),
]


def _source(fn, args, target: str) -> str:
    return pf.explain(fn, *args, target=target).source


def _kernel(source: str) -> str:
    at = source.find("__kernel") if "__kernel" in source else source.find('extern "C"')
    return source[at:]


def _device_target() -> str:
    """OpenCL (PoCL in CI), or CUDA when the suite runs with POWERFUSION_TARGET=cuda on
    a GPU machine (scripts/gpu_check.sh)."""
    if os.environ.get("POWERFUSION_TARGET") == "cuda":
        torch = pytest.importorskip("torch", reason="torch is not installed")
        if not torch.cuda.is_available():
            pytest.skip("POWERFUSION_TARGET=cuda but no CUDA GPU")
        pytest.importorskip("cuda.core", reason="cuda-python (cuda.core) is not installed")
        return "cuda"
    opencl_or_skip()
    return "opencl"


def _inputs(rng, shapes, dtype="float32"):
    return [make(rng, s, dtype) for s in shapes]


@pytest.mark.parametrize("dtype", ["float32", "float16",
                                   pytest.param("bfloat16", marks=needs_bf16)])
@pytest.mark.parametrize("name,shapes", CASES, ids=[f"{n}-{s[0]}" for n, s in CASES])
def test_opencl_transposes_match_numpy(name, shapes, dtype, rng):
    fn = FUNCTIONS[name]
    args = _inputs(rng, shapes, dtype)
    got = pf.jit(fn, target=_device_target())(*args)
    wide = [a.astype(np.float64) for a in args]
    expected = fn(*wide)
    if dtype != "float32":
        expected = expected.astype(np_dtype(dtype)).astype(np.float64)   # rounded once
    assert_close(got, expected, dtype, transcendental=name == "batched", factor=2)


def test_opencl_transposed_input_layouts_match_numpy(rng):
    """A Fortran-ordered input of an element-wise kernel is the same layout change."""
    x = np.asfortranarray(make(rng, (70, 45)))
    got = pf.jit(lambda x: x * 3.0 - 1.0, target=_device_target())(x)
    assert_close(got, x.astype(np.float64) * 3.0 - 1.0, "float32")


def _reads_of(kernel: str, buffer: str) -> list[tuple[str, str, int]]:
    """(loop variable, index expression, elements per position) of every read of
    `buffer`: an element read in the chunk's loop, or a 128-bit load of the chunk (4
    floats at the chunk's first position: OpenCL's vload4, CUDA's uint4)."""
    out, var = [], None
    for line in kernel.splitlines():
        m = re.search(r"const int (\w+) = \w+_0 \+ pf_v;", line)
        if m:
            var = m.group(1)
        for m in re.finditer(rf"= {buffer}\[(.*)\];", line):
            out.append((var, m.group(1), 1))
        m = re.search(rf"vload4\(0, {buffer} \+ (.*)\), 0, \w+\);", line) or \
            re.search(rf"\*\(const uint4 \*\)\(\({buffer} \+ (.*)\) \+ 0\);", line)
        if m:
            out.append((re.search(r"\(\((\w+_0)\)", m.group(1)).group(1), m.group(1), 4))
    return out


def _lane_addresses(index: str, var: str, lanes: int, step: int = 1) -> list[int]:
    """The C index expression at p = 0 for loop positions 0, step, .. (lanes of them;
    ints >= 0, so C's / is Python's //)."""
    expr = index.replace("/", "//")
    env = {"p": 0, "pf_clampi": lambda x, lo, hi: min(max(x, lo), hi)}
    return [eval(expr, {}, dict(env, **{var: step * k})) for k in range(lanes)]


@pytest.mark.parametrize("target", ["opencl", "cuda"])
@pytest.mark.parametrize("shape", [(1024, 512), (1000, 300)])
def test_transpose_reads_coalesced_into_a_padded_tile(target, shape, rng):
    x = make(rng, shape)
    kernel = _kernel(_source(lambda x: x.T * 2.0, [x], target))
    if target == "opencl":
        assert "__local float in0_tile[1056];" in kernel            # 32 x (32 + 1)
        assert "barrier(CLK_LOCAL_MEM_FENCE" in kernel
    else:
        assert "in0_tile = (float *)(pf_smem" in kernel and "__syncthreads();" in kernel
    assert "one block runs every p" not in kernel                    # tiles run in parallel
    reads = _reads_of(kernel, "in0")
    assert reads, kernel
    for var, index, width in reads:    # 32 neighbouring elements, read by neighbours
        addresses = _lane_addresses(index, var, 32 // width, width)
        assert addresses == list(range(addresses[0], addresses[0] + 32, width)), (index, addresses)
    assert any(width == 4 for _, _, width in reads) == (shape[1] % 32 == 0)  # 128-bit loads
    for var, index, _ in _reads_of(kernel, "in0_tile"):     # the tile: one row, row-major
        assert _lane_addresses(index, var, 32) == list(range(32))


def test_other_kernels_do_not_stage(rng):
    x, w = make(rng, (64, 96)), make(rng, (96,))
    for fn, args in [(lambda x, w: x * w + 1.0, [x, w]),
                     (lambda x: np.exp(x - x.max(axis=-1, keepdims=True)), [x])]:
        assert "_tile" not in _kernel(_source(fn, args, "opencl"))


@pytest.mark.parametrize("shape", [(256, 96), (33, 70), (100, 257)])
def test_cpu_code_stages_through_a_tile(rng, shape):
    x = make(rng, shape)
    report = pf.explain(lambda x: x.T * 2.0, x)
    assert re.search(r"local in0_tile: float32\[\d+\]", report.gir), report.gir
    assert_close(pf.jit(lambda x: x.T * 2.0)(x), x.astype(np.float64).T * 2.0, "float32",
                 label="x.T * 2 on the cpu")


def _transpose_kernels(dialect: str) -> str:
    """Every case's kernels in one translation unit, each named after its case."""
    programs = []
    rng = np.random.default_rng(0)
    for k, (name, shapes) in enumerate(CASES):
        for dtype in ("float32", "float16"):
            args = _inputs(rng, shapes, dtype)
            report = pf.explain(FUNCTIONS[name], *args, target=dialect)
            programs += [dataclasses.replace(p, name=f"{name}_{k}_{dtype}_{p.name}")
                         for p in report.programs]
    return emit_simt(programs, dialect)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not on PATH")
def test_cuda_transpose_sources_compile_for_sm80_and_sm90(tmp_path):
    _compile(["nvcc", "-gencode", "arch=compute_80,code=sm_80",
              "-gencode", "arch=compute_90,code=sm_90", "-Werror", "all-warnings",
              "-c", "-o", os.devnull], _transpose_kernels("cuda"), ".cu", tmp_path)


@pytest.mark.parametrize("shape,perm", [((70, 45), (1, 0)), ((3, 40, 37), (0, 2, 1))])
def test_staging_keeps_the_meaning(shape, perm, rng):
    """The GIR after the stage pass, run by the interpreter, is still the transpose."""
    import graphs as G
    from powerfusion.runtime.cpu_executable import InterpretedExecutable
    from powerfusion.search.space import plan_graph
    from powerfusion.gir.check import check
    from powerfusion.graph.graph import Graph
    from powerfusion.graph.ops import Op
    from powerfusion.runtime.simt_executable import simt_target

    x = G.inp(0, shape)
    graph = Graph((x,), (G.ew(Op.MUL, G.permute(x, perm), G.const(2.0)),))
    plan = plan_graph(graph, G.strides_of(graph), simt_target("opencl"))
    (ck,) = plan.kernels
    assert ck.schedule.transpose == (32, 32) and "stage" in [name for name, _ in ck.log.steps]
    check(ck.program)
    a = make(rng, shape)
    (got,) = InterpretedExecutable(plan).run([a])
    np.testing.assert_array_equal(got, a.transpose(perm) * np.float32(2.0))
