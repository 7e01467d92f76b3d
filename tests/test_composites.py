"""The composite operators transformers are made of, compiled, against float64 numpy.

Each composite is written once with pf.* / numpy-protocol code, as a user would, and
checked against an independent float64 reference; then `pf.explain` on softmax.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import (
    assert_close,
    dtype_params,
    erf64,
    f64,
    gelu64,
    make,
    np_dtype,
    sigmoid64,
)

import powerfusion as pf

EPS = 1e-5


# -- the composites, as users write them -----------------------------------------------------
def softmax(x):
    e = pf.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x):
    z = x - np.max(x, axis=-1, keepdims=True)
    return z - pf.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def layernorm(x, w, b):
    mu = x.mean(axis=-1, keepdims=True)
    d = x - mu
    var = (d * d).mean(axis=-1, keepdims=True)
    return d * pf.rsqrt(var + EPS) * w + b


def rmsnorm(x, w):
    return x * pf.rsqrt((x * x).mean(axis=-1, keepdims=True) + EPS) * w


def residual_layernorm(x, residual, w, b):
    h = x + residual
    return h, layernorm(h, w, b)


def bias_gelu(x, b):
    return pf.gelu(x + b)


def bias_gelu_tanh(x, b):
    return pf.gelu(x + b, approximate="tanh")


def swiglu(x):
    d = x.shape[-1] // 2
    return pf.silu(x[..., :d]) * x[..., d:]


def rotate_half(x):
    d = x.shape[-1] // 2
    return pf.concatenate([-x[..., d:], x[..., :d]], axis=-1)


def rotary(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def masked_scaled_softmax(scores, mask, scale):
    s = pf.where(mask, scores * scale, -np.inf)
    return softmax(s)


def masked_scaled_softmax_large_negative(scores, mask, scale):
    s = pf.where(mask, scores * scale, -1e9)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - m)
    return e / e.sum(axis=-1, keepdims=True)


def group_norm(x, w, b, groups):
    n, c = x.shape[0], x.shape[1]
    g = x.reshape(n, groups, -1)
    mu = g.mean(axis=-1, keepdims=True)
    d = g - mu
    var = (d * d).mean(axis=-1, keepdims=True)
    y = (d * pf.rsqrt(var + EPS)).reshape(x.shape)
    return y * w.reshape(1, c, 1, 1) + b.reshape(1, c, 1, 1)


# -- float64 references, written independently -----------------------------------------------
def softmax64(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax64(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def layernorm64(x, w, b):
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def rmsnorm64(x, w):
    return x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + EPS) * w


def rotary64(x, cos, sin):
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return np.concatenate([x1 * cos[..., :d] - x2 * sin[..., :d],
                           x2 * cos[..., d:] + x1 * sin[..., d:]], axis=-1)


def masked_softmax64(scores, mask, scale):
    s = np.where(mask, scores * scale, -np.inf)
    return softmax64(s)


def group_norm64(x, w, b, groups):
    n, c, h, wd = x.shape
    g = x.reshape(n, groups, c // groups, h, wd)
    mu = g.mean(axis=(2, 3, 4), keepdims=True)
    var = g.var(axis=(2, 3, 4), keepdims=True)
    y = ((g - mu) / np.sqrt(var + EPS)).reshape(x.shape)
    return y * w[None, :, None, None] + b[None, :, None, None]


# Composites chain several roundings of 16-bit values; the float32 and float64 ones several
# transcendental approximations: loosen a little.
FACTOR = {"float32": 2.0, "float64": 1.0, "float16": 2.0, "bfloat16": 2.0}

SMALL_FLOATS = dtype_params("float32", "float16", "bfloat16")


@pytest.mark.parametrize("dtype", SMALL_FLOATS)
def test_softmax(dtype, rng):
    x = make(rng, (24, 1000), dtype, scale=3.0)
    y = pf.jit(softmax)(x)
    want = softmax64(f64(x))
    assert_close(y, want, dtype, transcendental=True, factor=FACTOR[dtype])
    np.testing.assert_allclose(f64(y).sum(axis=-1), 1.0, rtol=0,
                               atol=3e-5 if dtype == "float32" else 3e-2)


def test_softmax_large_logits_and_odd_width(rng):
    """Logits in the thousands (exp overflows without the max subtraction), 1 column,
    a width that is not a multiple of any vector length."""
    x = make(rng, (7, 131), scale=1000.0)
    one = make(rng, (5, 1))
    f = pf.jit(softmax)
    assert_close(f(x), softmax64(f64(x)), "float32", transcendental=True, factor=2)
    assert_close(f(one), np.ones((5, 1)), "float32")


def test_softmax_over_a_middle_axis(rng):
    """softmax over axis 1 of a (4, 50, 6) tensor: the reduced axis is not innermost."""
    x = make(rng, (4, 50, 6), scale=2.0)

    @pf.jit
    def f(x):
        e = pf.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    x64 = f64(x)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    assert_close(f(x), e / e.sum(axis=1, keepdims=True), "float32", transcendental=True,
                 factor=2)


@pytest.mark.parametrize("dtype", dtype_params("float32", "bfloat16"))
def test_log_softmax(dtype, rng):
    x = make(rng, (16, 513), dtype, scale=2.0)
    y = pf.jit(log_softmax)(x)
    # log-softmax values are around -log(513) ~ -6: relative tolerance suits them
    assert_close(y, log_softmax64(f64(x)), dtype, transcendental=True, factor=FACTOR[dtype])


@pytest.mark.parametrize("dtype", dtype_params("float32", "float16", "bfloat16", "float64"))
def test_layernorm(dtype, rng):
    x = make(rng, (32, 768), dtype, scale=2.0)
    x = (f64(x) + 3.0).astype(np_dtype(dtype))    # an offset mean, as activations have
    w = make(rng, (768,), dtype)
    b = make(rng, (768,), dtype)
    y = pf.jit(layernorm)(x, w, b)
    want = layernorm64(f64(x), f64(w), f64(b))
    assert_close(y, want, dtype, transcendental=True, factor=FACTOR[dtype], scale=3)


def test_layernorm_non_contiguous_input(rng):
    """The activations as a transposed view; weights as a reversed view."""
    x = make(rng, (256, 20)).T
    w = make(rng, (256,))[::-1]
    b = make(rng, (256,))
    y = pf.jit(layernorm)(x, w, b)
    assert_close(y, layernorm64(f64(x), f64(w), f64(b)), "float32", transcendental=True,
                 factor=2, scale=3)


@pytest.mark.parametrize("dtype", SMALL_FLOATS)
def test_rmsnorm(dtype, rng):
    x = make(rng, (4, 8, 1024), dtype)
    w = make(rng, (1024,), dtype)
    y = pf.jit(rmsnorm)(x, w)
    assert_close(y, rmsnorm64(f64(x), f64(w)), dtype, transcendental=True,
                 factor=FACTOR[dtype], scale=3)


@pytest.mark.parametrize("dtype", dtype_params("float32", "float16"))
def test_residual_add_layernorm(dtype, rng):
    x = make(rng, (20, 384), dtype)
    r = make(rng, (20, 384), dtype)
    w, b = make(rng, (384,), dtype), make(rng, (384,), dtype)
    h, y = pf.jit(residual_layernorm)(x, r, w, b)
    # numpy's answer for h is one rounding of x + r; y normalises that h
    h_ref = f64(x) + f64(r)
    assert_close(h, h_ref, dtype, factor=FACTOR[dtype])
    h_rounded = f64(h_ref.astype(np_dtype(dtype)))
    assert_close(y, layernorm64(h_rounded, f64(w), f64(b)), dtype, transcendental=True,
                 factor=FACTOR[dtype], scale=3)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", SMALL_FLOATS)
def test_bias_gelu(dtype, approximate, rng):
    x = make(rng, (64, 3072 // 4), dtype, scale=2.0)
    b = make(rng, (3072 // 4,), dtype)
    fn = bias_gelu if approximate == "none" else bias_gelu_tanh
    y = pf.jit(fn)(x, b)
    # one rounding of x + b for 16-bit inputs is numpy's meaning of `x + b`
    xb = f64((f64(x) + f64(b)).astype(np_dtype(dtype)))
    assert_close(y, gelu64(xb, approximate), dtype, transcendental=True, factor=FACTOR[dtype])


@pytest.mark.parametrize("dtype", dtype_params("float32", "bfloat16"))
def test_swiglu(dtype, rng):
    x = make(rng, (3, 17, 2 * 344), dtype, scale=2.0)
    y = pf.jit(swiglu)(x)
    x64 = f64(x)
    a, g = x64[..., :344], x64[..., 344:]
    assert y.shape == (3, 17, 344)
    assert_close(y, a * sigmoid64(a) * g, dtype, transcendental=True, factor=FACTOR[dtype],
                 scale=2)


def test_swiglu_two_inputs(rng):
    """The gate and the up projection as separate (differently laid out) tensors."""
    gate = make(rng, (96, 40)).T
    up = make(rng, (40, 96))
    y = pf.jit(lambda g, u: pf.silu(g) * u)(gate, up)
    g = f64(gate)
    assert_close(y, g * sigmoid64(g) * f64(up), "float32", transcendental=True, factor=2)


def _rope_tables(t, d, dtype):
    inv = 1.0 / (10000 ** (np.arange(0, d, 2) / d))
    ang = np.outer(np.arange(t), inv)
    ang = np.concatenate([ang, ang], axis=-1)              # (t, d)
    return (np.cos(ang)[:, None, :].astype(np_dtype(dtype)),
            np.sin(ang)[:, None, :].astype(np_dtype(dtype)))


@pytest.mark.parametrize("dtype", dtype_params("float32", "float16"))
def test_rotary_embedding(dtype, rng):
    t, h, d = 33, 4, 64
    x = make(rng, (2, t, h, d), dtype)
    cos, sin = _rope_tables(t, d, dtype)                    # (t, 1, d), broadcast over heads
    y = pf.jit(rotary)(x, cos, sin)
    assert_close(y, rotary64(f64(x), f64(cos), f64(sin)), dtype, factor=FACTOR[dtype], scale=2)


def test_rotary_embedding_strided_input(rng):
    """q taken from a fused qkv projection: a strided view, as models produce it."""
    t, h, d = 16, 2, 32
    qkv = make(rng, (t, 3, h, d))
    q = qkv[:, 0]                                           # (t, h, d), not contiguous
    cos, sin = _rope_tables(t, d, "float32")
    y = pf.jit(rotary)(q, cos, sin)
    assert_close(y, rotary64(f64(q), f64(cos), f64(sin)), "float32", factor=2, scale=2)


@pytest.mark.parametrize("dtype", dtype_params("float32", "bfloat16"))
def test_masked_scaled_softmax(dtype, rng):
    b, heads, t = 2, 3, 45
    scores = make(rng, (b, heads, t, t), dtype, scale=4.0)
    mask = np.tril(np.ones((t, t), dtype=bool))             # causal, broadcast over b, heads
    scale = 1.0 / math.sqrt(64)
    y = pf.jit(masked_scaled_softmax)(scores, mask, scale)
    want = masked_softmax64(f64(scores), mask, scale)
    assert_close(y, want, dtype, transcendental=True, factor=FACTOR[dtype])
    assert not np.isnan(f64(y)).any()
    assert (f64(y)[..., ~mask] == 0).all(), "masked positions must be exactly 0"


def test_masked_scaled_softmax_large_negative_and_padding_mask(rng):
    """-1e9 instead of -inf; a padding mask of shape (b, 1, 1, t)."""
    b, heads, t = 3, 2, 37
    scores = make(rng, (b, heads, t, t), scale=3.0)
    lengths = np.array([37, 20, 1])
    mask = (np.arange(t)[None, :] < lengths[:, None])[:, None, None, :]
    y = pf.jit(masked_scaled_softmax_large_negative)(scores, mask, 0.125)
    want = masked_softmax64(f64(scores), mask, 0.125)
    assert_close(y, want, "float32", transcendental=True, factor=2)


@pytest.mark.parametrize("dtype", dtype_params("float32", "float16"))
def test_group_norm(dtype, rng):
    n, c, hh, ww, groups = 2, 32, 9, 7, 8
    x = make(rng, (n, c, hh, ww), dtype, scale=2.0)
    w, b = make(rng, (c,), dtype), make(rng, (c,), dtype)
    y = pf.jit(group_norm)(x, w, b, groups)
    assert y.shape == x.shape
    assert_close(y, group_norm64(f64(x), f64(w), f64(b), groups), dtype, transcendental=True,
                 factor=FACTOR[dtype], scale=3)


def test_composites_under_one_jit(rng):
    """Several composites in one traced function, sharing inputs, returning a tuple."""
    x = make(rng, (12, 256))
    w, b = make(rng, (256,)), make(rng, (256,))

    @pf.jit
    def block(x, w, b):
        h = layernorm(x, w, b)
        return softmax(h), rmsnorm(h, w), bias_gelu(h, b)

    s, r, g = block(x, w, b)
    h = layernorm64(f64(x), f64(w), f64(b))
    assert_close(s, softmax64(h), "float32", transcendental=True, factor=4)
    assert_close(r, rmsnorm64(h, f64(w)), "float32", transcendental=True, factor=4, scale=3)
    assert_close(g, gelu64(h + f64(b)), "float32", transcendental=True, factor=4, scale=3)


# -- the references themselves (no compiler): the composites run eagerly on numpy ------------
def test_eager_composites_match_the_references(rng):
    """The pf.* code above, run un-jitted on float64 numpy arrays, equals the
    independent references: so a failure above is the compiler's, not the test's."""
    x = make(rng, (6, 40), "float64")
    w, b = make(rng, (40,), "float64"), make(rng, (40,), "float64")
    np.testing.assert_allclose(softmax(x), softmax64(x), rtol=1e-12)
    np.testing.assert_allclose(log_softmax(x), log_softmax64(x), rtol=1e-12)
    np.testing.assert_allclose(layernorm(x, w, b), layernorm64(x, w, b), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rmsnorm(x, w), rmsnorm64(x, w), rtol=1e-12)
    _, y = residual_layernorm(x, x, w, b)
    np.testing.assert_allclose(y, layernorm64(2 * x, w, b), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bias_gelu(x, b), gelu64(x + b), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(swiglu(x), x[:, :20] * sigmoid64(x[:, :20]) * x[:, 20:],
                               rtol=1e-12)
    q = make(rng, (2, 5, 3, 8), "float64")
    cos, sin = _rope_tables(5, 8, "float64")
    np.testing.assert_allclose(rotary(q, cos, sin), rotary64(q, cos, sin), rtol=1e-12,
                               atol=1e-15)
    s = make(rng, (2, 3, 6, 6), "float64")
    mask = np.tril(np.ones((6, 6), bool))
    np.testing.assert_allclose(masked_scaled_softmax(s, mask, 0.5),
                               masked_softmax64(s, mask, 0.5), rtol=1e-12)
    np.testing.assert_allclose(masked_scaled_softmax_large_negative(s, mask, 0.5),
                               masked_softmax64(s, mask, 0.5), rtol=1e-12)
    g = make(rng, (2, 8, 3, 3), "float64")
    gw, gb = make(rng, (8,), "float64"), make(rng, (8,), "float64")
    np.testing.assert_allclose(group_norm(g, gw, gb, 4), group_norm64(g, gw, gb, 4),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(erf64([0.5]), [math.erf(0.5)])


# -- explain ---------------------------------------------------------------------------------
def test_explain_softmax(rng):
    x = make(rng, (64, 512))
    report = pf.explain(softmax, x, target="cpu")
    assert isinstance(report.source, str) and "#pragma omp" in report.source
    assert isinstance(report.gir, str) and report.gir.strip()
    gir = report.gir.lower()
    for primitive in ("move", "compute"):
        assert primitive in gir, f"GIR text does not mention {primitive!r}"
    # Parallel scopes print as the level they bind ('cores p in 0..64', 'simd i in ...')
    # or as 'parallel'
    assert any(word in gir for word in ("parallel", "cores", "simd", "serial")), \
        "GIR text shows no Parallel scope"
    assert report.min_global_bytes == 2 * x.nbytes        # x read once, y written once
    assert report.global_bytes >= report.min_global_bytes > 0
    assert isinstance(report.traffic, dict) and report.traffic
    # the outermost level's entry accounts for global_bytes (level -> bytes, or
    # level -> {"read": bytes, "write": bytes})
    moved = {level: (sum(v.values()) if isinstance(v, dict) else v)
             for level, v in report.traffic.items()}
    assert report.global_bytes in moved.values()
    assert all(b >= 0 for b in moved.values())
    text = str(report)
    assert text.strip()


def test_explain_accepts_a_jitted_function_and_counts_broadcast_inputs_once(rng):
    x = make(rng, (32, 128))
    w = np.broadcast_to(make(rng, (1, 128)), (32, 128))     # 128 distinct elements
    b = make(rng, (128,))
    f = pf.jit(lambda x, w, b: layernorm(x, w, b))
    report = pf.explain(f, x, w, b)
    assert report.min_global_bytes == x.nbytes + 128 * 4 + b.nbytes + x.nbytes
    assert report.global_bytes >= report.min_global_bytes
    # explain leaves f working as before
    y = f(x, w, b)
    assert_close(y, layernorm64(f64(x), f64(w), f64(b)), "float32", transcendental=True,
                 factor=2, scale=3)
