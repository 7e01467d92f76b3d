"""Transcendental work under a broadcast is computed once and read back, not redone
per copy: canonical form keeps a broadcasting view over such a value of the inputs
(`graph.canonical._worth_storing`) and the partitioner stores it in a small kernel
of its own, ahead of the kernels that read it. Cheap work, small broadcasts and the
per-row values of a reduction stay recomputed in place."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import powerfusion as pf
from powerfusion.frontend.tracing import trace
from powerfusion.runtime.backends import executable, get_target
from powerfusion.search import tuner, tuning_db
from powerfusion.search.plan import Candidate
from powerfusion.search.space import plan_graph

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


def _rotary_args():
    q = _rand(1, 8, 128, 64)
    pos = np.arange(128, dtype=np.float32)
    inv = (1.0 / 10000 ** (np.arange(0, 64, 2) / 64)).astype(np.float32)
    return q, pos, inv


def _space(fn, args):
    graph, _ = trace(fn, args)
    strides = [tuple(s // a.itemsize for s in a.strides) for a in args]
    return graph, strides, tuner.search_space(graph, strides, get_target("cpu"), "cpu")


def test_recomputing_under_broadcasts_is_a_point_of_the_search_space():
    """Storing is the default plan's choice (a fixed threshold); the tuner's space holds
    the other way too, as an alternative computation it measures untrained, and each
    point computes the same result."""
    args = _rotary_args()
    graph, strides, space = _space(rotary, args)
    recomputed = [p for p in space.points if p[0].recompute]
    assert recomputed and any(space.points[k][0].recompute for k in space.defaults)
    assert all(len(plan.kernels) == 1 for _, plan, _, _ in recomputed)      # no table
    default = plan_graph(graph, strides, get_target("cpu"))
    assert not default.choice.recompute and len(default.kernels) == 2
    choice = recomputed[0][0]
    assert "recomputed under broadcasts" in choice.label
    plan = plan_graph(graph, strides, get_target("cpu"), choice)
    assert plan.choice == choice
    got = executable(plan, "cpu", recomputed[0][3]).run(list(args))[0]
    want = rotary(*(a.astype(np.float64) for a in args))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_graph_that_stores_nothing_has_no_recomputing_point():
    """...and a choice that asks for one (a tuning database's, written for another graph
    or damaged) plans it as it is (found by the cpu-space fuzzer: an IndexError)."""
    args = (_rand(256, 512), _rand(512))
    graph, strides, space = _space(lambda x, w: x * (w * 2.0 + 1.0), args)   # cheap
    assert not any(p[0].recompute for p in space.points)
    for choice in (Candidate(recompute=True), Candidate("as written", "global", True,
                                                         threads=1, recompute=True)):
        plan = plan_graph(graph, strides, get_target("cpu"), choice)
        assert len(plan.kernels) == 1
        # the same point stored: the choice's other knobs stand
        assert plan.choice == dataclasses.replace(choice, recompute=False)


def test_a_tuned_recomputation_is_recorded_and_compiled_later(tmp_path, monkeypatch):
    """The switch survives the tuning database (as data; an entry without it reads as
    storing) and a later run compiles what it says."""
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    args = _rotary_args()
    pf.jit(rotary, tune=True)(*args)
    ((key, entry),) = tuning_db.load("cpu").items()
    assert any("recomputed under broadcasts" in label for label in entry["seconds"])
    forced = dataclasses.replace(entry["choice"], recompute=not entry["choice"].recompute)
    tuning_db.record("cpu", key, {**entry, "choice": forced})
    later = pf.jit(rotary)
    np.testing.assert_allclose(later(*args), rotary(*(a.astype(np.float64) for a in args)),
                               rtol=1e-4, atol=1e-4)
    (compiled,) = later.cache.values()
    assert compiled.executable.plan.choice == forced
    assert len(compiled.executable.plan.kernels) == (1 if forced.recompute else 2)
    stored = json.loads(tuning_db.db_path("cpu").read_text())[key]["choice"]
    del stored["recompute"]                         # an entry older than the switch
    assert tuning_db.candidate(stored).recompute is False
