"""Attention written out (matmul, scale, mask, softmax, matmul) in an inference graph
becomes one fused attention call, with the same results as eager; patterns it must
not take (attention weights read elsewhere, training, scores that fit on chip) stay as
written.

The scores of these small models fit on chip, so most tests take that rule away
(`_fuse_any_size`) to reach the fused call."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import powerfusion as pf  # noqa: E402
import powerfusion.frontend.torch_backend as backend  # noqa: E402
from powerfusion.frontend.torch_backend import collect_graphs as pf_graphs  # noqa: E402

F = torch.nn.functional


# dynamo and the counters reset, torch seeded, around each test (conftest)
pytestmark = pytest.mark.usefixtures("fresh_torch")


ON_CHIP_BYTES = backend.on_chip_bytes         # the rule, for the tests about it


@pytest.fixture(autouse=True)
def _fuse_any_size(monkeypatch):
    monkeypatch.setattr(backend, "on_chip_bytes", lambda gm: 0)


class Attention(torch.nn.Module):
    """Heads split from three projections, as HF's eager attention writes it, then the
    output projection, a residual and a norm: what follows the fused call reads its
    result by strides (it lays it out as [batch, query, head, dim] in memory)."""

    def __init__(self, d=32, heads=4, scale="mul", mask=False, weights=False):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(d, d) for _ in range(3))
        self.proj = torch.nn.Linear(d, d)
        self.norm = torch.nn.LayerNorm(d)
        self.heads, self.scale, self.mask, self.weights = heads, scale, mask, weights

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = (proj(x).view(b, s, self.heads, -1).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2)
        if self.scale == "mul":
            scores = scores * (1 / math.sqrt(d // self.heads))
        elif self.scale == "div":
            scores = scores / math.sqrt(d // self.heads)
        if self.mask:
            causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
            scores = scores + torch.zeros(s, s, dtype=x.dtype).masked_fill(~causal, float("-inf"))
        w = torch.softmax(scores, dim=-1)
        out = self.norm(self.proj((w @ v).transpose(1, 2).reshape(b, s, d)) + x)
        return (out, w) if self.weights else out


@pytest.mark.parametrize("scale, mask, batch", [("mul", False, 1), ("div", True, 3),
                                                 ("none", True, 2)])
def test_attention_becomes_one_fused_call_with_eager_results(scale, mask, batch):
    model = Attention(scale=scale, mask=mask).eval()
    x = torch.randn(batch, 16, 32)
    with torch.no_grad():
        got = torch.compile(model, backend="powerfusion")(x)
        expected = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert pf.compile_stats()["attention"] == 1


def _masked_attention_matches_eager():
    model = Attention(mask=True).eval()
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        got = torch.compile(model, backend="powerfusion")(x)
        expected = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("why", ["the option", "scores on chip"])
def test_attention_stays_as_written_by_the_option_or_the_on_chip_rule(monkeypatch, why):
    if why == "the option":
        monkeypatch.setenv("POWERFUSION_FUSED_ATTENTION", "0")
    else:                                 # the rule itself (the fixture took it away)
        monkeypatch.setattr(backend, "on_chip_bytes", ON_CHIP_BYTES)
    _masked_attention_matches_eager()
    assert pf.compile_stats()["attention"] == 0
    # the softmax is a region still
    assert pf.compile_stats()["fused_by_op"].get("aten._softmax.default", 0) >= 1


@pytest.mark.parametrize("keep, fused", [(2 * 4 * 16 * 16 * 4, 0), (2 * 4 * 16 * 16 * 4 - 1, 1)])
def test_the_rule_fuses_scores_larger_than_what_stays_on_chip(monkeypatch, keep, fused):
    # the scores of Attention() at batch 2: [2, 4 heads, 16, 16] float32
    monkeypatch.setattr(backend, "on_chip_bytes", lambda gm: keep)
    _masked_attention_matches_eager()
    assert pf.compile_stats()["attention"] == fused


def test_on_chip_bytes_are_the_cpu_targets_local_memory_and_none_elsewhere():
    from powerfusion.gir.ir import Level
    from powerfusion.runtime.backends import get_target

    def graph(device):
        gm = torch.fx.symbolic_trace(lambda x: x + 1)
        for n in gm.graph.nodes:
            n.meta["val"] = torch.empty(4, device=device)
        return gm

    target = get_target("cpu")
    assert ON_CHIP_BYTES(graph("cpu")) == target.cores * target.capacity(Level.LOCAL) > 0
    assert ON_CHIP_BYTES(graph("meta")) == 0


def test_attention_weights_read_elsewhere_stay_as_written():
    model = Attention(weights=True).eval()
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        got = torch.compile(model, backend="powerfusion")(x)
        expected = model(x)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    assert pf.compile_stats()["attention"] == 0


def test_training_graphs_keep_attention_and_their_gradients():
    model = Attention(mask=True)
    x = torch.randn(2, 16, 32, requires_grad=True)
    compiled = torch.compile(model, backend="powerfusion")
    compiled(x).sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    x.grad = None
    model.zero_grad()
    model(x).sum().backward()
    expected = [x.grad] + [p.grad for p in model.parameters()]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    assert pf.compile_stats()["attention"] == 0


def test_bfloat16_attention_matches_eager_within_its_precision():
    model = Attention(mask=True).eval().to(torch.bfloat16)
    x = torch.randn(2, 16, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        got = torch.compile(model, backend="powerfusion")(x)
        reference = Attention(mask=True).eval()
        reference.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
        expected = reference(x.float())
    torch.testing.assert_close(got.float(), expected, rtol=3e-2, atol=3e-2)
    assert pf.compile_stats()["attention"] == 1


def _random_attention_cases(n=12, seed=7):
    """Shapes, masks and scale forms drawn at random: cross attention (queries !=
    keys, value width != key width), masks broadcast from [s, l], [1, 1, s, l] or
    [b, 1, s, l], inputs laid out [b, s, h, d] (a reshape traced as a copy) or not."""
    import random

    rng = random.Random(seed)
    for _ in range(n):
        b, h = rng.randint(1, 3), rng.choice([1, 2, 4])
        s, l = rng.choice([1, 5, 16]), rng.choice([1, 7, 16])
        d, dv = rng.choice([4, 8, 16]), rng.choice([4, 8])
        mask = rng.choice([None, (s, l), (1, 1, s, l), (b, 1, s, l)])
        yield b, h, s, l, d, dv, mask, rng.choice(["mul", "div", "none"]), rng.random() < 0.5


@pytest.mark.parametrize("b, h, s, l, d, dv, mask, scale, heads_last",
                         list(_random_attention_cases()))
def test_random_attention_shapes_match_eager(b, h, s, l, d, dv, mask, scale, heads_last):
    def fn(q, k, v, m):
        scores = q @ k.transpose(-1, -2)
        if scale == "mul":
            scores = scores * 0.3
        elif scale == "div":
            scores = scores / 2.5
        if m is not None:
            scores = scores + m
        return torch.softmax(scores, dim=-1) @ v

    def laid_out(*shape):
        if heads_last:                       # [b, s, h, d] in memory, viewed per head
            return torch.randn(shape[0], shape[2], shape[1], shape[3]).transpose(1, 2)
        return torch.randn(*shape)

    q, k, v = laid_out(b, h, s, d), laid_out(b, h, l, d), laid_out(b, h, l, dv)
    m = None if mask is None else torch.randn(*mask)
    with torch.no_grad():
        got = torch.compile(fn, backend="powerfusion")(q, k, v, m)
    torch.testing.assert_close(got, fn(q, k, v, m), rtol=1e-5, atol=1e-5)
    assert pf.compile_stats()["attention"] == 1


class GroupedAttention(torch.nn.Module):
    """Grouped-query attention as HF's LLaMA writes it: fewer key/value heads than
    query heads, each repeated (`repeat_kv`: unsqueeze, expand, reshape) to line up."""

    def __init__(self, d=32, heads=4, kv_heads=2):
        super().__init__()
        self.heads, self.kv_heads, self.dh = heads, kv_heads, d // heads
        self.q = torch.nn.Linear(d, d)
        self.k, self.v = (torch.nn.Linear(d, kv_heads * self.dh) for _ in range(2))
        self.proj = torch.nn.Linear(d, d)

    @staticmethod
    def repeat_kv(x, n):
        b, h, s, dh = x.shape
        return x[:, :, None, :, :].expand(b, h, n, s, dh).reshape(b, h * n, s, dh)

    def forward(self, x, mask):
        b, s, d = x.shape
        q = self.q(x).view(b, s, self.heads, self.dh).transpose(1, 2)
        k, v = (self.repeat_kv(p(x).view(b, s, self.kv_heads, self.dh).transpose(1, 2),
                               self.heads // self.kv_heads) for p in (self.k, self.v))
        w = torch.softmax(q @ k.transpose(2, 3) * self.dh ** -0.5 + mask, dim=-1)
        return self.proj((w @ v).transpose(1, 2).reshape(b, s, d))


@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (4, 1), (4, 4)])
def test_grouped_query_attention_reads_shared_heads_without_copies(heads, kv_heads):
    model = GroupedAttention(heads=heads, kv_heads=kv_heads).eval()
    x = torch.randn(2, 16, 32)
    mask = torch.full((16, 16), float("-inf")).triu(1)[None, None]
    with torch.no_grad(), pf_graphs() as graphs:
        got = torch.compile(model, backend="powerfusion")(x, mask)
        expected = model(x, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert pf.compile_stats()["attention"] == 1
    (_, gm, _), = graphs
    calls = [n for n in gm.graph.nodes
             if n.target is torch.ops.aten.scaled_dot_product_attention.default]
    assert len(calls) == 1
    assert calls[0].kwargs.get("enable_gqa", False) == (kv_heads < heads)
    if kv_heads < heads:                # the repeated keys and values are never made
        assert not any(n.target is torch.ops.aten.expand.default for n in gm.graph.nodes)
