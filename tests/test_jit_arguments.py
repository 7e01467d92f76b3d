"""pf.jit's argument handling, with the numpy oracle standing in for the compiler:
caching per signature, strides, scalars, several results, torch and bfloat16 inputs,
and typed errors that name the argument."""

from __future__ import annotations

import numpy as np
import pytest

import powerfusion as pf
from powerfusion import api
from powerfusion.graph.ops import Op
from powerfusion.graph.reference import evaluate
from test_tracing import assert_same, sample


# -- pf.jit argument handling (with the oracle standing in for the compiler) -------------
class ReferenceExecutable:
    def __init__(self, graph, strides):
        self.graph, self.strides = graph, strides

    def run(self, arrays):
        for a, s in zip(arrays, self.strides):
            assert tuple(b // a.itemsize for b in a.strides) == s
        return evaluate(self.graph, arrays)


@pytest.fixture
def compiled(monkeypatch):
    """Replace the compiler with the oracle; returns the list of compile calls."""
    calls = []

    def compile_graph(graph, *, input_strides, target="cpu"):
        calls.append((graph, input_strides, target))
        return ReferenceExecutable(graph, input_strides)

    def explain_graph(graph, *, input_strides, target="cpu"):
        return ("report", graph, input_strides, target)
    monkeypatch.setattr(api, "compile_graph", compile_graph)
    monkeypatch.setattr(api, "explain_graph", explain_graph)
    return calls


def test_jit_caches_per_signature(compiled):
    @pf.jit
    def scale(x, s=2.0):
        """Doc."""
        return x * s

    assert scale.__name__ == "scale" and scale.__doc__ == "Doc."
    x = sample((3, 4), np.float32)
    assert_same(scale(x), x * 2.0)
    assert_same(scale(x + 1), (x + 1) * 2.0)
    assert scale.traces == 1
    scale(sample((5,), np.float32))                 # new shape
    scale(x.astype(np.float64))                     # new dtype
    scale(x.T)                                      # new strides
    assert_same(scale(x, 3), x * 3)                 # new scalar value
    scale(x, s=3)                                   # same signature by keyword
    assert scale.traces == 5 and len(compiled) == 5
    assert compiled[3][1] == ((1, 4),)              # element strides of x.T


def test_jit_decorator_with_target_and_several_results(compiled):
    @pf.jit(target="cpu")
    def two(x, y):
        return x + y, (x * y).sum(axis=-1)

    x, y = sample((2, 3), np.float32), sample((3,), np.float32)
    a, b = two(x, y)
    assert_same(a, x + y)
    assert_same(b, (x * y).sum(axis=-1))
    assert compiled[0][2] == "cpu"


@pytest.mark.parametrize("make", [
    lambda x: x.T, lambda x: x[::-1], lambda x: x[:, ::2],
    lambda x: np.broadcast_to(x[:1], x.shape),
    lambda x: np.zeros(x.shape, dtype=[("a", "f4"), ("b", "u1")])["a"] + 0 * x[0, 0],
    lambda x: np.zeros(x.shape, dtype=[("a", "f4"), ("b", "u1")])["a"],
    lambda x: x.astype(">f4"),
])
def test_jit_any_strides(compiled, make):
    f = pf.jit(lambda x: x * 2 + 1)
    arg = make(sample((4, 6), np.float32))
    assert_same(f(arg), np.asarray(arg, dtype=np.float32) * 2 + 1)


def test_jit_bad_arguments_name_the_argument(compiled):
    @pf.jit
    def f(x, weight):
        return x * weight

    x = np.ones(3, np.float32)
    with pytest.raises(pf.DTypeError, match=r"argument 1 \('weight'\).*got str"):
        f(x, "w")
    with pytest.raises(pf.DTypeError, match=r"argument 1 \('weight'\).*got dict"):
        f(x, {})
    with pytest.raises(pf.DTypeError, match=r"argument 0 \('x'\).*uint8"):
        f(np.ones(3, np.uint8), 1.0)
    with pytest.raises(TypeError):
        f(x, [np.ones(3)])


def test_jit_scalar_only_and_bool_outputs(compiled):
    f = pf.jit(lambda x, t: (x > t, x.astype(np.int32)))
    x = sample((5,), np.float64)
    a, b = f(x, 0.0)
    assert_same(a, x > 0.0)
    assert_same(b, x.astype(np.int32))


def test_explain_traces_like_jit(compiled):
    f = pf.jit(lambda x: pf.exp(x))
    x = sample((3, 2), np.float32)
    for fn in (f, f.fn):
        tag, graph, strides, target = pf.explain(fn, x.T)
        assert tag == "report" and strides == ((1, 2),) and target == "cpu"
        assert graph.outputs[0].op is Op.EXP


@pytest.fixture
def torch_module():
    return pytest.importorskip("torch")


def test_jit_torch_in_torch_out(compiled, torch_module):
    torch = torch_module
    f = pf.jit(lambda x, y: (x * y + 1).sum(axis=0))
    x = torch.randn(4, 5)
    y = torch.randn(5, 4).T                      # non-contiguous
    out = f(x, y)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, (x * y + 1).sum(0))
    mixed = f(x, y.numpy())
    assert isinstance(mixed, torch.Tensor)
    assert isinstance(f(y.numpy(), x), np.ndarray)


def test_jit_torch_bfloat16(compiled, torch_module):
    torch = torch_module
    f = pf.jit(lambda x: x * 2 + x)
    x = torch.randn(8, 3).to(torch.bfloat16)
    out = f(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, x * 2 + x)
    f16 = pf.jit(lambda x: pf.sigmoid(x).astype(pf.float32))
    torch.testing.assert_close(f16(x), torch.sigmoid(x.float()), atol=1e-2, rtol=1e-2)


def test_jit_torch_unsupported_dtype(compiled, torch_module):
    f = pf.jit(lambda x: x + 1)
    with pytest.raises(pf.DTypeError, match=r"argument 0 \('x'\).*uint8"):
        f(torch_module.ones(3, dtype=torch_module.uint8))


def test_jit_numpy_bfloat16_with_ml_dtypes(compiled):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = sample((4, 6), np.float32).astype(ml_dtypes.bfloat16)
    out = pf.jit(lambda x: x * 2 + x)(x.T)
    assert out.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out.astype(np.float32), (x.T * 2 + x.T).astype(np.float32))


def test_jit_repeat_calls_with_plain_arrays_take_the_fast_path(compiled):
    f = pf.jit(lambda x, y: x * y + 1)
    x, y = sample((3, 4), np.float32), sample((3, 4), np.float32)
    assert_same(f(x, y), x * y + 1)
    assert len(f.host_calls) == 1
    x2 = x + 5                                       # new data, same signature
    assert_same(f(x2, y), x2 * y + 1)
    assert_same(f(x2.T, y.T), x2.T * y.T + 1)        # new strides: traced, then cached
    assert f.traces == 2 and len(f.host_calls) == 2
    # arguments that need preparation never enter (or hit) the fast path, and still work
    swapped = x.astype(x.dtype.newbyteorder(">"))
    assert_same(f(swapped, y), x * y + 1)
    raw = np.zeros(3 * 4 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(3, 4)   # misaligned
    raw[...] = x
    assert not raw.flags.aligned
    assert_same(f(raw, y), x * y + 1)
    assert_same(f(x, y=y), x * y + 1)                # a keyword: the full path
    assert len(f.host_calls) == 2


def test_jit_fast_path_keeps_bfloat16_results(compiled):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    f = pf.jit(lambda x: x + x)
    x = sample((4, 6), np.float32).astype(ml_dtypes.bfloat16)
    first, second = f(x), f(x)
    assert len(f.host_calls) == 1
    assert first.dtype == second.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(second.astype(np.float32), (x + x).astype(np.float32))
