"""Accuracy and vectorisation of powerfusion/codegen/pf_math.h.

A small C harness applies every header function to a float32 (or uint16)
numpy array inside a ``#pragma omp simd`` loop; it is compiled with the flags
the CPU backend uses, loaded with ctypes, and compared with float64 numpy /
``math`` references.  Errors are measured in ULP of the float32 result.
"""

from __future__ import annotations

import ctypes
import math
import re
import shutil
import subprocess

import numpy as np
import pytest

from powerfusion.codegen.math_header import math_header
from powerfusion.runtime.cpu import DEFAULT_FLAGS

GCC = shutil.which("gcc")
pytestmark = pytest.mark.skipif(GCC is None, reason="gcc is not installed")

# the CPU backend's own flags, less those for a shared object (added where one is built)
CFLAGS = [f for f in DEFAULT_FLAGS if f not in ("-fPIC", "-shared", "-std=gnu11")
          and not f.startswith("-Werror")]

UNARY = ["expf", "logf", "tanhf", "erff", "sigmoidf", "sinf", "cosf",
         "geluf", "gelu_tanhf", "siluf", "rsqrtf", "log1pf", "expm1f", "log2f", "log10f",
         "exp2f", "tanf"]
# name -> (input C type, output C type)
CONVERSIONS = {"f16_to_f32": ("uint16_t", "float"), "f32_to_f16": ("float", "uint16_t"),
               "bf16_to_f32": ("uint16_t", "float"), "f32_to_bf16": ("float", "uint16_t")}


def _harness_source() -> tuple[str, dict[str, int]]:
    """C source with one simd loop per function; returns it and each loop's line."""
    lines = ['#include <stdint.h>', '#include "pf_math.h"',
             # what the build's PF_FMA is: the no-FMA test checks it got the fallback
             'int pf_fast_fma(void) {', '#if defined(__FP_FAST_FMAF)', 'return 1;', '#else',
             'return 0;', '#endif', '}']
    loop_line: dict[str, int] = {}
    sigs = {f: ("float", "float") for f in UNARY} | CONVERSIONS
    for name, (tin, tout) in sigs.items():
        lines.append(f"void run_{name}(const {tin} *restrict x, {tout} *restrict y, long n) {{")
        lines.append("#pragma omp simd")
        loop_line[name] = len(lines) + 1
        lines.append(f"    for (long i = 0; i < n; i++) y[i] = pf_{name}(x[i]);")
        lines.append("}")
    return "\n".join(lines) + "\n", loop_line


def _build(tmp_path_factory, extra_flags, tag):
    d = tmp_path_factory.mktemp(f"pfmath_{tag}")
    (d / "pf_math.h").write_text(math_header())
    src, loop_line = _harness_source()
    (d / "harness.c").write_text(src)
    so = d / "harness.so"
    cmd = [GCC, *CFLAGS, *extra_flags, "-std=gnu11", "-Wall", "-Wextra", "-Werror",
           "-shared", "-fPIC", "-fopt-info-vec-optimized",
           "-o", str(so), "harness.c"]
    proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(so))
    for name in list(UNARY) + list(CONVERSIONS):
        getattr(lib, f"run_{name}").argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    return lib, proc.stderr, loop_line


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return _build(tmp_path_factory, [], "native")


@pytest.fixture(scope="module")
def lib(build):
    return build[0]


def call(lib, name, x):
    tin, tout = CONVERSIONS.get(name, ("float", "float"))
    x = np.ascontiguousarray(x, dtype=np.float32 if tin == "float" else np.uint16)
    y = np.empty(x.shape, dtype=np.float32 if tout == "float" else np.uint16)
    getattr(lib, f"run_{name}")(x.ctypes.data, y.ctypes.data, x.size)
    return y


# ---------------------------------------------------------------------------
# float64 references
_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _sigmoid64(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def reference(name, x32):
    with np.errstate(all="ignore"):
        x = x32.astype(np.float64)
        if name == "expf":
            return np.exp(x)
        if name == "logf":
            return np.log(x)
        if name == "tanhf":
            return np.tanh(x)
        if name == "erff":
            return _erf(x).astype(np.float64)
        if name == "sigmoidf":
            return _sigmoid64(x)
        if name == "sinf":
            return np.sin(x)
        if name == "cosf":
            return np.cos(x)
        if name == "geluf":   # x * Phi(x), Phi via erfc: no cancellation for x < 0
            r = x * 0.5 * _erfc(-x / math.sqrt(2.0)).astype(np.float64)
            return np.where(np.isinf(x), np.where(x > 0, x, -0.0), r)
        if name == "gelu_tanhf":  # 0.5x(1+tanh(u)) == x*sigmoid(2u)
            u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
            r = x * _sigmoid64(2.0 * u)
            return np.where(np.isinf(x), np.where(x > 0, x, -0.0), r)
        if name == "siluf":
            r = x * _sigmoid64(x)
            return np.where(np.isinf(x), np.where(x > 0, x, -0.0), r)
        if name == "rsqrtf":
            return 1.0 / np.sqrt(x)
        if name in _NUMPY64:
            return _NUMPY64[name](x)
    raise KeyError(name)


# numpy's float64 functions are within an ULP of float64: references for float32
_NUMPY64 = {"log1pf": np.log1p, "expm1f": np.expm1, "log2f": np.log2, "log10f": np.log10,
            "exp2f": np.exp2, "tanf": np.tan}


def ulp_error(y32, ref64):
    """|y - ref| in ULP of the float32 grid at ref (subnormal ULP = 2^-149).

    NaN-ness must agree, and where ref rounds to +-inf in float32, y must be that
    inf; those points get error 0 (or inf on mismatch)."""
    with np.errstate(all="ignore"):
        y = y32.astype(np.float64)
        ref32 = ref64.astype(np.float32).astype(np.float64)
    err = np.zeros(y.shape)
    nan_ref, nan_y = np.isnan(ref64), np.isnan(y)
    err[nan_ref != nan_y] = np.inf
    inf_ref = np.isinf(ref32) & ~nan_ref
    err[inf_ref & (y != ref32)] = np.inf
    fin = ~nan_ref & ~inf_ref
    _, e = np.frexp(ref64[fin])
    ulp = np.maximum(np.ldexp(1.0, e - 24), 2.0 ** -149)
    with np.errstate(invalid="ignore"):
        err[fin] = np.abs(y[fin] - ref64[fin]) / ulp
    return err


# ---------------------------------------------------------------------------
# inputs
RNG = np.random.default_rng(20240601)
N = 1_000_000

SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0, 0.5, -0.5, 2.0,
                     np.finfo(np.float32).tiny, -np.finfo(np.float32).tiny,
                     np.finfo(np.float32).max, -np.finfo(np.float32).max,
                     1e-45, -1e-45, 1e-40, -1e-40, 1e-30, -1e-30, 1e-10, 1e10, -1e10,
                     1e30, -1e30], dtype=np.float32)
SPECIAL_BITS = np.array([0x7f800001, 0x7fc00001, 0xffc12345, 0x7fbfffff], dtype=np.uint32)


def random_bits(n=N):
    """Random float32 bit patterns: every binade, both signs, NaNs included."""
    return RNG.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def log_sweep(lo_exp, hi_exp, n=N):
    mag = 10.0 ** RNG.uniform(lo_exp, hi_exp, n)
    return (mag * RNG.choice([-1.0, 1.0], n)).astype(np.float32)


def inputs(lo, hi, extra=()):
    parts = [np.linspace(lo, hi, N, dtype=np.float32), random_bits(), log_sweep(-45, 38.5),
             SPECIALS, SPECIAL_BITS.view(np.float32), np.asarray(extra, dtype=np.float32)]
    return np.concatenate(parts)


# (name, dense range, extra points, ULP bound over every float32)
ACCURACY = {
    "expf": ((-104.0, 89.0), [88.72283, 88.72284, 88.7229, -87.33654, -87.3366, -103.2789,
                              -103.9721, -103.9728, -104.0, -110.0], 2.0),
    "logf": ((0.0, 4.0), [1.0 - 2 ** -24, 1.0 + 2 ** -23, 0.70710677, 1.4142135, 2 ** -126,
                          2 ** -127, 2 ** -149], 2.0),
    "tanhf": ((-12.0, 12.0), [0.625, -0.625, 0.62499994, 9.01, 44.0, 45.0], 4.0),
    "erff": ((-5.0, 5.0), [0.9, -0.9, 0.89999998, 3.92, 4.0, 4.1, 10.0], 4.0),
    "sigmoidf": ((-110.0, 30.0), [-87.0, -88.8, -103.0, -104.0, -105.0], 4.0),
    # sin/cos: 1.59 / 1.58 ULP measured over every float (exhaustively)
    "sinf": ((-1e4, 1e4), [np.pi, 2 * np.pi, 3 * np.pi / 2, 1e4, 6.2831855, 3.1415927], 2.0),
    "cosf": ((-1e4, 1e4), [np.pi / 2, np.pi, 3 * np.pi / 2, 1e4, 1.5707964], 2.0),
    "rsqrtf": ((0.0, 100.0), [1e-45, 1e-38, 4.0, 0.25], 1.5),
    # computed in double and rounded once (0.50 ULP measured): near 0, log1p and expm1
    # keep their relative accuracy (the log sweep reaches 1e-45)
    "log1pf": ((-1.0, 4.0), [-1.0 + 2 ** -24, -0.5, 2 ** -24, -2 ** -25, 1e-30, 3e38,
                             -0.99999994, 1.0, 1e-7], 0.51),
    "expm1f": ((-20.0, 89.0), [88.72283, 88.72284, -1e-30, 1e-30, 2 ** -24, -30.0, -31.0,
                               -17.3, 0.34657359, -0.34657359, 1e-7], 0.51),
    "log2f": ((0.0, 4.0), [2 ** -149, 2 ** -126, 0.5, 1.0 - 2 ** -24, 1.0 + 2 ** -23, 1024.0],
              0.51),
    "log10f": ((0.0, 4.0), [2 ** -149, 10.0, 100.0, 1e10, 1e-10, 0.1, 1.0 + 2 ** -23], 0.51),
    "exp2f": ((-152.0, 129.0), [127.99999, 128.0, -149.0, -149.5, -150.0, -126.0, -126.5,
                                0.5, -0.5, 1e-30], 0.51),
    "tanf": ((-1e4, 1e4), [np.pi / 2, -np.pi / 2, np.pi / 4, 1.5707963, 1.5707964,
                           3 * np.pi / 2, 1e4], 0.51),
}


@pytest.mark.parametrize("name", sorted(ACCURACY))
def test_ulp(lib, name):
    (lo, hi), extra, bound = ACCURACY[name]
    x = inputs(lo, hi, extra)
    if name in ("sinf", "cosf", "tanf"):
        x = np.concatenate([x, np.linspace(-10, 10, N, dtype=np.float32)])
    if name in ("log1pf", "expm1f"):     # where they are the point: near 0
        x = np.concatenate([x, np.linspace(-1e-3, 1e-3, N, dtype=np.float32)])
    y = call(lib, name, x)
    err = ulp_error(y, reference(name, x))
    worst = int(np.argmax(err))
    assert err.max() <= bound, (name, err.max(), x[worst])


# sin/cos over the whole float range.  x*2/pi = n + f (n an integer, |f| <= 1/2):
# the floats with the smallest |f|, found by brute force over every float, make
# sin (n even) or cos (n odd) tiny, and only an exact reduction keeps its relative
# accuracy there (the smallest: |f| = 2^-29.9 at 0x1.f37c8ap+95).
SINCOS_HARD = np.array([
    0x6f79be45, 0x50a3e87f, 0x6ff9be45, 0x5123e87f, 0x437ce5f1, 0x7079be45, 0x6a1976f1,
    0x53b146a6, 0x65898498, 0x51a3e87f, 0x43fce5f1, 0x77584625, 0x4c2332e9, 0x4096cbe4,
    0x6c55da58, 0x70f9be45, 0x6a9976f1, 0x5c07bcd0, 0x543146a6, 0x66098498, 0x5223e87f,
    0x474d246f, 0x723fa09a, 0x447ce5f1], dtype=np.uint32)
# issue 12: the old Cody-Waite reduction broke from 2^22 on (sin(1e10) was -2.4e18);
# 2^64 is where pf__sincosf switches chunk sets
SINCOS_ISSUE = [1e10, 1e30, 6.6e6, 1e7, 3e38, -1e20, 4194304.0, 6588397.5, 8388608.0,
                16777216.0, 2.0 ** 64, 2.0 ** 64 * (1 - 2.0 ** -24), 2.0 ** 127, 3.4028235e38]


def sincos_inputs():
    """Every binade of both signs (4096 random mantissas each), the hard cases and
    their neighbours, the floats next to k*pi/2 for k up to 2^24, the issue's values."""
    binade = (np.arange(255, dtype=np.uint32).repeat(4096) << 23) \
        | RNG.integers(0, 2 ** 23, 255 * 4096, dtype=np.uint32)
    hard = np.concatenate([SINCOS_HARD - 1, SINCOS_HARD, SINCOS_HARD + 1])
    k = np.concatenate([np.arange(1, 5000), RNG.integers(1, 2 ** 24, 100_000)])
    near = (k * (np.pi / 2)).astype(np.float32).view(np.uint32)
    near = np.concatenate([near - 1, near, near + 1])
    pos = np.concatenate([binade, hard, near,
                          np.abs(np.asarray(SINCOS_ISSUE, dtype=np.float32)).view(np.uint32)])
    return np.concatenate([pos, pos | np.uint32(0x80000000)]).view(np.float32)


@pytest.mark.parametrize("name", ["sinf", "cosf", "tanf"])
def test_sincos_whole_range(lib, name):
    x = np.concatenate([sincos_inputs(), random_bits()])
    y = call(lib, name, x)
    err = ulp_error(y, reference(name, x))
    worst = int(np.argmax(err))
    assert err.max() <= ACCURACY[name][2], (name, err.max(), x[worst])
    # the hard cases: tiny results, still right to 1 ULP
    hard = np.concatenate([SINCOS_HARD, SINCOS_HARD | np.uint32(0x80000000)]).view(np.float32)
    assert ulp_error(call(lib, name, hard), reference(name, hard)).max() <= 1.0


def test_jit_sincos_whole_range():
    """The same through pf.jit (the CPU backend's own flags and loops), float32 and
    float64 (libm's sin/cos there): numpy's results across the whole range."""
    pf = pytest.importorskip("powerfusion")
    rng = np.random.default_rng(12)
    x32 = np.concatenate([np.asarray(SINCOS_ISSUE, np.float32), SINCOS_HARD.view(np.float32),
                          random_bits(100_000), SPECIALS])
    with np.errstate(invalid="ignore"):              # signalling NaNs
        x64 = np.concatenate([rng.integers(0, 2 ** 64, 100_000, dtype=np.uint64).view(np.float64),
                              x32.astype(np.float64), [1e300, -1.7976931348623157e308, 5e-324]])
    for fn, name in ((np.sin, "sinf"), (np.cos, "cosf")):
        y32 = np.asarray(pf.jit(lambda v, fn=fn: fn(v))(x32))
        assert ulp_error(y32, reference(name, x32)).max() <= ACCURACY[name][2], name
        y64 = np.asarray(pf.jit(lambda v, fn=fn: fn(v))(x64))
        with np.errstate(invalid="ignore"):
            ref = fn(x64)
        assert np.array_equal(np.isnan(y64), np.isnan(ref)), name
        fin = ~np.isnan(ref)
        assert np.all(np.abs(y64[fin] - ref[fin]) <= 2 * np.spacing(np.abs(ref[fin]))), name


def _two_over_pi_bits(bits):
    """floor(2/pi * 2^bits), pi from Machin's formula in integers."""
    guard = bits + 64

    def atan_inv(m):   # atan(1/m) * 2^guard, truncated a few times
        total, term, k, sign = 0, (1 << guard) // m, 1, 1
        while term:
            total += sign * (term // k)
            term //= m * m
            k += 2
            sign = -sign
        return total
    pi = 16 * atan_inv(5) - 4 * atan_inv(239)        # pi * 2^guard, off by a few units
    return ((2 << (2 * guard)) // pi) >> 64


def test_sincos_reduction_constants():
    """The chunks in pf__sincosf are bits of 2/pi: for |x| < 2^64 all of 2/pi
    (x >= 2^-1 is what matters), for |x| >= 2^64 2/pi mod 2^-39 (its bits of
    weight 2^-39 and up times any such x give multiples of 4); 3 x 53 bits with
    FMA, 6 x 29 bits without."""
    text = math_header()
    body = text[text.index("static inline double pf__reduce_pio2"):
                text.index("static inline float pf__sincosf")]
    assert "big = pf__absf(x) >= 0x1p64f;" in body
    pairs = re.findall(r"double c(\d) = big \? (\S+) : (\S+);", body)
    assert [int(i) for i, _, _ in pairs] == [0, 1, 2, 0, 1, 2, 3, 4, 5]
    bits = 400
    T = _two_over_pi_bits(bits)

    def chunks(emin, width, count):
        top = 25 - emin                     # drop the bits of weight >= 2^top
        z = (T >> (bits - (width * count - top))) & ((1 << (width * count)) - 1)
        return [math.ldexp((z >> (width * (count - 1 - i))) & ((1 << width) - 1),
                           top - width * (i + 1)) for i in range(count)]
    assert [float.fromhex(b) for _, b, _ in pairs] == chunks(64, 53, 3) + chunks(64, 29, 6)
    assert [float.fromhex(s) for _, _, s in pairs] == chunks(-1, 53, 3) + chunks(-1, 29, 6)


def test_no_fma_fallback(tmp_path_factory):
    """Without hardware FMA (PF_FMA = a*b+c; sin/cos reduce with 29-bit chunks)
    the same bounds hold (x86 only: -mno-fma)."""
    probe = subprocess.run([GCC, "-dM", "-E", "-x", "c", "/dev/null"],
                           capture_output=True, text=True).stdout
    if "__x86_64__" not in probe:
        pytest.skip("x86-64 only")
    # AVX-512 has FMA instructions of its own: -mno-fma alone leaves them on
    lib_nofma, _, _ = _build(tmp_path_factory, ["-mno-fma", "-mno-avx512f"], "nofma")
    assert lib_nofma.pf_fast_fma() == 0
    for name, ((lo, hi), extra, bound) in ACCURACY.items():
        x = inputs(lo, hi, extra)
        if name in ("sinf", "cosf", "tanf"):
            x = np.concatenate([x, sincos_inputs()])
        err = ulp_error(call(lib_nofma, name, x), reference(name, x))
        assert err.max() <= bound, (name, err.max())
    for name, ((lo, hi), bound, (ulo, uhi), _, _) in ACTIVATIONS.items():
        x = np.linspace(max(lo, ulo), hi, N, dtype=np.float32)
        err = ulp_error(call(lib_nofma, name, x), reference(name, x))
        assert err.max() <= bound, (name, err.max())


# gelu / silu: a ULP bound until the exp / erfc underneath turns subnormal far in
# the negative tail (results < 2e-36; from there the absolute error, < 2^-140,
# is what counts), and a relative + absolute tolerance everywhere.
ACTIVATIONS = {
    # name: (dense range, ULP bound, ULP domain (lo, hi), rtol, atol)
    "geluf": ((-16.0, 10.0), 6.0, (-12.8, np.inf), 1e-6, 2.0 ** -140),
    "gelu_tanhf": ((-22.0, 10.0), 4.0, (-9.9, np.inf), 1e-6, 2.0 ** -140),
    "siluf": ((-210.0, 100.0), 4.0, (-87.0, np.inf), 1e-6, 2.0 ** -140),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation(lib, name):
    (lo, hi), bound, (ulo, uhi), rtol, atol = ACTIVATIONS[name]
    x = inputs(lo, hi, [-15.0, -15.5, -20.0, -20.5, -200.0, -201.0, -1.27, -0.9])
    y = call(lib, name, x)
    ref = reference(name, x)
    err = ulp_error(y, ref)
    dom = (x >= ulo) & (x <= uhi)
    assert err[dom].max() <= bound, (name, err[dom].max(), x[dom][np.argmax(err[dom])])
    # everywhere: NaN-ness and infinities exact, finite values within rtol/atol
    assert np.array_equal(np.isnan(y), np.isnan(ref))
    fin = np.isfinite(ref)
    assert np.array_equal(y[~fin & ~np.isnan(ref)], ref[~fin & ~np.isnan(ref)].astype(np.float32))
    d = np.abs(y[fin].astype(np.float64) - ref[fin])
    assert np.all(d <= rtol * np.abs(ref[fin]) + atol), x[fin][np.argmax(d - rtol * np.abs(ref[fin]))]


def test_special_values(lib):
    inf, nan = np.inf, np.nan
    cases = {
        "expf": [(-inf, 0.0), (inf, inf), (100.0, inf), (-200.0, 0.0), (nan, nan), (0.0, 1.0)],
        "logf": [(0.0, -inf), (-0.0, -inf), (-1.0, nan), (-inf, nan), (inf, inf), (nan, nan),
                 (1.0, 0.0)],
        "tanhf": [(inf, 1.0), (-inf, -1.0), (nan, nan), (0.0, 0.0), (50.0, 1.0)],
        "erff": [(inf, 1.0), (-inf, -1.0), (nan, nan), (0.0, 0.0)],
        "sigmoidf": [(inf, 1.0), (-inf, 0.0), (nan, nan), (0.0, 0.5), (-200.0, 0.0)],
        "sinf": [(inf, nan), (-inf, nan), (nan, nan), (0.0, 0.0)],
        "cosf": [(inf, nan), (-inf, nan), (nan, nan), (0.0, 1.0)],
        "geluf": [(inf, inf), (-inf, 0.0), (nan, nan), (0.0, 0.0)],
        "gelu_tanhf": [(inf, inf), (-inf, 0.0), (nan, nan), (0.0, 0.0), (1e30, 1e30)],
        "siluf": [(inf, inf), (-inf, 0.0), (nan, nan), (0.0, 0.0)],
        "rsqrtf": [(0.0, inf), (-0.0, -inf), (inf, 0.0), (-1.0, nan), (-inf, nan), (nan, nan),
                   (4.0, 0.5)],
        "log1pf": [(-1.0, -inf), (-2.0, nan), (-inf, nan), (inf, inf), (nan, nan), (0.0, 0.0),
                   (1e-40, 1e-40), (-1e-45, -1e-45), (1.0, np.log(2.0))],
        "expm1f": [(-inf, -1.0), (inf, inf), (nan, nan), (0.0, 0.0), (100.0, inf),
                   (-100.0, -1.0), (1e-40, 1e-40), (-1e-45, -1e-45)],
        "log2f": [(0.0, -inf), (-0.0, -inf), (-1.0, nan), (-inf, nan), (inf, inf), (nan, nan),
                  (1.0, 0.0), (8.0, 3.0), (2 ** -149, -149.0), (2.0 ** 127, 127.0)],
        "log10f": [(0.0, -inf), (-0.0, -inf), (-1.0, nan), (-inf, nan), (inf, inf),
                   (nan, nan), (1.0, 0.0), (1000.0, 3.0), (1e10, 10.0)],
        "exp2f": [(-inf, 0.0), (inf, inf), (nan, nan), (0.0, 1.0), (-0.0, 1.0), (128.0, inf),
                  (-149.0, 2 ** -149), (-151.0, 0.0), (10.0, 1024.0), (-3.0, 0.125)],
        "tanf": [(inf, nan), (-inf, nan), (nan, nan), (0.0, 0.0)],
    }
    for name, pairs in cases.items():
        x = np.array([p[0] for p in pairs], dtype=np.float32)
        want = np.array([p[1] for p in pairs], dtype=np.float32)
        got = call(lib, name, x)
        ok = (got == want) | (np.isnan(got) & np.isnan(want))
        assert ok.all(), (name, x[~ok], got[~ok], want[~ok])
    # sin, tan, log1p, expm1 keep the sign of zero, like numpy
    for name in ("sinf", "tanf", "log1pf", "expm1f"):
        assert np.signbit(call(lib, name, np.array([-0.0], np.float32))[0]), name
    # NaN payloads of every kind stay NaN
    qs = SPECIAL_BITS.view(np.float32)
    for name in UNARY:
        assert np.isnan(call(lib, name, qs)).all(), name


# ---------------------------------------------------------------------------
# storage conversions

ALL16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)


def _f32_sample():
    bits = RNG.integers(0, 2 ** 32, 4_000_000, dtype=np.uint64).astype(np.uint32)
    # dense around the f16 range: exponents 100..150, all rounding cases
    near = (RNG.integers(100, 150, 2_000_000, dtype=np.uint32) << 23) \
        | RNG.integers(0, 2 ** 23, 2_000_000, dtype=np.uint32) \
        | (RNG.integers(0, 2, 2_000_000, dtype=np.uint32) << 31)
    # exact ties and neighbours of every f16 / bf16 value
    f16_vals = ALL16.view(np.float16).astype(np.float32).view(np.uint32)
    ties = np.concatenate([f16_vals + d for d in (np.uint32(0x0fff), np.uint32(0x1000),
                                                  np.uint32(0x1001), np.uint32(1))])
    hi = ALL16.astype(np.uint32) << 16
    bties = np.concatenate([hi + d for d in (np.uint32(0x7fff), np.uint32(0x8000),
                                             np.uint32(0x8001), np.uint32(1))])
    edge = np.array([0x7f7fffff, 0xff7fffff, 0x477fefff, 0x477ff000, 0x477fffff, 0x47800000,
                     0x33000000, 0x33000001, 0x32ffffff, 0x387fc000, 0x38800000, 0x1,
                     0x7f800000, 0xff800000], dtype=np.uint32)
    return np.concatenate([bits, near, ties, bties, edge, SPECIAL_BITS]).view(np.float32)


def test_f16_to_f32_exhaustive(lib):
    got = call(lib, "f16_to_f32", ALL16)
    want = ALL16.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    # NaN sign survives
    assert np.array_equal(np.signbit(got[nan]), np.signbit(want[nan]))


def test_f32_to_f16_matches_numpy(lib):
    x = np.concatenate([_f32_sample(), ALL16.view(np.float16).astype(np.float32)])
    got = call(lib, "f32_to_f16", x)
    with np.errstate(all="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    assert np.array_equal(np.isnan(got.view(np.float16)), nan)
    bad = ~nan & (got != want)
    assert not bad.any(), (x[bad][:5], got[bad][:5], want[bad][:5])
    # numpy keeps NaN payloads the same way
    assert np.array_equal(got[nan], want[nan])


def _bf16_ref(x32):
    u = x32.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    isnan = np.isnan(x32)
    return np.where(isnan, ((u >> 16) | 0x40).astype(np.uint16), r)


def test_bf16_to_f32_exhaustive(lib):
    got = call(lib, "bf16_to_f32", ALL16)
    want = (ALL16.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_f32_to_bf16(lib):
    x = _f32_sample()
    got = call(lib, "f32_to_bf16", x)
    want = _bf16_ref(x)
    assert np.array_equal(got, want)
    back = (got.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(np.isnan(back), np.isnan(x))
    # the reference itself is round-to-nearest-even: compare with float64 distances
    fin = np.isfinite(x) & np.isfinite(back)
    xd, bd = x[fin].astype(np.float64), back[fin].astype(np.float64)
    nxt = ((got[fin].astype(np.uint32) + 1) << 16).view(np.float32).astype(np.float64)
    prv = ((got[fin].astype(np.uint32) - 1) << 16).view(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore"):
        d = np.abs(xd - bd)
        assert np.all((d <= np.abs(xd - nxt)) | np.isnan(nxt))
        assert np.all((d <= np.abs(xd - prv)) | np.isnan(prv))
    # overflow rounds to inf, like any RNE conversion
    assert call(lib, "f32_to_bf16", np.array([3.4e38], np.float32))[0] == 0x7F80


def test_float16_builtin_path_matches(tmp_path_factory):
    """The opt-in -DPF_MATH_USE_FLOAT16 path (hardware casts) agrees bit for bit
    on everything but NaN payloads."""
    probe = subprocess.run([GCC, "-march=native", "-dM", "-E", "-x", "c", "/dev/null"],
                           capture_output=True, text=True).stdout
    if "__F16C__" not in probe:
        pytest.skip("no F16C on this machine")
    lib16, _, _ = _build(tmp_path_factory, ["-DPF_MATH_USE_FLOAT16"], "float16")
    x = _f32_sample()
    with np.errstate(over="ignore"):
        a, b = call(lib16, "f32_to_f16", x), x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    assert np.array_equal(a[~nan], b[~nan])
    assert np.isnan(a[nan].view(np.float16)).all()
    h = call(lib16, "f16_to_f32", ALL16)
    want = ALL16.view(np.float16).astype(np.float32)
    assert np.array_equal(np.isnan(h), np.isnan(want))
    assert np.array_equal(h[~np.isnan(want)], want[~np.isnan(want)])


# ---------------------------------------------------------------------------
# vectorisation: the reason for the branch-free style

@pytest.mark.parametrize("name", UNARY + list(CONVERSIONS))
def test_simd_loop_vectorises(build, name):
    _, report, loop_line = build
    line = loop_line[name]
    pat = re.compile(rf"harness\.c:{line}:\d+: optimized: loop vectorized")
    assert pat.search(report), f"pf_{name} loop (line {line}) not vectorised:\n{report}"


def test_no_libm_calls(tmp_path_factory):
    """The float functions inline completely: the object calls nothing."""
    d = tmp_path_factory.mktemp("pfmath_nm")
    (d / "pf_math.h").write_text(math_header())
    src, _ = _harness_source()
    (d / "h.c").write_text(src)
    subprocess.run([GCC, *CFLAGS, "-c", "-o", "h.o", "h.c"], cwd=d, check=True)
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    undefined = subprocess.run([nm, "-u", "h.o"], cwd=d, capture_output=True,
                               text=True).stdout.split()
    assert [s for s in undefined if s not in ("U",) and not s.startswith("GOMP")] == []
