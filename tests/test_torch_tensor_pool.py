"""A graph's CPU outputs and temps come from a TensorPool (or the native glue's Pool,
which every test here holds to the same): memory nobody holds is written again on the
next call (no page faults), memory anyone still reads - the output itself, a view of
it, another thread's result - never is."""

from __future__ import annotations

import concurrent.futures

import pytest

torch = pytest.importorskip("torch")

from powerfusion.frontend.torch_backend import collect_graphs  # noqa: E402
from powerfusion.frontend.torch_backend.tensor_pool import TensorPool  # noqa: E402


# dynamo and the counters reset, torch seeded, around each test (conftest)
pytestmark = pytest.mark.usefixtures("fresh_torch")


def _norm_gelu(x):
    # two kernels at least: the row statistics and the normalised, activated values
    return torch.nn.functional.gelu(torch.nn.functional.layer_norm(x * 2 + 1, (x.shape[-1],)))


def _pooled_addresses(graphs) -> set[int]:
    return {p for _, gm, _ in graphs
            for kept in gm.powerfusion_pool.addresses().values() for p in kept}


def _pool(glue):
    return TensorPool() if glue is None else glue.Pool()


def test_dropped_outputs_are_reused_and_held_ones_never_overwritten(glue):
    compiled = torch.compile(_norm_gelu, backend="powerfusion")
    a, b, c = (torch.randn(64, 256) for _ in range(3))
    with collect_graphs() as graphs:
        compiled(a)                              # specialised: the graph's pool from here
    first = compiled(a)
    address = first.data_ptr()
    assert address in _pooled_addresses(graphs)
    del first
    second = compiled(b)                     # pooled memory again, none fresh
    assert second.data_ptr() in _pooled_addresses(graphs)
    kept = _pooled_addresses(graphs)
    view = second[3:, ::2]                   # only a view of it is held now
    held = second.data_ptr()
    del second
    third = compiled(c)
    assert third.data_ptr() != held          # the view's memory is still read
    torch.testing.assert_close(view, _norm_gelu(b)[3:, ::2])
    torch.testing.assert_close(third, _norm_gelu(c))
    for _ in range(3):                        # held results pile up: each one its own
        compiled(a)
    torch.testing.assert_close(view, _norm_gelu(b)[3:, ::2])
    torch.testing.assert_close(third, _norm_gelu(c))
    assert kept <= _pooled_addresses(graphs)


def test_a_storage_resized_by_its_holder_is_not_handed_out_again(glue):
    compiled = torch.compile(_norm_gelu, backend="powerfusion")
    x = torch.randn(32, 128)
    out = compiled(x)
    out.untyped_storage().resize_(0)          # the holder gives the memory back
    del out
    for _ in range(2):
        torch.testing.assert_close(compiled(x), _norm_gelu(x))


def test_threads_dropping_results_at_once_each_get_their_own_memory(glue):
    compiled = torch.compile(_norm_gelu, backend="powerfusion")
    inputs = [torch.randn(128, 512) for _ in range(8)]
    expected = [_norm_gelu(x) for x in inputs]
    compiled(inputs[0])

    def check(k):
        for _ in range(20):
            got = compiled(inputs[k])
            torch.testing.assert_close(got, expected[k])   # no other thread wrote it
            del got
        return True

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(check, range(len(inputs))))


def test_the_pool_keeps_at_most_two_tensors_per_allocation(glue):
    pool = _pool(glue)
    take = pool.taker([((4, 4), torch.float32), ((8,), torch.bfloat16)])
    held = [take() for _ in range(4)]         # all held: four distinct sets
    pointers = {t.data_ptr() for taken in held for t in taken}
    assert len(pointers) == 8
    del held
    again = take()
    assert len({t.data_ptr() for t in again}) == 2
    assert [t.shape for t in again] == [(4, 4), (8,)]
    assert [t.dtype for t in again] == [torch.float32, torch.bfloat16]
    assert sorted(len(k) for k in pool.addresses().values()) == [2, 2]


def test_a_region_checks_each_arguments_layout_before_its_lean_path():
    """The lean path is the last call's compiled kernels; an argument laid out otherwise
    (transposed, negated lazily, another shape) goes back through the signature."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from powerfusion.frontend.torch_backend import Region

    def fn(x, y):
        return torch.exp(x * 2 + y)

    x, y = torch.randn(16, 32), torch.randn(32)
    region = Region(make_fx(fn, tracing_mode="fake")(x, y), "layouts")
    torch.testing.assert_close(region(x, y), fn(x, y))
    assert region.hot is not None
    transposed = torch.randn(32, 16).t()
    torch.testing.assert_close(region(transposed, y), fn(transposed, y))
    negated = torch._neg_view(x)
    torch.testing.assert_close(region(negated, y), fn(negated, y))
    other = torch.randn(8, 32)
    torch.testing.assert_close(region(other, y), fn(other, y))
    torch.testing.assert_close(region(x, y), fn(x, y))


def test_a_shared_pool_hands_one_size_to_any_shape_and_never_twice_at_once(glue):
    pool = _pool(glue)
    take_a = pool.taker([((4, 6), torch.float32), ((24,), torch.float32)])
    take_b = pool.taker([((6, 4), torch.float32), ((3,), torch.bfloat16)])
    first = take_a()                         # two of one size in one take: distinct
    assert first[0].data_ptr() != first[1].data_ptr()
    assert [t.shape for t in first] == [(4, 6), (24,)]
    address = first[1].data_ptr()
    del first
    again = take_b()                          # another caller, the same size: reused
    assert again[0].shape == (6, 4) and again[0].is_contiguous()
    assert again[0].data_ptr() in pool.addresses()[(24, torch.float32)]
    assert again[1].dtype == torch.bfloat16
    held = [take_a() for _ in range(6)]       # all held: each its own memory
    pointers = [t.data_ptr() for taken in held for t in taken]
    assert len(set(pointers)) == len(pointers) and again[0].data_ptr() not in pointers
    # at most KEEP per allocation of a size in the graph: 2 x 3 of 24 floats kept
    assert len(pool.addresses()[(24, torch.float32)]) == 3 * TensorPool.KEEP
    assert pool.nbytes() == 6 * 24 * 4 + 3 * 2     # and the one bfloat16 taken once
    assert address in pool.addresses()[(24, torch.float32)]
    pool.release()                            # forgotten; what callers hold stays theirs
    assert pool.nbytes() == 0 and held[0][0].data_ptr() == pointers[0]


def test_a_pooled_tensor_a_caller_writes_or_reshapes_in_place_is_its_own(glue):
    take = _pool(glue).taker([((4, 6), torch.float32)])
    t, = take()
    address = t.data_ptr()
    t.fill_(1.0).t_()                         # metadata changed in place by its holder
    assert t.shape == (6, 4)
    del t
    again, = take()                           # the kept tensor is not the caller's
    assert again.shape == (4, 6) and again.stride() == (6, 1)
    assert again.data_ptr() == address and again.grad_fn is None


def test_a_take_with_arguments_is_refused(glue):
    take = _pool(glue).taker([((4,), torch.float32)])
    with pytest.raises(TypeError):
        take(1)
    with pytest.raises(TypeError):
        take(bogus=1)
    assert take()[0].shape == (4,)
