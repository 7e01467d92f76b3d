"""promote: a live row moves on chip when it fits; otherwise recompute or stay global."""

from dataclasses import replace

import pytest
from support import CPU, assert_stages_match_oracle, moves, plan_of, rand, softmax

from powerfusion.gir.ir import Level


def small_chip(local_bytes):
    memory = tuple(replace(m, capacity=local_bytes) if m.level is Level.LOCAL else m
                   for m in CPU.memory)
    return replace(CPU, memory=memory)


def test_a_row_that_fits_is_promoted_to_local():
    _, plan = plan_of(softmax, rand(4, 64))
    kernel = plan.kernels[0]
    assert any("promoted to local" in d for d in kernel.log.decisions)
    assert moves(kernel.program, "local", "register")


def test_a_row_that_does_not_fit_is_recomputed_and_explained():
    target = small_chip(64)            # 16 floats: a 64-float row does not fit
    plan = assert_stages_match_oracle(softmax, rand(4, 64), target=target)
    decisions = " ".join(plan.kernels[0].log.decisions)
    assert "recomputed" in decisions and "exceeds" in decisions
    assert not moves(plan.kernels[0].program, "register", "local")


def test_when_recomputing_costs_more_the_row_stays_global():
    # the row is a product of three inputs: recomputing re-reads 12 bytes per element,
    # more than the 8 of a global round trip
    fn = lambda a, b, c: (lambda e: e / e.sum(-1, keepdims=True))(a * b * c)  # noqa: E731
    target = small_chip(64)
    plan = assert_stages_match_oracle(fn, rand(4, 64), rand(4, 64), rand(4, 64),
                                      target=target)
    assert any("stays global" in d for d in plan.kernels[0].log.decisions)


@pytest.mark.parametrize("local_bytes", [64, 1 << 20])
def test_promote_keeps_meaning(local_bytes):
    assert_stages_match_oracle(softmax, rand(3, 32), target=small_chip(local_bytes))
