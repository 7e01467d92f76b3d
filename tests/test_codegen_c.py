"""C + OpenMP printer: hand-built GIR programs, compiled with gcc, checked against numpy."""

from __future__ import annotations

import ctypes
import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from powerfusion.codegen import c as cprinter
from powerfusion.codegen.c import emit_c
from powerfusion.dtypes import DType
from powerfusion.errors import UnsupportedError
from powerfusion.gir.expr import Expr, Var
from powerfusion.gir.ir import (Access, Buffer, Compute, Const, IndexValue, Level, Loop, Move,
                                Parallel, Program, Role)
from powerfusion.graph.ops import Op

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-fPIC",
         "-shared", "-std=gnu11"]
F32, F16, BF16, F64 = DType.float32, DType.float16, DType.bfloat16, DType.float64

# libm-based stand-in for pf_math.h, used only until the real header lands.
STUB_HEADER = r"""
static inline float pf_expf(float x) { return expf(x); }
static inline float pf_logf(float x) { return logf(x); }
static inline float pf_tanhf(float x) { return tanhf(x); }
static inline float pf_erff(float x) { return erff(x); }
static inline float pf_sinf(float x) { return sinf(x); }
static inline float pf_cosf(float x) { return cosf(x); }
static inline float pf_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float pf_siluf(float x) { return x / (1.0f + expf(-x)); }
static inline float pf_geluf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678f)); }
static inline float pf_gelu_tanhf(float x) {
    return 0.5f * x * (1.0f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x))); }
static inline float pf_rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float pf_f16_to_f32(uint16_t h) {
    _Float16 f; __builtin_memcpy(&f, &h, 2); return (float)f; }
static inline uint16_t pf_f32_to_f16(float x) {
    _Float16 f = (_Float16)x; uint16_t h; __builtin_memcpy(&h, &f, 2); return h; }
static inline float pf_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16; float f; __builtin_memcpy(&f, &u, 4); return f; }
static inline uint16_t pf_f32_to_bf16(float x) {
    uint32_t u; __builtin_memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); }
"""

try:
    from powerfusion.codegen.math_header import math_header  # noqa: F401
    HEADER = None                                   # the printer's own: nothing to patch
except ImportError:                                 # pf_math.h alone, else the stub
    _h = Path(cprinter.__file__).with_name("pf_math.h")
    HEADER = _h.read_text() if _h.exists() else STUB_HEADER
HAVE_PF_MATH = HEADER is not STUB_HEADER


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path / "cache"))
    if HEADER is not None:
        monkeypatch.setattr(cprinter, "_math_header", lambda: HEADER)


def compile_c(source: str, tmp_path, name: str, extra=()) -> tuple[ctypes.CDLL, str]:
    """Shared library from source (and gcc's stderr)."""
    try:
        from powerfusion.runtime.cpu import compile_shared
    except ImportError:
        compile_shared = None
    if compile_shared is not None and not extra:
        return ctypes.CDLL(str(compile_shared(source, name=name))), ""
    src, lib = tmp_path / f"{name}.c", tmp_path / f"{name}.so"
    src.write_text(source)
    res = subprocess.run(["gcc", *FLAGS, *extra, str(src), "-o", str(lib), "-lm"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr + "\n" + source
    return ctypes.CDLL(str(lib)), res.stderr


def run(program: Program, tmp_path, *arrays) -> None:
    """Compile program and call it on arrays (or raw pointers), in params order."""
    lib, _ = compile_c(emit_c(program), tmp_path, program.name)
    fn = getattr(lib, program.name)
    fn.argtypes, fn.restype = [ctypes.c_void_p], None
    ptrs = [a if isinstance(a, int) else a.ctypes.data for a in arrays]
    fn((ctypes.c_void_p * len(ptrs))(*ptrs))


def glob(name, dtype, shape, role):
    return Buffer(name, Level.GLOBAL, dtype, shape, role)


def reg(name, dtype=F32):
    return Access(Buffer(name, Level.REGISTER, dtype))


E = Expr.of


def at(buf, index):
    return Access(buf, Expr.of(index))


# -- programs -------------------------------------------------------------------------
def elementwise(op: Op | None, n_rows, n_cols, dtype=F32, out_dtype=None, name="ew", nargs=2):
    """out[p, i] = op(x[p, i], y[p, i]): CORES rows, SIMD columns."""
    out_dtype = out_dtype or dtype
    p, i = Var("p", n_rows), Var("i", n_cols)
    ins = [glob(n, dtype, (n_rows, n_cols), Role.INPUT) for n in "xy"[:nargs]]
    out = glob("out", out_dtype, (n_rows, n_cols), Role.OUTPUT)
    flat = E(p) * n_cols + i
    loads = [Move(reg(f"r{k}", dtype), at(b, flat)) for k, b in enumerate(ins)]
    res = reg("res", out_dtype)
    body = (*loads, Compute(op, res, tuple(m.dst for m in loads)), Move(at(out, flat), res))
    return Program(name, (*ins, out),
                   (Loop(p, Parallel.CORES, (Loop(i, Parallel.SIMD, body),)),))


def row_reduce(op: Op, init: float, n_rows, n_cols, dtype=F32, name="rowred"):
    """out[p] = reduce_i x[p, i] with an accumulator initialised outside the SIMD loop."""
    p, i = Var("p", n_rows), Var("i", n_cols)
    x = glob("x", dtype, (n_rows, n_cols), Role.INPUT)
    out = glob("out", dtype, (n_rows,), Role.OUTPUT)
    acc, r = reg("acc", dtype), reg("r", dtype)
    inner = Loop(i, Parallel.SIMD, (Move(r, at(x, E(p) * n_cols + i)), Compute(op, acc, (acc, r))))
    body = (Compute(None, acc, (Const(init, dtype),)), inner, Move(at(out, p), acc))
    return Program(name, (x, out), (Loop(p, Parallel.CORES, body),))


# -- tests ----------------------------------------------------------------------------
def test_elementwise_add_cores_simd(tmp_path):
    prog = elementwise(Op.ADD, 256, 300)
    src = emit_c(prog)
    assert "#pragma omp parallel if(76800 > 32768)" in src
    assert "#pragma omp for schedule(static)" in src and "#pragma omp simd" in src
    assert "const float *restrict x = (const float *)args[0];" in src
    assert "void ew(void **args)" in src
    assert src == emit_c(elementwise(Op.ADD, 256, 300))        # deterministic
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((256, 300), dtype=np.float32) for _ in range(2))
    out = np.zeros_like(x)
    run(prog, tmp_path, x, y, out)
    np.testing.assert_array_equal(out, x + y)


@pytest.mark.parametrize("op,init,ref", [(Op.ADD, 0.0, np.sum), (Op.MAXIMUM, float("-inf"), np.max),
                                         (Op.MINIMUM, float("inf"), np.min)])
def test_row_reduction_with_nan(tmp_path, op, init, ref):
    prog = row_reduce(op, init, 64, 1000)
    src = emit_c(prog)
    clause = {Op.ADD: "+", Op.MAXIMUM: "max", Op.MINIMUM: "min"}[op]
    assert f"#pragma omp simd reduction({clause}:acc)" in src
    if op is not Op.ADD:
        assert "reduction(|:acc_nan)" in src and "acc = acc_nan ? NAN : acc;" in src
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 1000), dtype=np.float32)
    x[3, 517] = np.nan
    x[10, 0] = np.nan
    x[11, 999] = np.nan
    out = np.zeros(64, np.float32)
    run(prog, tmp_path, x, out)
    np.testing.assert_allclose(out, ref(x, axis=1), rtol=1e-5, atol=1e-4)
    assert np.isnan(out[[3, 10, 11]]).all() and not np.isnan(np.delete(out, [3, 10, 11])).any()


def test_float64_and_int_reductions(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 333))
    out = np.zeros(8)
    run(row_reduce(Op.MAXIMUM, float("-inf"), 8, 333, F64, name="max64"), tmp_path, x, out)
    np.testing.assert_array_equal(out, x.max(axis=1))
    xi = rng.integers(-1000, 1000, (8, 333), dtype=np.int64)
    outi = np.zeros(8, np.int64)
    run(row_reduce(Op.ADD, 0, 8, 333, DType.int64, name="sum64"), tmp_path, xi, outi)
    np.testing.assert_array_equal(outi, xi.sum(axis=1))
    assert "INT64_C(0)" in emit_c(row_reduce(Op.ADD, 0, 8, 333, DType.int64))


def test_local_buffer_softmax(tmp_path):
    """Softmax over rows with the row stashed in a per-thread LOCAL tile."""
    rows, cols = 96, 500
    p = Var("p", rows)
    i1, i2, i3 = Var("i1", cols), Var("i2", cols), Var("i3", cols)
    x = glob("x", F32, (rows, cols), Role.INPUT)
    y = glob("y", F32, (rows, cols), Role.OUTPUT)
    t = Buffer("tile", Level.LOCAL, F32, (cols,))
    m, s = reg("m"), reg("s")
    a, b, e, q = reg("a"), reg("b"), reg("e"), reg("q")
    body = (
        Compute(None, m, (Const(float("-inf"), F32),)),
        Loop(i1, Parallel.SIMD, (Move(a, at(x, E(p) * cols + i1)), Move(at(t, i1), a),
                                 Compute(Op.MAXIMUM, m, (m, a)))),
        Compute(None, s, (Const(0.0, F32),)),
        Loop(i2, Parallel.SIMD, (Move(b, at(t, i2)), Compute(Op.SUB, b, (b, m)),
                                 Compute(Op.EXP, e, (b,)), Move(at(t, i2), e),
                                 Compute(Op.ADD, s, (s, e)))),
        Loop(i3, Parallel.SIMD, (Move(q, at(t, i3)), Compute(Op.DIV, q, (q, s)),
                                 Move(at(y, E(p) * cols + i3), q))),
    )
    prog = Program("softmax", (x, y), (Loop(p, Parallel.CORES, body),))
    src = emit_c(prog)
    region = src[src.index("#pragma omp parallel"):]
    assert region.index("aligned_alloc(64, 2048)") < region.index("#pragma omp for")
    assert src.count("aligned_alloc(") == 1 and "free(tile);" in src
    xv = np.random.default_rng(3).standard_normal((rows, cols), dtype=np.float32) * 4
    out = np.zeros_like(xv)
    run(prog, tmp_path, xv, out)
    ex = np.exp(xv - xv.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, ex / ex.sum(axis=1, keepdims=True), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_16bit_loads_and_stores(tmp_path, dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    npt = np.float16 if dtype is F16 else ml_dtypes.bfloat16
    rows, cols = 16, 130
    p, i = Var("p", rows), Var("i", cols)
    x, y = (glob(n, dtype, (rows, cols), Role.INPUT) for n in "xy")
    out = glob("out", dtype, (rows, cols), Role.OUTPUT)
    a, b, c = reg("a", dtype), reg("b", dtype), reg("c", dtype)
    flat = E(p) * cols + i
    body = (Move(a, at(x, flat)), Move(b, at(y, flat)), Compute(Op.MUL, c, (a, b)),
            Compute(Op.ADD, c, (c, Const(0.1, dtype))), Move(at(out, flat), c))
    prog = Program("half", (x, y, out), (Loop(p, Parallel.CORES, (Loop(i, Parallel.SIMD, body),)),))
    rng = np.random.default_rng(4)
    xv, yv = (rng.standard_normal((rows, cols)).astype(npt) for _ in range(2))
    res = np.zeros((rows, cols), np.uint16)
    run(prog, tmp_path, xv.view(np.uint16), yv.view(np.uint16), res)
    tenth = np.float32(npt(0.1))              # the constant is exact in dtype
    ref = (xv.astype(np.float32) * yv.astype(np.float32) + tenth).astype(npt)
    np.testing.assert_array_equal(res.view(npt), ref)


def test_stashed_bf16_row_is_not_rounded_twice(tmp_path):
    """A bf16 row stashed as float32 is exact in bf16: reading it back into a bf16
    register needs no rounding; a stashed computed value (x * 1.1) still gets one."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rows, cols = 8, 64
    p, i1, i2 = Var("p", rows), Var("i1", cols), Var("i2", cols)
    x = glob("x", BF16, (rows, cols), Role.INPUT)
    out, out2 = (glob(n, BF16, (rows, cols), Role.OUTPUT) for n in ("out", "out2"))
    raw = Buffer("raw", Level.LOCAL, F32, (cols,))
    prod = Buffer("prod", Level.LOCAL, F32, (cols,))
    a, m, b, c = reg("a", BF16), reg("m", BF16), reg("b", BF16), reg("c", BF16)
    flat1, flat2 = E(p) * cols + i1, E(p) * cols + i2
    body = (
        Loop(i1, Parallel.SIMD, (Move(a, at(x, flat1)), Move(at(raw, i1), a),
                                 Compute(Op.MUL, m, (a, Const(1.1, BF16))),
                                 Move(at(prod, i1), m))),
        Loop(i2, Parallel.SIMD, (Move(b, at(raw, i2)), Move(c, at(prod, i2)),
                                 Move(at(out, flat2), b), Move(at(out2, flat2), c))),
    )
    prog = Program("stash16", (x, out, out2), (Loop(p, Parallel.CORES, body),))
    src = emit_c(prog)
    assert "b = raw[i2];" in src and "pf_f32_to_bf16(prod[i2])" in src, src
    xv = np.random.default_rng(5).standard_normal((rows, cols)).astype(ml_dtypes.bfloat16)
    res, res2 = np.zeros((rows, cols), np.uint16), np.zeros((rows, cols), np.uint16)
    run(prog, tmp_path, xv.view(np.uint16), res, res2)
    np.testing.assert_array_equal(res, xv.view(np.uint16))
    k = np.float32(ml_dtypes.bfloat16(1.1))
    ref = (xv.astype(np.float32) * k).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(res2.view(ml_dtypes.bfloat16), ref)


def test_cast_rounds_truncates_and_tests(tmp_path):
    n = 4096
    i = Var("i", n)
    x = glob("x", F32, (n,), Role.INPUT)
    o16, oi, ob, o64 = (glob(nm, dt, (n,), Role.OUTPUT) for nm, dt in
                        [("o16", F32), ("oi", DType.int32), ("ob", DType.bool), ("o64", F64)])
    a, h, k, t, d = reg("a"), reg("h", F16), reg("k", DType.int32), reg("t", DType.bool), \
        reg("d", F64)
    body = (Move(a, at(x, i)), Compute(Op.CAST, h, (a,)), Move(at(o16, i), h),
            Compute(Op.CAST, k, (a,)), Move(at(oi, i), k),
            Compute(Op.CAST, t, (a,)), Move(at(ob, i), t),
            Compute(Op.CAST, d, (h,)), Compute(Op.MUL, d, (d, Const(1 / 3, F64))),
            Move(at(o64, i), d))
    prog = Program("casts", (x, o16, oi, ob, o64), (Loop(i, Parallel.SIMD, body),))
    src = emit_c(prog)
    assert "pf_f16_to_f32(pf_f32_to_f16(a))" in src and "0x1.5555555555555p-2" in src
    xv = (np.random.default_rng(5).standard_normal(n) * 100).astype(np.float32)
    xv[:3] = [0.0, -0.0, 2.5]
    outs = [np.zeros(n, np.float32), np.zeros(n, np.int32), np.zeros(n, np.bool_),
            np.zeros(n, np.float64)]
    run(prog, tmp_path, xv, *outs)
    np.testing.assert_array_equal(outs[0], xv.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(outs[1], xv.astype(np.int32))
    np.testing.assert_array_equal(outs[2], xv.astype(np.bool_))
    np.testing.assert_array_equal(outs[3], xv.astype(np.float16).astype(np.float64) * (1 / 3))


def test_negative_stride_input(tmp_path):
    n = 1000
    i = Var("i", n)
    x = glob("x", F32, (n,), Role.INPUT)
    out = glob("out", F32, (n,), Role.OUTPUT)
    a, b = reg("a"), reg("b")
    body = (Move(a, at(x, -1 * Expr.of(i))), Compute(Op.MUL, b, (a, Const(2.0, F32))),
            Move(at(out, i), b))
    prog = Program("rev", (x, out), (Loop(i, Parallel.SIMD, body),))
    assert "x[-1*i]" in emit_c(prog) and "0x1p+1f" in emit_c(prog)
    base = np.arange(n, dtype=np.float32)
    view = base[::-1]
    res = np.zeros(n, np.float32)
    run(prog, tmp_path, view.ctypes.data, res)
    np.testing.assert_array_equal(res, view * 2)


def test_index_value_where_and_clamp(tmp_path):
    """out[p, i] = where(i < 3, x[p, clamp(i - 1, 0, 7)], -inf): a guarded, clamped read."""
    rows, cols = 5, 8
    p, i = Var("p", rows), Var("i", cols)
    x = glob("x", F32, (rows, cols), Role.INPUT)
    out = glob("out", F32, (rows, cols), Role.OUTPUT)
    a, cond, r = reg("a"), reg("cond", DType.bool), reg("r")
    body = (Move(a, at(x, E(p) * cols + (Expr.of(i) - 1).clamp(0, cols - 1))),
            Compute(Op.LT, cond, (IndexValue(Expr.of(i)), Const(3, DType.int64))),
            Compute(Op.WHERE, r, (cond, a, Const(float("-inf"), F32))),
            Move(at(out, E(p) * cols + i), r))
    prog = Program("guard", (x, out),
                   (Loop(p, Parallel.CORES, (Loop(i, Parallel.SIMD, body),)),))
    src = emit_c(prog)
    assert "pf_clampi(" in src and "((int64_t)(i))" in src and "(-INFINITY)" in src
    xv = np.random.default_rng(6).standard_normal((rows, cols), dtype=np.float32)
    res = np.zeros_like(xv)
    run(prog, tmp_path, xv, res)
    shifted = xv[:, np.clip(np.arange(cols) - 1, 0, cols - 1)]
    np.testing.assert_array_equal(res, np.where(np.arange(cols) < 3, shifted, -np.inf))


@pytest.mark.parametrize("op,ref", [(Op.MAXIMUM, np.maximum), (Op.MINIMUM, np.minimum),
                                    (Op.POW, np.power), (Op.GE, np.greater_equal)])
def test_binary_ops_float64_nan(tmp_path, op, ref):
    out_dtype = DType.bool if op is Op.GE else F64
    prog = elementwise(op, 4, 64, F64, out_dtype, name=f"b_{op.name.lower()}")
    rng = np.random.default_rng(7)
    x, y = np.abs(rng.standard_normal((2, 4, 64)))
    x[0, :5], y[1, :5] = np.nan, np.nan
    out = np.zeros((4, 64), out_dtype.to_numpy())
    run(prog, tmp_path, x, y, out)
    np.testing.assert_allclose(out, ref(x, y), rtol=1e-15)


@pytest.mark.parametrize("dtype", [F32, F64, DType.int32, DType.int64], ids=str)
def test_fmod_and_mod_are_exact(tmp_path, dtype):
    """FMOD (C's fmod) and MOD (numpy's remainder) bit for bit, special values and huge
    quotients included (x - floor(x / y) * y is wrong there); integer x % 0 and
    INT_MIN % -1 give numpy's 0, never C's undefined %."""
    if dtype.is_float:
        special = [0.0, -0.0, 1.0, -1.0, 5.5, -5.5, 1e30, -7.25e20, 1e-40, np.inf, -np.inf,
                   np.nan]
        rng = np.random.default_rng(9)
        pairs = list(itertools.product(special, special)) + list(zip(
            rng.standard_normal(256) * 10.0 ** rng.integers(-3, 30, 256),
            rng.standard_normal(256) * 10.0 ** rng.integers(-3, 3, 256)))
    else:
        low = -2 ** (dtype.itemsize * 8 - 1)
        values = [0, 1, -1, 7, -7, 3, -3, low, -low - 1, low + 1]
        pairs = list(itertools.product(values, values))
    x, y = (np.array(v, dtype.to_numpy()).reshape(1, -1) for v in zip(*pairs))
    for op, ref in ((Op.FMOD, np.fmod), (Op.MOD, np.remainder)):
        prog = elementwise(op, 1, x.shape[1], dtype, name=f"m_{op.name.lower()}")
        out = np.zeros_like(x)
        run(prog, tmp_path, x, y, out)
        with np.errstate(all="ignore"):
            want = ref(x, y)
        np.testing.assert_array_equal(out, want, err_msg=op.name)
        if dtype.is_float:
            np.testing.assert_array_equal(np.signbit(out), np.signbit(want), err_msg=op.name)


@pytest.mark.parametrize("op", [Op.EXP, Op.LOG, Op.TANH, Op.ERF, Op.SIGMOID, Op.SILU, Op.GELU,
                                Op.GELU_TANH, Op.SIN, Op.COS, Op.SQRT, Op.RSQRT, Op.ABS,
                                Op.NEG, Op.RELU, Op.TAN, Op.LOG1P, Op.EXPM1, Op.LOG2,
                                Op.LOG10, Op.EXP2, Op.FLOOR, Op.CEIL, Op.TRUNC, Op.RINT,
                                Op.SIGN])
def test_unary_ops(tmp_path, op):
    from math import erf
    erf_ = np.vectorize(erf)
    refs = {Op.EXP: np.exp, Op.LOG: np.log, Op.TANH: np.tanh, Op.ERF: erf_,
            Op.SIGMOID: lambda v: 1 / (1 + np.exp(-v)), Op.SILU: lambda v: v / (1 + np.exp(-v)),
            Op.GELU: lambda v: 0.5 * v * (1 + erf_(v / np.sqrt(2))),
            Op.GELU_TANH: lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi)
                                                             * (v + 0.044715 * v ** 3))),
            Op.SIN: np.sin, Op.COS: np.cos, Op.SQRT: np.sqrt, Op.RSQRT: lambda v: 1 / np.sqrt(v),
            Op.ABS: np.abs, Op.NEG: np.negative, Op.RELU: lambda v: np.maximum(v, 0),
            Op.TAN: np.tan, Op.LOG1P: np.log1p, Op.EXPM1: np.expm1, Op.LOG2: np.log2,
            Op.LOG10: np.log10, Op.EXP2: np.exp2, Op.FLOOR: np.floor, Op.CEIL: np.ceil,
            Op.TRUNC: np.trunc, Op.RINT: np.rint, Op.SIGN: np.sign}
    x64 = np.random.default_rng(8).standard_normal((2, 256)) * 3
    if op in (Op.LOG, Op.SQRT, Op.RSQRT, Op.LOG1P, Op.LOG2, Op.LOG10):
        x64 = np.abs(x64) + 1e-3
    x64[0, 0] = np.nan
    for dtype, rtol in [(F32, 2e-6), (F64, 1e-13)]:
        npt = dtype.to_numpy()
        prog = elementwise(op, 2, 256, dtype, name=f"u_{op.name.lower()}_{dtype}", nargs=1)
        x = x64.astype(npt)
        out = np.zeros_like(x)
        run(prog, tmp_path, x, out)
        np.testing.assert_allclose(out, refs[op](x.astype(np.float64)), rtol=rtol,
                                   atol=rtol * 10, err_msg=str(dtype))


def test_cores_reduction_across_threads(tmp_path):
    """A register accumulated across the CORES loop gets a reduction clause on `omp for`."""
    n, m = 512, 256
    p, i = Var("p", n), Var("i", m)
    x = glob("x", F32, (n, m), Role.INPUT)
    out = glob("out", F32, (1,), Role.OUTPUT)
    acc, r = reg("acc"), reg("r")
    body = (Loop(i, Parallel.SIMD, (Move(r, at(x, E(p) * m + i)),
                                    Compute(Op.MAXIMUM, acc, (acc, r)))),)
    prog = Program("allmax", (x, out), (Compute(None, acc, (Const(float("-inf"), F32),)),
                                         Loop(p, Parallel.CORES, body), Move(at(out, 0), acc)))
    src = emit_c(prog)
    assert "#pragma omp for schedule(static) reduction(max:acc) reduction(|:acc_nan)" in src
    assert src.count("acc = acc_nan ? NAN : acc;") == 1
    xv = np.random.default_rng(9).standard_normal((n, m), dtype=np.float32)
    res = np.zeros(1, np.float32)
    run(prog, tmp_path, xv, res)
    assert res[0] == xv.max()
    xv[400, 7] = np.nan
    run(prog, tmp_path, xv, res)
    assert np.isnan(res[0])


def test_non_reduction_update_keeps_loop_serial():
    """A register updated in a SIMD loop other than by a reduction: no `omp simd`."""
    i = Var("i", 16)
    x = glob("x", F32, (16,), Role.INPUT)
    out = glob("out", F32, (1,), Role.OUTPUT)
    acc, r = reg("acc"), reg("r")
    body = (Move(r, at(x, i)), Compute(Op.SUB, r, (r, acc)), Compute(Op.ADD, acc, (acc, r)))
    prog = Program("recur", (x, out), (Compute(None, acc, (Const(0.0, F32),)),
                                       Loop(i, Parallel.SIMD, body), Move(at(out, 0), acc)))
    kernel = emit_c(prog).split("void recur(void **args)")[1]
    assert "#pragma omp simd" not in kernel and "kept serial" in kernel


def test_unsupported_ops_fail_loudly():
    with pytest.raises(UnsupportedError, match="DIV.*int64"):
        emit_c(elementwise(Op.DIV, 2, 8, DType.int64))
    with pytest.raises(UnsupportedError, match="EXP.*int32"):
        emit_c(elementwise(Op.EXP, 2, 8, DType.int32, nargs=1))
    with pytest.raises(UnsupportedError, match="identifier"):
        emit_c(Program("not a name", (), ()))


def simd_loop_vectorized(source, tmp_path, name) -> bool:
    """Does gcc report 'loop vectorized' for a line of the (first) `omp simd` loop?"""
    _, stderr = compile_c(source, tmp_path, name, extra=["-fopt-info-vec-optimized"])
    lines = source.splitlines()
    first = next(n for n, text in enumerate(lines)
                 if text.strip().startswith("#pragma omp simd"))
    indent = lines[first + 1][:len(lines[first + 1]) - len(lines[first + 1].lstrip())]
    last = next(n for n in range(first + 1, len(lines)) if lines[n] == indent + "}")
    return any(f".c:{n}:" in note and "loop vectorized" in note
               for note in stderr.splitlines() for n in range(first + 1, last + 2))


def test_row_sum_vectorizes(tmp_path):
    src = emit_c(row_reduce(Op.ADD, 0.0, 64, 1000))
    assert simd_loop_vectorized(src, tmp_path, "vsum"), src


def test_row_max_vectorizes(tmp_path):
    src = emit_c(row_reduce(Op.MAXIMUM, float("-inf"), 64, 1000))
    assert simd_loop_vectorized(src, tmp_path, "vmax"), src


@pytest.mark.xfail(not HAVE_PF_MATH, reason="pf_math.h not there yet; libm expf does not "
                                             "vectorise", strict=False)
def test_exp_vectorizes(tmp_path):
    src = emit_c(elementwise(Op.EXP, 64, 1000, nargs=1))
    assert simd_loop_vectorized(src, tmp_path, "vexp"), src


@pytest.mark.parametrize("dtype", [
    pytest.param(F16, marks=pytest.mark.xfail(not HAVE_PF_MATH, strict=False, reason=(
        "the stub's _Float16 conversions do not vectorise without AVX512-FP16"))), BF16])
def test_16bit_elementwise_vectorizes(tmp_path, dtype):
    prog = elementwise(Op.ADD, 64, 1000, dtype)
    src = emit_c(prog)
    assert simd_loop_vectorized(src, tmp_path, "v16"), src


def test_names_bools_ints_and_hoisted_register(tmp_path):
    """C keywords as names, bool and int32 ops, int constants, a register read after the
    serial loop that writes it (declared before the loop), a LOCAL outside any CORES loop."""
    n = 40
    i, j = Var("for", n), Var("j", n)
    x = glob("double", DType.int32, (n,), Role.INPUT)
    out = glob("exp", DType.int32, (n,), Role.OUTPUT)
    flags = glob("args", DType.bool, (n,), Role.OUTPUT)
    last = glob("last", DType.int32, (1,), Role.OUTPUT)
    t = Buffer("int", Level.LOCAL, DType.bool, (n,))
    a, b, c, d = reg("a", DType.int32), reg("b", DType.bool), reg("c", DType.bool), \
        reg("d", DType.int32)
    loop1 = Loop(i, Parallel.SERIAL, (
        Move(a, at(x, i)),
        Compute(Op.GT, b, (a, Const(-7, DType.int32))),
        Compute(Op.LT, c, (a, Const(20, DType.int32))),
        Compute(Op.AND, b, (b, c)),
        Compute(Op.NOT, c, (b,)),
        Move(at(t, i), c),
        Compute(Op.MAXIMUM, d, (a, Const(-2**31, DType.int32))),
        Compute(Op.MUL, d, (d, Const(-3, DType.int32))),
        Compute(Op.ABS, d, (d,)),
        Move(at(out, i), d)))
    loop2 = Loop(j, Parallel.SIMD, (Move(b, at(t, j)), Move(at(flags, j), b)))
    prog = Program("misc", (x, out, flags, last), (loop1, Move(at(last, 0), d), loop2))
    src = emit_c(prog)
    assert "int32_t d;" in src and "INT32_MIN" in src and "(-3)" in src
    assert "const int32_t *restrict double_2 = " in src and "int *restrict int_2 = " in src
    xv = np.arange(-20, 20, dtype=np.int32)
    res, fl, lst = np.zeros(n, np.int32), np.zeros(n, np.bool_), np.zeros(1, np.int32)
    run(prog, tmp_path, xv, res, fl, lst)
    np.testing.assert_array_equal(res, np.abs(xv * -3))
    np.testing.assert_array_equal(fl, ~((xv > -7) & (xv < 20)))
    assert lst[0] == abs(xv[-1] * -3)


def test_literals():
    p = cprinter.CPrinter()
    assert p.literal(0.1, F16, F16) == "0x1.998p-4f"             # rounded to float16 first
    assert p.literal(-0.0, F32, F32) == "(-0x0p+0f)"
    assert p.literal(0.1, F64, F64) == "0x1.999999999999ap-4"
    assert p.literal(float("nan"), F32, F32) == "NAN"
    assert p.literal(float("nan"), F32, F64) == "((double)NAN)"   # no float in a double op
    assert p.literal(float("-inf"), F64, F64) == "((double)(-INFINITY))"
    assert p.literal(-2**63, DType.int64, DType.int64) == "INT64_MIN"
    assert p.literal(5, DType.int64, F32) == "0x1.4p+2f"
    assert p.literal(2.0, F32, DType.bool) == "1"
    assert p.literal(1.0, BF16, BF16) == "0x1p+0f"
    for v in [0.1, -3.3e38, 1e-40, 7.0e38, 1 / 3]:     # bfloat16 rounding without ml_dtypes
        ml_dtypes = pytest.importorskip("ml_dtypes")
        assert cprinter._round_to(v, BF16) == float(np.float32(ml_dtypes.bfloat16(v)))


def test_module_of_two_kernels(tmp_path):
    from powerfusion.codegen.c import emit_c_module
    progs = [elementwise(Op.ADD, 4, 8, name="k_add"), elementwise(Op.MUL, 4, 8, name="k_mul")]
    src = emit_c_module(progs)
    assert src.count("#include <math.h>") == 1 and src == emit_c_module(progs)
    lib, _ = compile_c(src, tmp_path, "two")
    x, y = np.arange(32, dtype=np.float32).reshape(4, 8), np.full((4, 8), 3, np.float32)
    for name, ref in [("k_add", x + y), ("k_mul", x * y)]:
        out = np.zeros_like(x)
        ptrs = [x.ctypes.data, y.ctypes.data, out.ctypes.data]
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = [ctypes.c_void_p], None
        fn((ctypes.c_void_p * 3)(*ptrs))
        np.testing.assert_array_equal(out, ref)
    with pytest.raises(UnsupportedError, match="repeat"):
        emit_c_module([progs[0], progs[0]])


@pytest.mark.parametrize("case", ["softmax", "layernorm", "masked_scaled_softmax", "group_norm"])
def test_pipeline_matches_interpreter(case):
    """Whole pipeline (lower + passes + this printer) against the GIR interpreter."""
    import graphs
    from powerfusion.compiler import compile_graph
    from powerfusion.runtime.cpu_executable import InterpretedExecutable
    g = {"softmax": lambda: graphs.softmax(64, 300), "layernorm": lambda: graphs.layernorm(48, 257),
         "masked_scaled_softmax": lambda: graphs.masked_scaled_softmax(40, 100),
         "group_norm": lambda: graphs.group_norm(2, 8, 5, 7, 4)}[case]()
    rng = np.random.default_rng(10)
    ins = [rng.standard_normal(i.shape).astype(np.float32) if i.dtype.is_float
           else rng.random(i.shape) > 0.3 for i in g.inputs]
    ins[0].flat[5] = np.nan                              # NaN reaches max reductions too
    exe = compile_graph(g, input_strides=graphs.strides_of(g))
    for got, ref in zip(exe.run(ins), InterpretedExecutable(exe.plan).run(ins)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
