"""torch.compile(model, backend="powerfusion"): models as they are, against eager PyTorch.

The Hugging Face models are built from small configs with random weights (no
downloads). Each compile runs gcc, so the models are kept to one or two layers.
"""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

from powerfusion.frontend.torch_backend import compile_stats, reset_compile_stats

nn = torch.nn


# dynamo and the counters reset, torch seeded, around each test (conftest)
pytestmark = pytest.mark.usefixtures("fresh_torch")


def _compile(model):
    return torch.compile(model, backend="powerfusion")


class MLP(nn.Module):
    def __init__(self, d=32, hidden=64, out=8):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x):
        return torch.softmax(self.fc2(self.act(self.norm(self.fc1(x)))), dim=-1)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()
            if p.grad is not None}


def _assert_grads_close(model, ref, rtol=1e-3, atol=1e-4):
    got = _grads(model)
    assert ref.keys() <= got.keys()
    for name in got.keys() - ref.keys():     # unused parameters: zeros, not None
        assert not got[name].any(), name
    for name, g in ref.items():
        g = got[name]
        scale = max(ref[name].abs().max().item(), 1.0)
        torch.testing.assert_close(g, ref[name], rtol=rtol, atol=atol * scale, msg=name)


def test_backend_is_registered():
    assert "powerfusion" in torch._dynamo.list_backends()


def test_mlp_forward_matches_eager():
    model = MLP().eval()
    x = torch.randn(4, 10, 32)
    with torch.no_grad():
        expected = model(x)
        got = _compile(model)(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    stats = compile_stats()
    assert stats["graphs"] == 1 and stats["kernels"] > 0 and stats["fused_ops"] > 0
    for op in ("aten.native_layer_norm.default", "aten.gelu.default", "aten._softmax.default"):
        assert stats["fused_by_op"].get(op, 0) >= 1, (op, stats)
    assert stats["fallback_ops"] == 0 and stats["library_ops"] >= 2     # the two addmm


def test_mlp_backward_matches_eager():
    model = MLP()
    x = torch.randn(6, 32)
    weights = torch.linspace(-1, 1, 8)
    (model(x) * weights).sum().backward()
    ref = _grads(model)
    model.zero_grad()
    (_compile(model)(x) * weights).sum().backward()
    _assert_grads_close(model, ref)
    stats = compile_stats()
    assert stats["graphs"] == 2          # forward and backward
    assert stats["kernels"] > 0 and stats["fallback_ops"] == 0


def test_the_backward_recomputes_cheap_values_and_gradients_stay_eagers(monkeypatch):
    """AOTAutograd's min-cut partitioner (POWERFUSION_RECOMPUTE, Inductor's choice):
    the forward saves fewer values for the backward, which recomputes views and
    element-wise chains from them; the gradients are eager's either way."""
    from powerfusion.frontend.torch_backend import collect_graphs

    model, loss = _bert_training()
    loss(model).backward()
    ref = _grads(model)
    saved = {}
    for recompute in ("0", "1"):
        monkeypatch.setenv("POWERFUSION_RECOMPUTE", recompute)
        torch._dynamo.reset()
        model.zero_grad()
        with collect_graphs() as graphs:
            loss(_compile(model)).backward()
        _assert_grads_close(model, ref)
        forward = next(gm for kind, gm, _ in graphs if kind == "forward")
        output = next(n for n in forward.graph.nodes if n.op == "output")
        saved[recompute] = len(output.args[0])
    assert saved["1"] < saved["0"], saved


def test_new_shapes_recompile_and_match():
    model = MLP().eval()
    compiled = torch.compile(model, backend="powerfusion", dynamic=False)
    with torch.no_grad():
        for shape in [(3, 32), (5, 7, 32), (3, 32)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


def test_non_contiguous_and_bfloat16_inputs():
    def f(x, y):
        return torch.nn.functional.silu(x.transpose(0, 1) * 2 + y).sum(dim=-1)

    x = torch.randn(16, 12)
    y = torch.randn(12, 16)
    torch.testing.assert_close(_compile(f)(x, y), f(x, y), rtol=1e-5, atol=1e-5)
    xb, yb = x.bfloat16(), y.bfloat16()
    torch.testing.assert_close(_compile(f)(xb, yb), f(xb, yb), rtol=2e-2, atol=2e-2)


class WithCumprod(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(16)

    def forward(self, x):
        return torch.relu(torch.cumprod(self.norm(x), dim=-1)) * 0.5


def test_unknown_op_runs_eagerly_with_one_warning(caplog):
    model = WithCumprod().eval()
    x = torch.randn(3, 16)
    with caplog.at_level(logging.WARNING, logger="powerfusion"), torch.no_grad():
        compiled = _compile(model)
        got = compiled(x)
        got2 = compiled(x)
    torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got2, got)
    warnings = [r for r in caplog.records
                if r.name == "powerfusion" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "cumprod" in warnings[0].getMessage()
    stats = compile_stats()
    assert stats["fallback_by_op"] == {"aten.cumprod.default": 1}
    assert stats["fused_by_op"].get("aten.native_layer_norm.default") == 1


def test_compile_failure_falls_back_with_one_warning(caplog, monkeypatch):
    from powerfusion import compiler

    def broken(*args, **kwargs):
        raise RuntimeError("simulated code generation failure")

    monkeypatch.setattr(compiler, "compile_graph", broken)
    model = MLP().eval()
    x = torch.randn(4, 32)
    with caplog.at_level(logging.WARNING, logger="powerfusion"), torch.no_grad():
        compiled = _compile(model)
        got, again = compiled(x), compiled(x)
    torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, got)
    warnings = [r.getMessage() for r in caplog.records if r.name == "powerfusion"]
    assert len(warnings) == 2            # two regions: LayerNorm+GELU, and softmax
    assert all("simulated code generation failure" in w for w in warnings)
    stats = compile_stats()
    assert stats["fused_ops"] == 0 and stats["fallback_ops"] == 3 and stats["kernels"] == 0


def test_reset_compile_stats():
    with torch.no_grad():
        _compile(MLP().eval())(torch.randn(2, 32))
    assert compile_stats()["graphs"] == 1
    reset_compile_stats()
    stats = compile_stats()
    assert all(stats[k] == 0 for k in ("graphs", "regions", "kernels", "fused_ops",
                                        "fallback_ops", "library_ops"))


# -- Hugging Face transformers ------------------------------------------------------------
def _bert(layers=2):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=128, vocab_size=100, max_position_embeddings=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation="eager")
    return transformers.BertModel(config)


def _gpt2(layers=2):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_embd=64, n_layer=layers, n_head=4, vocab_size=100, n_positions=64,
        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        attn_implementation="eager")
    return transformers.GPT2LMHeadModel(config)


def _llama(layers=2):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, vocab_size=100,
        max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(config)


# per model: ops whose PowerFusion kernels prove normalisation and activation
_EXPECTED = {
    "bert": ["aten.native_layer_norm.default", "aten.gelu.default"],
    "gpt2": ["aten.native_layer_norm.default",
             "aten.tanh.default"],                              # gelu_new, written out
    "llama": ["aten.rsqrt.default", "aten.mean.dim",          # RMSNorm, written out
              "aten.sigmoid.default"],                          # SiLU
}


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_transformers_forward_matches_eager(name):
    model = {"bert": _bert, "gpt2": _gpt2, "llama": _llama}[name]().eval()
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        expected = model(input_ids=ids)[0]
        got = _compile(model)(input_ids=ids)[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    stats = compile_stats()
    assert stats["kernels"] > 0 and stats["fused_ops"] > 0
    for op in _EXPECTED[name]:
        assert stats["fused_by_op"].get(op, 0) >= 1, (op, stats)
    # scores this small stay on chip, as written (test_torch_attention.py); the
    # softmax is a PowerFusion region then
    assert stats["attention"] == 0
    if name != "llama":                  # this LLaMA calls PyTorch's attention itself
        assert stats["fused_by_op"].get("aten._softmax.default", 0) >= 2, stats
    assert stats["library_ops"] > 0      # the matmuls stayed with PyTorch


def _bert_training():
    """A one-layer BERT to train and a loss weighing each of its outputs differently."""
    model = _bert(layers=1).train()
    ids = torch.randint(0, 100, (2, 12))
    weights = torch.linspace(-1, 1, 64)

    def loss(m):
        return (m(input_ids=ids)[0] * weights).sum()

    return model, loss


def test_transformers_backward_matches_eager():
    model, loss = _bert_training()
    loss(model).backward()
    ref = _grads(model)
    model.zero_grad()
    loss(_compile(model)).backward()
    _assert_grads_close(model, ref)
    stats = compile_stats()
    assert stats["graphs"] == 2 and stats["kernels"] > 0
    assert stats["fused_by_op"].get("aten._softmax.default", 0) >= 1


# -- torch's semantics where they differ from numpy's --------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_reductions_accumulate_in_float32(dtype):
    """As PyTorch's kernels: a 16-bit sum adds in float32 and rounds once (in 16 bits,
    a sum of 4096 ones stops at 256 in bfloat16 and at 2048 in float16)."""
    ones = torch.ones(4096, 3, dtype=dtype)
    shifted = (torch.randn(4096, 3) + 4).to(dtype)
    for fn, x in [(lambda x: x.sum(0), ones), (lambda x: x.sum(0), shifted),
                  (lambda x: x.sum_to_size(1, 3), ones), (lambda x: x.mean(0), shifted),
                  (lambda x: x.sum(), shifted), (lambda x: x.var(0), shifted),
                  (lambda x: torch.var_mean(x, 0), shifted)]:
        torch._dynamo.reset()
        got = torch.compile(fn, backend="powerfusion", dynamic=False)(x)
        torch.testing.assert_close(got, fn(x), rtol=1e-2, atol=1e-2)
    assert torch.compile(lambda x: x.sum(0), backend="powerfusion")(ones)[0].item() == 4096
    stats = compile_stats()
    assert stats["failed_regions"] == 0 and stats["kernels"] > 0, stats


@pytest.mark.filterwarnings("ignore::UserWarning")      # var() of one element
def test_zero_dim_reductions_take_dim_0_and_minus_1():
    """torch lets a 0-d tensor be reduced over dim 0 or -1 (numpy has no such axis)."""
    def f(x):
        return (x.sum(0), x.mean(-1, keepdim=True), x.amax(0), x.amin(-1),
                torch.softmax(x, 0), torch.log_softmax(x, -1), x.var(0), x.any(0),
                x.all(-1), x.sum([0]))

    x = torch.tensor(3.0)
    got = _compile(f)(x)
    for g, e in zip(got, f(x)):
        torch.testing.assert_close(g, e, equal_nan=True)
    stats = compile_stats()
    assert stats["failed_regions"] == 0 and stats["fallback_ops"] == 0, stats


def test_constant_tensors_feed_concatenation_and_reductions():
    def f(x):
        return torch.cat([x, torch.zeros(2, 2)], 1) * 2, x + torch.full((2, 3), 5.0).sum(0)

    x = torch.randn(2, 3)
    for g, e in zip(_compile(f)(x), f(x)):
        torch.testing.assert_close(g, e)
    torch._dynamo.reset()
    torch.testing.assert_close(_compile(torch.block_diag)(x, x), torch.block_diag(x, x))
    stats = compile_stats()
    assert stats["failed_regions"] == 0 and stats["kernels"] > 0, stats


@pytest.mark.filterwarnings("ignore::UserWarning")      # var() of nothing
@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (2, 0, 4)])
def test_zero_size_tensors_match_eager(shape):
    """A tensor with no elements: what is computed from it is known without a kernel
    (nothing, or a reduction's value over nothing), so the region never fails."""
    def f(x):
        return (torch.sigmoid(x) * 2 + 1, x.sum(-1) + 1, x.sum(0), x.mean(0), x.var(-1),
                x.any(0), x.all(-1), torch.cat([x, x + 1], 0), torch.softmax(x, -1),
                torch.cat([x.reshape(-1), torch.ones(2)]) * 2)

    x = torch.randn(*shape)
    for g, e in zip(_compile(f)(x), f(x)):
        torch.testing.assert_close(g, e, equal_nan=True)
    stats = compile_stats()
    assert stats["failed_regions"] == 0 and stats["fallback_ops"] == 0, stats


def test_results_keep_pytorchs_layout_and_identity():
    """The lean CPU path: a value returned twice is one tensor as in eager (writing it
    is seen through both), a transposed result has PyTorch's strides, and a result
    shaped otherwise than its buffer is a view of it."""
    def fn(x):
        y = torch.exp(x) * 2
        return y, y, (x + 1).t(), (x - 1).reshape(4, 2, 8)

    compiled = torch.compile(fn, backend="powerfusion")
    x = torch.randn(8, 8)
    got, expected = compiled(x), fn(x)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
        assert g.stride() == e.stride()
    assert (got[0] is got[1]) == (expected[0] is expected[1])
    got[0].zero_()
    expected[0].zero_()
    torch.testing.assert_close(got[1], expected[1])


def test_threads_share_a_compiled_model():
    import concurrent.futures

    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32)).eval()
    compiled = torch.compile(model, backend="powerfusion")
    inputs = [torch.randn(4, 16) for _ in range(16)]
    with torch.no_grad():
        compiled(inputs[0])
        expected = [model(x) for x in inputs]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda x: compiled(x), inputs * 8))
    for g, e in zip(got, expected * 8):
        torch.testing.assert_close(g, e)


def test_outputs_are_host_memory_whatever_the_default_device():
    """Kernels write through data_ptr(): outputs must be CPU tensors even when the
    default device is another (meta here; cuda on a GPU machine) -- once a segfault."""
    def fn(x):
        return torch.relu(x) * 2 + 1

    compiled = torch.compile(fn, backend="powerfusion")
    x = torch.randn(16, 16)
    compiled(x)
    torch.set_default_device("meta")
    try:
        got = compiled(x)
    finally:
        torch.set_default_device("cpu")
    assert got.device.type == "cpu"
    torch.testing.assert_close(got, fn(x))
