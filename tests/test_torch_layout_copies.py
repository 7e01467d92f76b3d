"""Clones to the contiguous layout whose result is only read become `contiguous` calls:
no copy when the tensor is laid out contiguously already (the fused attention's
output, permuted back to [batch, seq, heads, dim]), a copy when it is not."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.fx  # noqa: E402

import powerfusion as pf  # noqa: E402
from powerfusion.frontend.torch_backend.layout_copies import (  # noqa: E402
    contiguous, elide_layout_copies)

aten = torch.ops.aten
CF = torch.contiguous_format


def _graph(build):
    """A GraphModule of aten calls: build(graph, x, y) returns the output node(s)."""
    g = torch.fx.Graph()
    x, y = g.placeholder("x"), g.placeholder("y")
    g.output(build(g, x, y))
    return torch.fx.GraphModule(torch.nn.Module(), g)


def _attention_output(laid_out_so):
    """mm -> view [b, s, h, d] -> permute -> clone -> view [b*s, h*d] -> mm; with
    laid_out_so the permuted value is contiguous already (as the fused attention's
    output permuted back is: here a permute undone)."""
    def build(g, x, y):
        a = g.call_function(aten.mm.default, (x, y))
        p = g.call_function(aten.permute.default,
                            (g.call_function(aten.view.default, (a, [2, 3, 4, 4])),
                             [0, 2, 1, 3]))
        if laid_out_so:
            p = g.call_function(aten.permute.default, (p, [0, 2, 1, 3]))
        c = g.call_function(aten.clone.default, (p,), {"memory_format": CF})
        return g.call_function(aten.mm.default,
                               (g.call_function(aten.view.default, (c, [24, 4])),
                                g.call_function(aten.slice.Tensor, (y, 0, 0, 4))))
    return build


def _with_metadata(gm, *args):
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    FakeTensorProp(gm).propagate(*args)
    return gm


def test_a_clone_of_a_contiguous_value_only_read_through_views_becomes_contiguous():
    x, y = torch.randn(6, 16), torch.randn(16, 16)
    gm = _with_metadata(_graph(_attention_output(True)), x, y)
    expected = gm(x, y)
    assert elide_layout_copies(gm) == 1
    assert any(n.target is contiguous for n in gm.graph.nodes)
    assert not any(n.target is aten.clone.default for n in gm.graph.nodes)
    torch.testing.assert_close(gm(x, y), expected)


def test_a_real_copy_stays_a_clone_for_a_region_to_make():
    """A permuted value is copied whatever: a region makes the copy beside the op that
    computes it (a kernel writing the new layout), not torch's copy after it."""
    x, y = torch.randn(6, 16), torch.randn(16, 16)
    gm = _with_metadata(_graph(_attention_output(False)), x, y)
    assert elide_layout_copies(gm) == 0
    assert any(n.target is aten.clone.default for n in gm.graph.nodes)
    assert elide_layout_copies(_graph(_attention_output(True))) == 0    # no metadata


@pytest.mark.parametrize("case", ["returned", "of an input", "written in place",
                                  "of a fresh tensor", "preserving the format"])
def test_clones_that_could_be_told_apart_stay(case):
    def build(g, x, y):
        a = g.call_function(aten.mm.default, (x, y))
        if case == "of an input":
            a = x
        if case == "of a fresh tensor":
            a = g.call_function(aten.full.default, ([6, 16], 0.0))
        kwargs = {} if case == "preserving the format" else {"memory_format": CF}
        c = g.call_function(aten.clone.default, (a,), kwargs)
        if case == "returned":
            return g.call_function(aten.view.default, (c, [16, 6]))
        if case == "written in place":
            idx = g.call_function(aten.arange.default, (2,))
            w = g.call_function(aten.view.default, (c, [6, 16]))
            rows = g.call_function(aten.slice.Tensor, (y, 0, 0, 2))
            g.call_function(aten.index_put_.default, (w, [idx], rows))
            return g.call_function(aten.sum.default, (c,))
        return g.call_function(aten.sum.default, (c,))

    gm = _graph(build)
    assert elide_layout_copies(gm) == 0
    assert any(n.target is aten.clone.default for n in gm.graph.nodes)


def test_contiguous_copies_only_what_is_laid_out_otherwise():
    x = torch.randn(4, 6)
    assert contiguous(x) is x
    t = x.t()
    out = contiguous(t)
    assert out.is_contiguous() and out.data_ptr() != t.data_ptr()
    torch.testing.assert_close(out, t)


def test_attention_models_elide_the_output_copy_and_match_eager(monkeypatch):
    import powerfusion.frontend.torch_backend as backend
    monkeypatch.setattr(backend, "on_chip_bytes", lambda gm: 0)   # fused at any size

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out = torch.nn.Linear(64, 192), torch.nn.Linear(64, 64)

        def forward(self, x, mask):
            b, s, _ = x.shape
            q, k, v = self.qkv(x).view(b, s, 3, 4, 16).permute(2, 0, 3, 1, 4)
            w = torch.softmax(q @ k.transpose(-1, -2) / 4.0 + mask, dim=-1)
            return self.out((w @ v).permute(0, 2, 1, 3).contiguous().view(b, s, 64))

    model = Attention().eval()
    x, mask = torch.randn(2, 10, 64), torch.randn(2, 1, 10, 10)
    with torch.no_grad():
        expected = model(x, mask)
        torch._dynamo.reset()
        pf.reset_compile_stats()
        compiled = torch.compile(model, backend="powerfusion")
        for _ in range(3):                      # first call, lean path
            torch.testing.assert_close(compiled(x, mask), expected, rtol=1e-5, atol=1e-5)
    stats = pf.compile_stats()
    assert stats["attention"] == 1 and stats["layout_copies"] == 1
    assert stats["fallback_ops"] == 0
