"""View chains folded into one as_strided: the same values as the chain, and the chain
itself whenever the base is not laid out as the graph said."""

import pytest

torch = pytest.importorskip("torch")
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

from powerfusion.frontend.torch_backend.view_chains import (  # noqa: E402
    VIEW_OPS, fold_views, restride, restride_inside)

aten = torch.ops.aten


def _heads(x, w):
    """The attention layout dance: (b, s, h*d) -> (b*h, s, d) views around a bmm."""
    q = x.view(2, 8, 4, 16).permute(0, 2, 1, 3).expand(2, 4, 8, 16).reshape(8, 8, 16)
    k = w.view(2, 8, 4, 16).permute(0, 2, 3, 1).reshape(8, 16, 8)
    s = torch.bmm(q, k)
    return s.view(2, 4, 8, 8)[:, 1].transpose(-1, -2).unsqueeze(0)


def _traced(fn, *args):
    return make_fx(fn, tracing_mode="fake")(*args)


def _view_calls(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in VIEW_OPS]


def test_chains_fold_and_give_the_same_values():
    x, w = torch.randn(2, 8, 64), torch.randn(2, 8, 64)
    gm = _traced(_heads, x, w)
    before = len(_view_calls(gm))
    folded = fold_views(gm)
    # x's and w's views before the copies reshape makes, the views after them, the
    # result's select-transpose-unsqueeze: one call each
    assert folded == 5 and before == 11
    assert not _view_calls(gm)
    # the result leaves the graph as a real view; the four the bmm reads are aliases
    # made without the dispatcher
    assert sum(n.target is restride for n in gm.graph.nodes) == 1
    assert sum(n.target is restride_inside for n in gm.graph.nodes) == 4
    expected = _heads(x, w)
    got = gm(x, w)
    assert got.shape == expected.shape and got.stride() == expected.stride()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_base_laid_out_otherwise_replays_the_chain():
    """The graph was traced on contiguous inputs; a transposed-storage input of the
    same shape has other strides: as_strided would read the wrong elements."""
    x, w = torch.randn(2, 8, 64), torch.randn(2, 8, 64)
    gm = _traced(_heads, x, w)
    assert fold_views(gm) == 5
    xt = x.transpose(0, 2).contiguous().transpose(0, 2)       # same values, other strides
    assert xt.stride() != x.stride()
    torch.testing.assert_close(gm(xt, w), _heads(x, w), rtol=0, atol=0)
    offset = torch.randn(1 + 2 * 8 * 64)[1:].view(2, 8, 64)   # storage offset 1
    offset.copy_(x)
    torch.testing.assert_close(gm(offset, w), _heads(x, w), rtol=0, atol=0)


def test_chains_with_sizes_computed_at_run_time_stay():
    def fn(x):
        n = x.shape[0]
        return x.view(n * 2, -1).t()

    gm = make_fx(fn, tracing_mode="symbolic")(torch.randn(4, 6))
    fold_views(gm)                        # symbolic sizes: nothing static to fold to
    torch.testing.assert_close(gm(torch.randn(4, 6)).shape, torch.Size([3, 8]))
    assert all(n.target not in (restride, restride_inside) for n in gm.graph.nodes)


def test_restride_direct():
    base = torch.arange(12.0)
    view = restride(base, (3, 4), (1, 3), 0, ((1,), 0), ())
    assert view.tolist() == base.view(4, 3).t().tolist()
    other = torch.arange(24.0)[::2]                             # stride 2: replay
    replay = ((aten.view.default, ((4, 3),), {}), (aten.t.default, (), {}))
    assert restride(other, (3, 4), (1, 3), 0, ((1,), 0), replay).tolist() == \
        other.view(4, 3).t().tolist()


def test_the_backend_folds_the_views_of_attention(glue):
    """Through torch.compile: the views around the bmms are folded, the result is
    eager's, forward and backward, and the graphs call the native glue's Restride for
    each chain where it is built."""
    import powerfusion as pf
    from powerfusion.frontend.torch_backend import collect_graphs

    def attention(x, w):
        b, s, d = x.shape
        q = (x @ w).view(b, s, 4, d // 4).transpose(1, 2)
        k = x.view(b, s, 4, d // 4).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
        return (p @ k).transpose(1, 2).reshape(b, s, d)

    x = torch.randn(2, 16, 32, requires_grad=True)
    w = torch.randn(32, 32, requires_grad=True)
    pf.reset_compile_stats()
    torch._dynamo.reset()
    compiled = torch.compile(attention, backend="powerfusion")
    expected = attention(x, w)
    (ex, ew) = torch.autograd.grad(expected.sum(), (x, w))
    with collect_graphs() as graphs:
        for _ in range(3):                     # the graphs specialise after their first call
            got = compiled(x, w)
            torch.testing.assert_close(got, expected)
            gx, gw = torch.autograd.grad(got.sum(), (x, w))
            torch.testing.assert_close(gx, ex)
            torch.testing.assert_close(gw, ew)
    assert pf.compile_stats()["view_chains"] > 0
    natives = [n for _, gm, _ in graphs for n in gm.graph.nodes
               if type(n.target).__name__ == "Restride"]
    assert bool(natives) == (glue is not None)


def test_restride_inside_takes_the_offset_from_storage_start():
    """The alias adds its offset to the base's own: a base that starts inside its
    storage (as traced) gets the same elements as as_strided gives."""
    storage = torch.arange(30.0)
    base = storage[5:17]                                        # storage offset 5
    got = restride_inside(base, (3, 4), (1, 3), 5, ((1,), 5), ())
    want = base.as_strided((3, 4), (1, 3), 5)
    assert got.storage_offset() == want.storage_offset() == 5
    assert got.tolist() == want.tolist() == base.view(4, 3).t().tolist()
    other = torch.arange(24.0)[::2]                             # laid out otherwise: replay
    replay = ((aten.view.default, ((4, 3),), {}), (aten.t.default, (), {}))
    assert restride_inside(other, (3, 4), (1, 3), 5, ((1,), 5), replay).tolist() == \
        other.view(4, 3).t().tolist()


@pytest.mark.parametrize("glue", ["native"], indirect=True)
@pytest.mark.parametrize("inside", [False, True], ids=["graph output", "inside"])
def test_a_native_restride_is_restride_in_one_call(glue, inside):
    replay = ((aten.view.default, ((4, 3),), {}), (aten.t.default, (), {}))
    python = restride_inside if inside else restride
    native = glue.Restride((3, 4), (1, 3), 5, (1,), 5, inside,
                           lambda b: python(b, (3, 4), (1, 3), 5, ((1,), 5), replay))
    storage = torch.arange(30.0)
    base = storage[5:17]                                        # storage offset 5
    got, want = native(base), python(base, (3, 4), (1, 3), 5, ((1,), 5), replay)
    assert got.tolist() == want.tolist() == base.view(4, 3).t().tolist()
    assert (got.stride(), got.storage_offset()) == (want.stride(), want.storage_offset())
    assert got._is_view() == (not inside)      # a graph output: autograd's view of base
    for other in (torch.arange(24.0)[::2], torch._neg_view(base)):   # replayed
        assert native(other).tolist() == other.view(4, 3).t().tolist()
    with pytest.raises(RuntimeError):          # the chain's own error, as in eager
        native(torch.arange(5.0))
    leaf = torch.arange(12.0, requires_grad=True)
    if not inside:                             # a view under autograd: gradients flow
        glue.Restride((3, 4), (1, 3), 0, (1,), 0, False, lambda b: None)(leaf).sum().backward()
        assert leaf.grad.tolist() == [1.0] * 12
    with pytest.raises(ValueError, match="one length"):
        glue.Restride((3, 4), (1,), 0, (1,), 0, inside, len)

    def never(_):
        raise AssertionError("replayed a chain on a base laid out as said")

    elsewhere = torch.empty(30, device="meta")[5:17]           # any device: one view
    folded = glue.Restride((3, 4), (1, 3), 5, (1,), 5, inside, never)(elsewhere)
    assert folded.device.type == "meta" and folded.stride() == (1, 3)


@pytest.mark.parametrize("glue", ["native"], indirect=True)
@pytest.mark.parametrize("inside", [False, True], ids=["graph output", "inside"])
def test_a_native_restride_replays_on_tensors_that_are_not_plain_memory(glue, inside):
    """A quantized tensor or a functionalization wrapper is a TensorImpl subclass: an
    alias of it would lose its fields (a crash on q_scale()) or read a null pointer, so
    the chain is replayed on it."""
    restride = glue.Restride((3, 4), (4, 1), 0, (1,), 0, inside, lambda b: b.view(3, 4))
    q = torch.quantize_per_tensor(torch.randn(12), 0.1, 0, torch.quint8)
    y = restride(q)
    assert y.is_quantized and y.q_scale() == pytest.approx(0.1)
    assert y.dequantize().tolist() == q.dequantize().view(3, 4).tolist()
    x = torch.randn(12)
    got = torch.func.functionalize(lambda t: restride(t) + 1)(x)
    assert got.tolist() == (x.view(3, 4) + 1).tolist()
