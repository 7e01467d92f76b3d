"""Scatters into fresh tensors run in place: the same values, no copy of the base."""

import pytest

torch = pytest.importorskip("torch")
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

from powerfusion.frontend.torch_backend.inplace import reinplace_fresh  # noqa: E402

aten = torch.ops.aten


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_a_fresh_base_is_scattered_in_place():
    def grad_of_embedding(idx, vals):
        return aten.index_put(torch.zeros(10, 4), [idx], vals, True)

    idx, vals = torch.tensor([1, 3, 1]), torch.randn(3, 4)
    gm = make_fx(grad_of_embedding)(idx, vals)
    assert reinplace_fresh(gm) == 1
    assert aten.index_put_.default in _targets(gm)
    assert aten.index_put.default not in _targets(gm)
    torch.testing.assert_close(gm(idx, vals), grad_of_embedding(idx, vals))


def test_a_base_someone_else_reads_is_left_functional():
    def both(idx, vals):
        base = torch.zeros(10, 4)
        return aten.index_put(base, [idx], vals, True), base + 1

    idx, vals = torch.tensor([0, 2]), torch.randn(2, 4)
    gm = make_fx(both)(idx, vals)
    assert reinplace_fresh(gm) == 0
    got, expected = gm(idx, vals), both(idx, vals)
    torch.testing.assert_close(got[1], expected[1])      # the base itself unchanged
    torch.testing.assert_close(got[0], expected[0])


def test_an_input_base_is_left_functional():
    def scatter(base, idx, vals):
        return aten.index_put(base, [idx], vals, True)

    base, idx, vals = torch.zeros(6, 2), torch.tensor([1]), torch.ones(1, 2)
    gm = make_fx(scatter)(base, idx, vals)
    assert reinplace_fresh(gm) == 0
    gm(base, idx, vals)
    assert base.abs().sum() == 0                          # the caller's tensor untouched


def test_embedding_training_through_the_backend():
    import powerfusion as pf

    emb = torch.nn.Embedding(1000, 16)
    ids = torch.randint(0, 1000, (4, 8))
    pf.reset_compile_stats()
    torch._dynamo.reset()
    compiled = torch.compile(emb, backend="powerfusion")
    from powerfusion.frontend.torch_backend import collect_graphs
    from powerfusion.frontend.torch_backend.inplace import index_add_rows

    with collect_graphs() as graphs:
        compiled(ids).pow(2).sum().backward()
    assert any(n.target is index_add_rows for _, gm, _ in graphs for n in gm.graph.nodes)
    got = emb.weight.grad.clone()
    emb.weight.grad = None
    emb(ids).pow(2).sum().backward()
    torch.testing.assert_close(got, emb.weight.grad)
    assert pf.compile_stats()["fallback_ops"] == 0


@pytest.mark.parametrize("index", [torch.tensor([1, 3, 1, -1]), torch.tensor([[0, 9], [9, -10]]),
                                   torch.tensor([], dtype=torch.int64),
                                   torch.tensor([2, 2], dtype=torch.int32)])
def test_an_accumulating_index_put_over_rows_runs_as_index_add(index):
    from powerfusion.frontend.torch_backend.inplace import add_rows, index_add_rows

    def grad_of_embedding(idx, vals):
        return aten.index_put_(torch.zeros(10, 4), [idx], vals, True)

    vals = torch.randn(*index.shape, 4)
    gm = make_fx(grad_of_embedding, tracing_mode="fake")(index, vals)
    assert add_rows(gm) == 1
    assert index_add_rows in _targets(gm) and aten.index_put_.default not in _targets(gm)
    # repeated and negative indices accumulate as index_put's
    torch.testing.assert_close(gm(index, vals), grad_of_embedding(index, vals))


def test_index_puts_index_add_cannot_do_are_left_alone():
    from powerfusion.frontend.torch_backend.inplace import add_rows

    def overwrite(idx, vals):                              # accumulate=False
        return aten.index_put_(torch.zeros(10, 4), [idx], vals, False)

    def two_indices(i, j, vals):
        return aten.index_put_(torch.zeros(10, 4), [i, j], vals, True)

    def broadcast(idx, row):                               # values broadcast over idx
        return aten.index_put_(torch.zeros(10, 4), [idx], row, True)

    def by_mask(mask, vals):
        return aten.index_put_(torch.zeros(10, 4), [mask], vals, True)

    idx = torch.tensor([1, 3])
    cases = [(overwrite, (idx, torch.randn(2, 4))),
             (two_indices, (idx, torch.tensor([0, 2]), torch.randn(2))),
             (broadcast, (idx, torch.randn(4))),
             (by_mask, (torch.arange(10) % 3 == 0, torch.randn(4, 4)))]
    for fn, args in cases:
        gm = make_fx(fn, tracing_mode="fake")(*args)
        assert add_rows(gm) == 0, fn.__name__
