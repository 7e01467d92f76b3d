"""What a graph computes from no input is computed once at compile time: the same
results as eager, and never a value something could write (graph outputs, in-place
ops, views of those) nor anything random, large or symbolic."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

import powerfusion as pf  # noqa: E402
from powerfusion.frontend.torch_backend import constants  # noqa: E402
from powerfusion.frontend.torch_backend.constants import fold_constants  # noqa: E402

aten = torch.ops.aten


# dynamo and the counters reset, torch seeded, around each test (conftest)
pytestmark = pytest.mark.usefixtures("fresh_torch")


def _traced(fn, *args):
    return make_fx(fn, tracing_mode="fake")(*args)


def _calls(gm, *ops):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in ops]


def _causal_softmax(x):
    """A causal mask built the way HF's LLaMA builds it: aranges, comparisons, where."""
    s = x.shape[-1]
    q, k = torch.arange(s), torch.arange(s)
    allowed = k[None, :] <= q[:, None]
    mask = torch.where(allowed, torch.tensor(0.0), torch.tensor(float("-inf")))
    return torch.softmax(x * 0.125 + mask, dim=-1)


def test_a_mask_from_aranges_is_one_constant_with_eager_results():
    x = torch.randn(2, 4, 16, 16)
    gm = _traced(_causal_softmax, x)
    assert _calls(gm, aten.arange.start_step, aten.arange.default)
    assert fold_constants(gm) == 1
    assert not _calls(gm, aten.arange.start_step, aten.arange.default, aten.le.Tensor,
                      aten.where.self)
    assert [n.op for n in gm.graph.nodes].count("get_attr") == 1
    torch.testing.assert_close(gm(x), _causal_softmax(x), rtol=0, atol=0)
    y = torch.randn(2, 4, 16, 16)                       # another call, other values
    torch.testing.assert_close(gm(y), _causal_softmax(y), rtol=0, atol=0)


def test_compiled_models_fold_their_masks_and_match_eager():
    def fn(x):
        return _causal_softmax(x) @ x

    compiled = torch.compile(fn, backend="powerfusion")
    for _ in range(3):                                    # first call, then lean path
        x = torch.randn(2, 4, 16, 16)
        torch.testing.assert_close(compiled(x), fn(x), rtol=1e-5, atol=1e-6)
    assert pf.compile_stats()["constants"] >= 1


def test_a_returned_constant_stays_a_fresh_tensor_each_call():
    def fn(x):
        ids = torch.arange(8) * 2
        return ids, x + ids

    compiled = torch.compile(fn, backend="powerfusion")
    x = torch.randn(8)
    ids, _ = compiled(x)
    ids.add_(100)                                          # the caller writes its result
    ids2, y = compiled(x)
    torch.testing.assert_close(ids2, torch.arange(8) * 2)
    torch.testing.assert_close(y, x + torch.arange(8) * 2)
    assert ids2.data_ptr() != ids.data_ptr()


def test_a_constant_an_op_writes_in_place_is_not_folded():
    def fn(x, index):
        # an accumulating scatter into zeros (embedding's backward): made in place
        return torch.zeros(8, 4).index_put((index,), x, accumulate=True)

    x, index = torch.randn(3, 4), torch.tensor([1, 5, 1])
    compiled = torch.compile(fn, backend="powerfusion")
    for _ in range(3):                                     # each call from zeros again
        torch.testing.assert_close(compiled(x, index), fn(x, index))


def test_views_of_a_written_value_keep_its_base_unfolded():
    """base -> view (both constant); the view is written in place: neither folds."""
    g = torch.fx.Graph()
    x = g.placeholder("x")
    base = g.call_function(aten.arange.default, (6,), {"dtype": torch.float32})
    view = g.call_function(aten.view.default, (base, [2, 3]))
    g.output(g.call_function(aten.add_.Tensor, (view, x)))
    gm = torch.fx.GraphModule(torch.nn.Module(), g)
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp
    FakeTensorProp(gm, FakeTensorMode()).propagate(torch.ones(2, 3))
    assert fold_constants(gm) == 0
    torch.testing.assert_close(gm(torch.ones(2, 3)), torch.arange(6.0).view(2, 3) + 1)


def test_random_values_are_drawn_on_every_call():
    def fn(x):
        return x + torch.rand(16)

    compiled = torch.compile(fn, backend="powerfusion")
    x = torch.zeros(16)
    assert not torch.equal(compiled(x), compiled(x))


def test_values_over_the_size_bound_stay_in_the_graph(monkeypatch):
    x = torch.randn(2, 4, 16, 16)
    gm = _traced(_causal_softmax, x)
    monkeypatch.setattr(constants, "MAX_BYTES", 16 * 16 - 1)   # the [16, 16] mask: 1 KB
    folded = fold_constants(gm)
    # the aranges and their [16] or [1, 16] views still fit; nothing of [16, 16] does
    assert all(getattr(gm, n.target).numel() <= 16 for n in gm.graph.nodes
               if n.op == "get_attr")
    assert _calls(gm, aten.where.self) and folded >= 0
    torch.testing.assert_close(gm(x), _causal_softmax(x), rtol=0, atol=0)


def test_creation_ops_powerfusion_splats_are_not_folded_alone():
    def fn(x):
        return x * torch.full((), 3.0)

    gm = _traced(fn, torch.randn(4))
    assert fold_constants(gm) == 0
    assert _calls(gm, aten.full.default)


def test_transformers_llama_folds_its_mask_and_matches_eager():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=100, max_position_embeddings=64,
        attn_implementation="eager")
    model = transformers.LlamaModel(config).eval()
    ids = torch.randint(0, 100, (1, 12))
    with torch.no_grad():
        expected = model(input_ids=ids)[0]
        compiled = torch.compile(model, backend="powerfusion")
        for _ in range(2):
            torch.testing.assert_close(compiled(input_ids=ids)[0], expected,
                                       rtol=1e-4, atol=1e-4)
    stats = pf.compile_stats()
    assert stats["constants"] >= 1 and stats["fallback_ops"] == 0


def test_a_failure_to_fold_leaves_the_graph_computing_them(monkeypatch, caplog):
    def broken(gm):
        raise RuntimeError("boom")

    import powerfusion.frontend.torch_backend as backend
    monkeypatch.setattr(backend, "fold_constants", broken)

    def fn(x):
        return _causal_softmax(x) @ x

    x = torch.randn(2, 4, 16, 16)
    with caplog.at_level("WARNING", logger="powerfusion"):
        got = torch.compile(fn, backend="powerfusion")(x)
    torch.testing.assert_close(got, fn(x), rtol=1e-5, atol=1e-6)
    assert "folding failed: RuntimeError: boom" in caplog.text
    stats = pf.compile_stats()
    assert stats["constants"] == 0 and stats["fused_ops"] > 0   # regions all the same
