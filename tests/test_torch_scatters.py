"""slice_scatter and select_scatter as concatenations of the base's parts around the
source: the backward of a slice (rotary embedding's rotate_half) scatters gradients into
zeros, which then never exist - one kernel, every read contiguous."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import powerfusion as pf  # noqa: E402


# dynamo and the counters reset, torch seeded, around each test (conftest)
pytestmark = pytest.mark.usefixtures("fresh_torch")


@pytest.mark.parametrize("dim, start, end, step", [
    (-1, 0, 32, 1), (-1, 32, None, 1), (1, 1, 3, 1), (0, None, None, 1), (2, 5, 5, 1),
    (-2, -6, -2, 1), (3, 8, 100, 1), (-1, 0, 64, 2)])
def test_slice_scatter_matches_eager(dim, start, end, step):
    base = torch.randn(2, 4, 8, 64)
    shape = list(base.shape)
    shape[dim] = len(range(shape[dim])[slice(start, end, step)])
    src = torch.randn(shape)

    def f(base, src):
        return torch.slice_scatter(base * 2, src + 1, dim, start, end, step) - 0.5

    got = torch.compile(f, backend="powerfusion")(base, src)
    torch.testing.assert_close(got, f(base, src))


@pytest.mark.parametrize("dim, index", [(0, 1), (1, -1), (-1, 7), (2, 0)])
def test_select_scatter_matches_eager(dim, index):
    base = torch.randn(2, 3, 5, 8)
    src = torch.randn([n for k, n in enumerate(base.shape) if k != dim % base.dim()])

    def f(base, src):
        return torch.select_scatter(base + 1, src * 3, dim, index)

    torch.testing.assert_close(torch.compile(f, backend="powerfusion")(base, src),
                               f(base, src))


def test_rotate_half_backward_scatters_in_a_kernel():
    def rotary(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    x = torch.randn(2, 4, 16, 64, requires_grad=True)
    cos, sin = torch.randn(16, 64), torch.randn(16, 64)
    (rotary(x, cos, sin) ** 2).sum().backward()
    expected, x.grad = x.grad, None
    compiled = torch.compile(rotary, backend="powerfusion")
    for _ in range(2):
        x.grad = None
        (compiled(x, cos, sin) ** 2).sum().backward()
        torch.testing.assert_close(x.grad, expected)
    stats = pf.compile_stats()
    assert stats["fused_by_op"].get("aten.slice_scatter.default", 0) >= 2
    assert "aten.slice_scatter.default" not in stats["fallback_by_op"]
