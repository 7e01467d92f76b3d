"""Matmuls a compiled graph leaves to PyTorch write into pooled memory (no page faults
for a fresh result every step): memory nobody holds is written again, memory anyone
still reads never is, and the values and gradients are eager's."""

from __future__ import annotations

import concurrent.futures

import pytest

torch = pytest.importorskip("torch")

from powerfusion.frontend.torch_backend import collect_graphs  # noqa: E402
from powerfusion.frontend.torch_backend.library_outputs import (  # noqa: E402
    MIN_BYTES,
    pool_library_outputs,
    pooled_call,
)
from powerfusion.frontend.torch_backend.tensor_pool import TensorPool  # noqa: E402


# dynamo and the counters reset, torch seeded, around each test (conftest)
pytestmark = pytest.mark.usefixtures("fresh_torch")


def _mlp():
    torch.manual_seed(0)
    # addmm [128, 1024] and mm [128, 256] results: both above MIN_BYTES
    return torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(),
                               torch.nn.Linear(1024, 256, bias=False))


def _pooled_ops(graphs) -> list:
    return sorted(str(n.target.library_op) for _, gm, _ in graphs for n in gm.graph.nodes
                  if n.op == "call_function" and hasattr(n.target, "library_op"))


def test_matmul_results_are_reused_once_dropped_and_never_while_held(glue):
    model = _mlp()
    compiled = torch.compile(model, backend="powerfusion")
    a, b, c = (torch.randn(128, 256) for _ in range(3))
    with torch.no_grad(), collect_graphs() as graphs:
        compiled(a)                            # the first call specialises the graph
        assert _pooled_ops(graphs) == ["aten.addmm.default", "aten.mm.default"]
        first = compiled(a)
        address = first.data_ptr()
        del first
        second = compiled(b)                   # the last matmul writes the result
        assert second.data_ptr() == address
        third = compiled(c)                    # second is held: other memory
        assert third.data_ptr() != address
        for _ in range(3):
            compiled(a)
        torch.testing.assert_close(second, model(b))
        torch.testing.assert_close(third, model(c))


def test_training_steps_give_eagers_gradients_with_pooled_matmuls(glue):
    model = _mlp()
    compiled = torch.compile(model, backend="powerfusion")
    x = torch.randn(128, 256)
    with collect_graphs() as graphs:
        for _ in range(3):                     # gradients accumulate into .grad
            compiled(x).square().mean().backward()
    got = [p.grad.clone() for p in model.parameters()]
    # forward and backward both have pooled matmuls (the weights' gradients among them)
    pooled = {kind for kind, gm, _ in graphs
              if any(hasattr(n.target, "library_op") for n in gm.graph.nodes)}
    assert pooled == {"forward", "backward"}
    model.zero_grad()
    for _ in range(3):
        model(x).square().mean().backward()
    for g, want in zip(got, (p.grad for p in model.parameters())):
        torch.testing.assert_close(g, want)


def test_threads_running_pooled_matmuls_each_get_their_own_memory(glue):
    model = _mlp()
    compiled = torch.compile(model, backend="powerfusion")
    inputs = [torch.randn(128, 256) for _ in range(8)]
    with torch.no_grad():
        expected = [model(x) for x in inputs]
        compiled(inputs[0])

        def check(k):
            for _ in range(15):
                got = compiled(inputs[k])
                torch.testing.assert_close(got, expected[k])
                del got
            return True

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert all(pool.map(check, range(len(inputs))))


def _pool(glue):
    return TensorPool() if glue is None else glue.Pool()


def test_only_large_contiguous_cpu_matmuls_are_pooled(glue):
    from torch.fx.experimental.proxy_tensor import make_fx

    def fn(x, w, small):
        return torch.mm(x, w), torch.mm(small, small), torch.mm(x, w).t()

    big = MIN_BYTES // 4 // 64                 # rows of a [rows, 64] float32 result
    x, w, small = torch.randn(big, 32), torch.randn(32, 64), torch.randn(8, 8)
    gm = make_fx(fn, tracing_mode="fake", pre_dispatch=False)(x, w, small)
    gm.graph.eliminate_dead_code()
    assert pool_library_outputs(gm, _pool(glue), glue) == 2   # the big ones, not the 8x8
    gm.recompile()
    got = gm(x, w, small)
    want = fn(x, w, small)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e)


def test_a_call_the_out_variant_refuses_runs_as_written(glue):
    call = pooled_call(torch.ops.aten.mm.default, (4, 4), torch.float32, _pool(glue), glue)
    a = torch.randn(4, 4, requires_grad=True)
    b = torch.randn(4, 4)
    out = call(a, b)                           # out= refuses autograd: mm as written
    assert out.grad_fn is not None
    out.sum().backward()
    torch.testing.assert_close(a.grad, b.sum(1).expand(4, 4))
    with torch.no_grad():
        torch.testing.assert_close(call(a, b), a @ b)


def test_advise_prices_a_pooled_matmul_as_the_library_call_it_is(glue):
    import powerfusion as pf

    advice = pf.advise(_mlp().eval(), (torch.randn(128, 256),), repeats=3)
    assert advice.library_calls_s > 0           # addmm and mm, both pooled


@pytest.mark.parametrize("glue", ["native"], indirect=True)
@pytest.mark.parametrize("op, shapes", [
    ("mm", [(32, 16), (16, 64)]), ("bmm", [(3, 32, 16), (3, 16, 64)]),
    ("addmm", [(64,), (32, 16), (16, 64)]), ("baddbmm", [(3, 32, 64), (3, 32, 16), (3, 16, 64)]),
])
def test_a_native_pooled_matmul_computes_each_op_as_aten(glue, op, shapes):
    aten_op = getattr(torch.ops.aten, op).default
    args = [torch.randn(s) for s in shapes]
    want = aten_op(*args)
    call = pooled_call(aten_op, tuple(want.shape), torch.float32, glue.Pool(), glue)
    assert type(call).__name__ == "Matmul" and call.library_op is aten_op
    first = call(*args)
    torch.testing.assert_close(first, want)
    address = first.data_ptr()
    del first
    again = call(*args)                       # dropped: its memory again
    assert again.data_ptr() == address
    torch.testing.assert_close(call(*args), want)   # held: other memory, same values
    if op in ("addmm", "baddbmm"):            # a keyword (beta): the Python call
        torch.testing.assert_close(call(*args, beta=0.5), aten_op(*args, beta=0.5))
    negated = [torch._neg_view(a) for a in args]   # lazily negated: the Python call too
    torch.testing.assert_close(call(*negated), aten_op(*[-a for a in args]))
