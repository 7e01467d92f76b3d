"""Reductions over leading axes that share a kernel stream the rows once, by columns.

A training step's backward sums many [tokens, features] gradients over the tokens (the
bias gradients of every linear layer) and the partitioner puts sums of one shape in one
kernel. Planned by rows, each unit walked one column down the rows: a strided, scalar
read per element (ViT's backward region took 13.6 ms for what eager does in 3). By
columns, every read is contiguous and vectorised, one pass for all the sums.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import powerfusion as pf
from helpers import check_jit

RNG = np.random.default_rng(7)


def _tiles(report) -> int:
    return len(re.findall(r"^\s*local acc_tile\d+", report.gir, re.MULTILINE))




def bias_grads(a, b, c):
    return (a * b).sum(axis=0), a.sum(axis=0), b.sum(axis=0), (c + a).sum(axis=0)


def test_several_sums_of_one_kernel_share_one_pass_by_columns():
    a, b, c = (RNG.standard_normal((197, 768), dtype=np.float32) for _ in range(3))
    report = pf.explain(bias_grads, a, b, c)
    assert report.kernels == 1
    assert _tiles(report) == 4                  # one accumulator tile per sum
    assert re.search(r"serial r\d+ in 0\.\.197", report.gir)     # the rows streamed once
    check_jit(bias_grads, a, b, c)


@pytest.mark.parametrize("shape", [(1, 197, 768), (3, 50, 24), (7, 5)])
def test_sums_over_several_leading_axes(shape):
    a, b = (RNG.standard_normal(shape, dtype=np.float32) for _ in range(2))
    axes = tuple(range(len(shape) - 1))

    def fn(a, b):
        return (a * b).sum(axis=axes), a.sum(axis=axes), (a - b).max(axis=axes)

    check_jit(fn, a, b)


def test_a_transposed_input_is_read_right():
    a = RNG.standard_normal((197, 96), dtype=np.float32)
    bt = RNG.standard_normal((96, 197), dtype=np.float32)
    check_jit(lambda a, bt: (a.sum(axis=0), bt.T.sum(axis=0), (a * bt.T).sum(axis=0)), a, bt)


def test_full_size_results_beside_the_sums_are_stored_on_the_way():
    """A backward's input gradient beside its bias gradient: one pass by columns."""
    a, b = (RNG.standard_normal((197, 768), dtype=np.float32) for _ in range(2))
    w = RNG.standard_normal(768, dtype=np.float32)

    def fn(a, b, w):
        g = a * b
        return g * np.exp(w) + 1, g.sum(axis=0), (a * np.exp(w)).sum(axis=0)

    report = pf.explain(fn, a, b, w)
    # exp(w), broadcast down the rows, is computed once in a kernel of its own (not
    # 197 times over); the rest is one pass by columns
    assert report.kernels == 2 and _tiles(report) == 2
    assert report.gir.count("exp(") == 1            # once: the two exps merged
    check_jit(fn, a, b, w)


def test_full_size_values_of_a_reduction_stay_by_rows():
    """x - x.mean(0) needs every column's mean before its first row: by rows."""
    x = RNG.standard_normal((120, 48), dtype=np.float32)

    def fn(x):
        return x - x.mean(axis=0), x.sum(axis=0)

    assert _tiles(pf.explain(fn, x)) == 0
    check_jit(fn, x, tol=1e-4)


def test_a_reduction_of_a_reduction_stays_two_passes():
    """The variance needs the mean first: such a kernel is planned by rows, correctly."""
    x = RNG.standard_normal((300, 64), dtype=np.float32)

    def fn(x):
        mean = x.mean(axis=0)
        return mean, ((x - mean) ** 2).mean(axis=0)

    check_jit(fn, x, tol=1e-4)


def test_many_sums_keep_the_tiles_small():
    """Twelve sums: the tiles of a unit stay within COLUMN_TILE_ELEMENTS together."""
    from powerfusion.search.schedule import COLUMN_TILE_ELEMENTS
    xs = [RNG.standard_normal((64, 3072), dtype=np.float32) for _ in range(12)]

    def fn(*xs):
        return tuple(x.sum(axis=0) for x in xs)

    report = pf.explain(fn, *xs)
    widths = [int(w) for w in re.findall(r"local acc_tile\d+: float32\[(\d+)\]", report.gir)]
    assert len(widths) == 12 and sum(widths) <= COLUMN_TILE_ELEMENTS
    check_jit(fn, *xs)


def test_torch_bias_gradients_match_eager():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 33, 160, requires_grad=True)
    lin1, lin2 = torch.nn.Linear(160, 96), torch.nn.Linear(96, 160)

    def step(m):
        m.zero_grad(set_to_none=True)
        x.grad = None
        m(x).square().mean().backward()
        return [p.grad.clone() for p in m.parameters()] + [x.grad.clone()]

    model = torch.nn.Sequential(lin1, torch.nn.GELU(), lin2, torch.nn.LayerNorm(160))
    expected = step(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="powerfusion")
    for _ in range(2):                          # the first call and the lean path
        got = step(compiled)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
