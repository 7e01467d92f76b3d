"""Transcendental work under a broadcast is computed once and read back, not redone
per copy: canonical form keeps a broadcasting view over such a value of the inputs
(`graph.canonical._worth_storing`) and the partitioner stores it in a small kernel
of its own, ahead of the kernels that read it. Cheap work, small broadcasts and the
per-row values of a reduction stay recomputed in place."""

from __future__ import annotations

import numpy as np
import pytest

import powerfusion as pf

RNG = np.random.default_rng(7)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _check(fn, *args, tol=2e-5):
    got = pf.jit(fn)(*args)
    want = fn(*(a.astype(np.float64) for a in args))
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=tol, atol=tol)


def rotary(q, pos, inv):
    """LLaMA's rotary embedding: cos and sin of a [seq, dim] table, read by every head."""
    f = pos[:, None] * inv[None, :]
    emb = np.concatenate([f, f], -1)
    half = q.shape[-1] // 2
    rotated = np.concatenate([-q[..., half:], q[..., :half]], -1)
    return q * np.cos(emb) + rotated * np.sin(emb)


def test_rotary_tables_are_computed_once_not_per_head():
    q = _rand(1, 8, 128, 64)
    pos = np.arange(128, dtype=np.float32)
    inv = (1.0 / 10000 ** (np.arange(0, 64, 2) / 64)).astype(np.float32)
    report = pf.explain(rotary, q, pos, inv)
    assert report.kernels == 2
    first, second = report.gir.split("kernel pf_kernel_1")
    assert "cos(" in first and "sin(" in first
    assert "cos(" not in second and "sin(" not in second     # read, not recomputed
    _check(rotary, q, pos, inv, tol=1e-4)


@pytest.mark.parametrize("fn, shapes", [
    (lambda x, w: x * (w * 2.0 + 1.0), [(256, 512), (512,)]),       # cheap: recomputed
    (lambda x, w: x * np.exp(w), [(2, 512), (512,)]),               # repeated twice only
    (lambda x, w: x * np.exp(w), [(256, 16), (16,)]),               # 4K extra exps: cheap
])
def test_cheap_or_small_broadcasts_stay_in_one_kernel(fn, shapes):
    args = [_rand(*s) for s in shapes]
    assert pf.explain(fn, *args).kernels == 1
    _check(fn, *args)


def test_a_per_row_value_of_a_reduction_stays_in_its_kernel():
    def log_softmax(x):
        m = x.max(-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))

    x = _rand(64, 1024)
    assert pf.explain(log_softmax, x).kernels == 1
    _check(log_softmax, x)


def test_a_stored_broadcast_feeds_a_column_reduction_and_a_full_result():
    def fn(a, w):
        e = np.exp(w)
        return a * e, (a * e).sum(axis=0), np.tanh(w)[None, :] + a

    a, w = _rand(300, 256), _rand(256)
    report = pf.explain(fn, a, w)
    assert report.gir.count("exp(") == 1 and report.gir.count("tanh(") == 1
    _check(fn, a, w, tol=1e-4)
