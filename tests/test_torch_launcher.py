"""After a graph's first call each region with a lean path runs through a generated
function (or the native glue's Launch) called straight from the graph's code: same
results as eager, back to `Region.forward` for any other signature, and to eager for
good when its kernels fail."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

from powerfusion.frontend.torch_backend import Region, collect_graphs  # noqa: E402
from powerfusion.frontend.torch_backend.launcher import lean_function, native_lean  # noqa: E402
from powerfusion.frontend.torch_backend import region as region_module  # noqa: E402


# dynamo and the counters reset, torch seeded, around each test (conftest)
pytestmark = pytest.mark.usefixtures("fresh_torch")


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 64)
        self.norm = torch.nn.LayerNorm(64)

    def forward(self, x):
        h = self.norm(torch.nn.functional.gelu(self.fc(x)) + x)
        return torch.softmax(self.fc(h) * 0.5, dim=-1), h.t()


def _lean_calls(gm):
    return [n for n in gm.graph.nodes
            if n.op == "call_function" and isinstance(getattr(n.target, "region", None), Region)]


def test_the_graph_calls_lean_functions_after_its_first_call_and_matches_eager(glue):
    model = Block().eval()
    compiled = torch.compile(model, backend="powerfusion")
    inputs = [torch.randn(32, 64) for _ in range(4)]
    with torch.no_grad(), collect_graphs() as graphs:
        first = compiled(inputs[0])                 # runs the regions, then specialises
        results = [compiled(x) for x in inputs]
    (_, gm, _), = graphs
    assert len(_lean_calls(gm)) >= 2
    natives = [n for n in _lean_calls(gm) if type(n.target).__name__ == "Launch"]
    assert len(natives) == (0 if glue is None else len(_lean_calls(gm)))
    for x, got in zip(inputs, results):             # every result held: none rewritten
        for g, e in zip(got, model(x)):
            torch.testing.assert_close(g, e)
            assert g.stride() == e.stride()
    for g, e in zip(first, model(inputs[0])):
        torch.testing.assert_close(g, e)


def _region(fn, *args):
    region = Region(make_fx(fn, tracing_mode="fake")(*args), "lean_test")
    region(*args)
    return region


@pytest.mark.parametrize("guards", ["dynamo's tensor guards", "python checks"])
def test_a_lean_function_sends_another_layout_back_to_the_region(guards, monkeypatch):
    if guards == "python checks":        # a torch without TorchDynamo's TensorGuards
        monkeypatch.setattr(region_module, "_TensorGuards", None)

    def fn(x, y):
        return torch.tanh(x) + y, (x * y).sum(-1)

    x, y = torch.randn(8, 16), torch.randn(16)
    region = _region(fn, x, y)
    lean = lean_function(region)
    check = "guard(a0, a1)" if guards != "python checks" else "a0.stride() == T0"
    assert check in lean.source
    # each while the region's last signature is (x, y)'s: the lean path's to refuse
    for args in [(x, y), (torch.randn(16, 8).t(), y), (x, y), (torch._neg_view(x), y),
                 (x, y), (torch.randn(3, 16), y)]:
        for g, e in zip(lean(*args), fn(*args)):
            torch.testing.assert_close(g, e)


def test_a_lean_function_whose_kernel_fails_gives_up_for_good(caplog):
    def fn(x):
        return torch.exp(x) * 3

    x = torch.randn(4, 4)
    region = _region(fn, x)
    lean = lean_function(region)

    def broken(_pointers):
        raise OSError("the kernel's library went away")

    lean.__globals__["K0"] = broken
    with caplog.at_level(logging.WARNING, logger="powerfusion"):
        torch.testing.assert_close(lean(x), fn(x))
    assert region.failed and region.hot is None
    assert "the kernel's library went away" in caplog.text
    torch.testing.assert_close(lean(x), fn(x))      # eager from now on
    assert lean_function(region) is None


def test_pieces_of_a_split_are_picked_outside_and_every_region_runs_lean(glue):
    """GPT-2's attention input is one projection split into q, k, v; the partitioner
    put the split's pieces in the region that builds the causal mask, which returned
    them untouched - a list argument, so that region never ran its lean path."""
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2Model(transformers.GPT2Config(
        n_embd=32, n_head=2, n_layer=1, vocab_size=100, n_positions=64, use_cache=False,
        attn_implementation="eager")).eval()
    compiled = torch.compile(model, backend="powerfusion")
    ids = torch.randint(0, 100, (2, 16))
    with torch.no_grad(), collect_graphs() as graphs:
        expected = model(input_ids=ids).last_hidden_state
        for _ in range(3):
            got = compiled(input_ids=ids).last_hidden_state
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    (_, gm, _), = graphs
    assert _lean_calls(gm)
    assert not [n for n in gm.graph.nodes if n.op == "call_module"
                and isinstance(gm.get_submodule(n.target), Region)]


def test_copies_and_constants_among_the_results_run_lean_in_pooled_memory():
    """A backward's zero gradient of an embedding table is a constant result of its
    region, filled every step: made fresh each call it maps new pages (a page fault
    per 4 KB), so such results, and copies of arguments, come from the region's pool;
    a result the caller still holds is never handed out again."""
    def fn(x, y):
        return torch.full((64, 32), 0.0), torch.exp(x) + y, x.clone(), y

    x, y = torch.randn(32, 64), torch.randn(64)
    region = _region(fn, x, y)
    assert [spec[0] for spec in region.hot[1].outputs] == ["full", "graph", "copy", "arg"]
    lean = lean_function(region)
    assert lean is not None and "fill_" in lean.source and "copy_" in lean.source
    held = lean(x, y)
    zeros = held[0].data_ptr()
    held[0].fill_(7.0)                               # the caller writes its zeros
    for _ in range(3):
        x2 = torch.randn(32, 64)
        got = lean(x2, y)
        for g, e in zip(got, fn(x2, y)):
            torch.testing.assert_close(g, e)
            assert g.stride() == e.stride()
        assert got[3] is y
        assert got[0].data_ptr() != zeros            # the held one is not reused
        del got
    assert bool((held[0] == 7.0).all())              # nor rewritten
    pool = region.hot[1].fast.pool
    before = {k.base.data_ptr() for kept in pool.kept.values() for k in kept}
    reused = {lean(x, y)[0].data_ptr() for _ in range(3)}
    assert reused <= before                          # dropped each time: kept memory
    assert before == {k.base.data_ptr() for kept in pool.kept.values() for k in kept}


def test_a_region_that_only_copies_an_argument_runs_lean():
    """The attention output of a training graph laid out again for the projection: a
    region of one clone, no kernel."""
    def fn(x):
        return x.clone(memory_format=torch.contiguous_format)

    x = torch.randn(8, 4, 16).permute(1, 0, 2)
    region = _region(fn, x)
    assert region.hot[1].executable is None
    lean = lean_function(region)
    assert lean is not None and "copy_" in lean.source
    for args in [(x,), (torch.randn(8, 4, 16).permute(1, 0, 2),), (torch.randn(4, 8, 16),)]:
        got, expected = lean(*args), fn(*args)
        torch.testing.assert_close(got, expected)
        assert got.is_contiguous()


# -- the native glue's Launch ---------------------------------------------------------
def _native(glue, region):
    return native_lean(region, glue.Pool(), glue)


@pytest.mark.parametrize("glue", ["native"], indirect=True)
def test_a_native_launch_sends_another_layout_back_to_the_region(glue):
    def fn(x, y):
        return torch.tanh(x) + y, (x * y).sum(-1), y

    x, y = torch.randn(8, 16), torch.randn(16)
    region = _region(fn, x, y)
    launch = _native(glue, region)
    assert launch is not None
    for args in [(x, y), (torch.randn(16, 8).t(), y), (x, y), (torch._neg_view(x), y),
                 (x, y), (torch.randn(3, 16), y), (x.double(), y.double()), (x, y)]:
        got = launch(*args)
        for g, e in zip(got, fn(*args)):
            torch.testing.assert_close(g, e)
            # (another layout goes through the region, laid out as its trace says)
            assert g.stride() == e.stride() or args[0] is not x
        assert got[2] is args[1]                 # an argument returned as it is


class _Logged(torch.Tensor):
    """A tensor subclass that dispatches through Python (as a fake tensor does)."""

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        unwrap = lambda t: t.as_subclass(torch.Tensor) if isinstance(t, _Logged) else t  # noqa: E731
        return func(*torch.utils._pytree.tree_map(unwrap, args),
                    **torch.utils._pytree.tree_map(unwrap, kwargs or {}))


@pytest.mark.parametrize("glue", ["native"], indirect=True)
def test_a_native_launch_leaves_tensors_that_dispatch_through_python_to_the_region(glue):
    def fn(x, y):
        return torch.exp(x) * y

    x, y = torch.randn(8, 16), torch.randn(16)
    region = _region(fn, x, y)
    launch = _native(glue, region)
    got = launch(x.as_subclass(_Logged), y)
    torch.testing.assert_close(got.as_subclass(torch.Tensor), fn(x, y))
    with torch.inference_mode():              # another dispatch key set: still its values
        torch.testing.assert_close(launch(x.clone(), y), fn(x, y))
    torch.testing.assert_close(launch(x, y), fn(x, y))


@pytest.mark.parametrize("glue", ["native"], indirect=True)
def test_a_native_launch_sends_a_functionalized_tensor_to_the_region(glue):
    """A functionalization wrapper has the layout the launch checks but no data pointer
    of its own (null): the launch hands it to the region's own path, never the kernels.
    (Only a region called by hand sees one: dynamo refuses to compile a function under
    functionalize, and calls of a compiled one there compile again.)"""
    def fn(x):
        return torch.exp(x) * 3

    x = torch.randn(4, 4)
    region = _region(fn, x)
    handed = []

    def forward(*args):
        handed.append(args)
        return fn(*args)

    region.forward = forward             # what the launch calls for what it will not run
    launch = _native(glue, region)
    got = torch.func.functionalize(lambda t: launch(t) + 1)(x)
    torch.testing.assert_close(got, fn(x) + 1)
    assert len(handed) == 1
    torch.testing.assert_close(launch(x), fn(x))
    assert len(handed) == 1

@pytest.mark.parametrize("glue", ["native"], indirect=True)
def test_a_native_launch_lays_out_permuted_and_repeated_results_as_eager(glue):
    def fn(x):
        y = torch.exp(x)
        return y.t().contiguous().t(), y, y * 2

    x = torch.randn(16, 24)
    region = _region(fn, x)
    launch = _native(glue, region)
    assert launch is not None
    for _ in range(3):
        got = launch(x)
        for g, e in zip(got, fn(x)):
            torch.testing.assert_close(g, e)
            assert g.stride() == e.stride()
        assert len({g.data_ptr() for g in got}) == 3     # never one memory twice


@pytest.mark.parametrize("glue", ["native"], indirect=True)
def test_a_native_launch_returns_a_scalar_as_a_scalar(glue):
    """A 0-dim result (a full sum, here returned twice) is laid out as eager's: shape (),
    not its kernel buffer's (1, 1)."""
    def fn(x):
        s = (x * 2).sum()
        return s, s

    x = torch.randn(8, 16)
    region = _region(fn, x)
    for lean in (lean_function(region), _native(glue, region)):
        assert lean is not None
        for _ in range(2):
            got = lean(x)
            for g, e in zip(got, fn(x)):
                assert g.shape == e.shape == ()
                torch.testing.assert_close(g, e)
            assert got[0].data_ptr() != got[1].data_ptr()

@pytest.mark.parametrize("glue", ["native"], indirect=True)
def test_a_native_launch_whose_memory_fails_gives_up_for_good(glue, caplog):
    def fn(x):
        return torch.exp(x) * 3

    x = torch.randn(4, 4)
    region = _region(fn, x)
    layouts, compiled, _ = region.hot
    launch = compiled.cpu_launch
    # an allocation torch refuses (a negative size): the same failure as memory running out
    taker = glue.Pool().taker([((-1,), torch.float32)])
    broken = glue.Launch(region, region.hot, region.forward, region.give_up_running, taker,
                         [(tuple(s), tuple(t), d) for s, t, d in layouts],
                         [(0x1, [0])], [("kernel", 0, (4, 4), (4, 1), False)], True)
    with caplog.at_level(logging.WARNING, logger="powerfusion"):
        torch.testing.assert_close(broken(x), fn(x))
    assert region.failed and region.hot is None
    assert "negative" in caplog.text
    torch.testing.assert_close(broken(x), fn(x))      # eager from now on
    assert native_lean(region, glue.Pool(), glue) is None
    assert launch is not None


@pytest.mark.parametrize("glue", ["native"], indirect=True)
@pytest.mark.parametrize("bad, message", [
    ({"kernels": [(0x1, [5])]}, "slot out of range"),
    ({"kernels": [(0, [0])]}, "null function"),
    ({"results": [("kernel", 3, (4,), (1,), False)]}, "results"),
    ({"results": [("arg", 2)]}, "results"),
    ({"results": [("kernel", 0, (4, 4), (1,), False)]}, "results"),
    ({"inputs": [((4, 4), (4, 1), "float32")]}, "torch.dtype"),
])
def test_a_native_launch_refuses_a_malformed_description(glue, bad, message):
    region = _region(lambda x: torch.exp(x), torch.randn(4, 4))
    spec = {"inputs": [((4, 4), (4, 1), torch.float32)], "kernels": [(0x1, [0, 1])],
            "results": [("kernel", 0, (4, 4), (4, 1), False)]} | bad
    taker = glue.Pool().taker([((4, 4), torch.float32)])
    with pytest.raises((TypeError, ValueError), match=message):
        glue.Launch(region, region.hot, region.forward, region.give_up_running, taker,
                    spec["inputs"], spec["kernels"], spec["results"], True)
