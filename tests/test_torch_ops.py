"""The torch backend's lowerings of issue 13's ops against eager PyTorch: the rounding
ops, sign, log1p/expm1/log2/log10/exp2/tan, and the activations, layout changes, norms
and normalisations built from graph ops. Each must be claimed (no fallback) and give
eager's result: rounding and sign bit for bit, at NaN, +-inf, +-0, ties and subnormals.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from powerfusion.frontend.torch_backend import compile_stats, reset_compile_stats  # noqa: E402

F = torch.nn.functional
EDGES = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, -1e-40, 0.5, -0.5, 1.5, -1.5, 2.5,
         -2.5, 0.49999997, 8388607.5, -8388607.5, 1e30, -1e30, 1e-7, -1e-7, 3e-8, -1.0, -2.0,
         88.0, -30.5, 3.7, -3.7, 123.456]


# dynamo and the counters reset, torch seeded, around each test (conftest)
pytestmark = pytest.mark.usefixtures("fresh_torch")


def _run(fn, *args):
    torch._dynamo.reset()
    with torch.no_grad():
        return torch.compile(fn, backend="powerfusion")(*args), fn(*args)


def _same_bits(got, want) -> bool:
    """Equal values and sign bits, NaN where eager has NaN, same dtype."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if not got.is_floating_point():
        return torch.equal(got, want)
    g, w = got.double(), want.double()
    nan = torch.isnan(w)
    return torch.equal(torch.isnan(g), nan) and torch.equal(g[~nan], w[~nan]) and \
        torch.equal(torch.signbit(g[~nan]), torch.signbit(w[~nan]))


def _assert_claimed(*ops):
    stats = compile_stats()
    assert stats["fallback_ops"] == 0 and stats["failed_regions"] == 0, stats
    for op in ops:
        assert stats["fused_by_op"].get(op), (op, stats["fused_by_op"])


EXACT = {"floor": torch.floor, "ceil": torch.ceil, "trunc": torch.trunc,
         "round": torch.round, "sign": torch.sign}


@pytest.mark.parametrize("name", list(EXACT))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64, torch.int64])
def test_rounding_and_sign_are_bit_exact(name, dtype):
    x = torch.tensor(EDGES, dtype=torch.float64)
    if not dtype.is_floating_point:
        x = x.nan_to_num().clamp(-2 ** 40, 2 ** 40).round()
    x = x.to(dtype)
    got, want = _run(EXACT[name], x * 1)
    assert _same_bits(got, want), (name, dtype, got, want)
    _assert_claimed(f"aten.{name}.default")


@pytest.mark.parametrize("name", ["log1p", "expm1", "log2", "log10", "exp2", "tan"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_log_exp_and_tan_match_eager(name, dtype):
    """Within an ULP or two (eager's own float32 functions are not correctly rounded);
    NaN, infinities and signed zeros exactly; log1p/expm1 keep relative accuracy at 0."""
    fn = getattr(torch, name)
    x = torch.tensor(EDGES + [2.0 ** -20, -(2.0 ** -20), 1e-30], dtype=dtype)
    got, want = _run(fn, x)
    assert got.dtype == want.dtype
    finite = torch.isfinite(want)
    assert _same_bits(got[~finite], want[~finite]), (got, want)
    assert torch.equal(torch.signbit(got[want == 0]), torch.signbit(want[want == 0]))
    rtol = 2.5e-7 if dtype is torch.float32 else 8e-3
    # eager's vectorised log1p gives 0 for subnormals: absolute error up to the least normal
    torch.testing.assert_close(got[finite], want[finite], rtol=rtol,
                               atol=torch.finfo(dtype).tiny)
    _assert_claimed(f"aten.{name}.default")


def test_round_with_decimals_falls_back():
    x = torch.randn(40) * 100
    got, want = _run(lambda t: torch.round(t, decimals=2), x)
    assert torch.equal(got, want)
    assert compile_stats()["fallback_by_op"] == {"aten.round.decimals": 1}


ACTIVATIONS = {
    "hardtanh": lambda x: F.hardtanh(x, -0.75, 1.25),
    "relu6": F.relu6,
    "elu": F.elu,
    "elu_scaled": lambda x: torch.ops.aten.elu(x, 0.5, 1.5, 2.0),
    "selu": F.selu,
    "celu": lambda x: F.celu(x, 0.7),
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "hardsigmoid": F.hardsigmoid,
    "hardswish": F.hardswish,
    "softplus": F.softplus,
    "softplus_beta": lambda x: F.softplus(x, beta=2.0, threshold=5.0),
    "mish": F.mish,
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_activations_match_eager(name, dtype):
    x = torch.cat([torch.randn(300) * 4, torch.tensor([math.nan, math.inf, -math.inf, 0.0,
                                                       -0.0, 20.0, -20.0, 3.0, -3.0])])
    x = x.to(dtype)
    got, want = _run(ACTIVATIONS[name], x)
    rtol, atol = (1.3e-6, 1e-5) if dtype is torch.float32 else (1.6e-2, 1e-2)
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, equal_nan=True)
    _assert_claimed()
    assert compile_stats()["kernels"] > 0


def test_layout_changes_match_eager():
    x = torch.randn(3, 5, 7)

    def f(t):
        return (torch.flip(t, (0, 2)) + 1, torch.flip(t, (-2,)) * 2,
                F.pad(t, (2, 1, 0, 3), value=-7.0) + 0,
                F.pad(t, (-1, 2, 1, -2)) + 0,
                t.repeat(2, 1, 3) * 1, t.repeat(2, 1, 1, 2) * 1)

    got, want = _run(f, x)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    _assert_claimed("aten.flip.default", "aten.constant_pad_nd.default",
                    "aten.repeat.default")


def test_max_min_with_indices_match_eager():
    """Values and the first index of the extreme; a NaN is the extreme, at its first
    place; ties take the first index."""
    x = torch.tensor([[1.0, 3.0, 3.0, -2.0], [math.nan, 1.0, math.nan, 5.0],
                      [-0.0, 0.0, -1.0, -1.0]])

    def f(t):
        a, i = torch.max(t, 1)
        b, j = torch.min(t, 0, keepdim=True)
        return a, i, b, j, torch.max(t * 1), torch.min(t[2] * 1)

    got, want = _run(f, x)
    for g, w in zip(got, want):
        assert _same_bits(g, w), (g, w)
    _assert_claimed("aten.max.dim", "aten.min.dim")


@pytest.mark.parametrize("ord_", [2, 1, math.inf, -math.inf])
def test_vector_norm_matches_eager(ord_):
    x = torch.randn(6, 33)
    got, want = _run(lambda t: (torch.linalg.vector_norm(t, ord_, dim=-1),
                                torch.linalg.vector_norm(t, ord_, dim=(0, 1), keepdim=True),
                                torch.linalg.vector_norm(t.bfloat16(), ord_, dim=0)), x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    _assert_claimed("aten.linalg_vector_norm.default")


def test_vector_norm_of_other_orders_falls_back():
    x = torch.randn(6, 33)
    got, want = _run(lambda t: torch.linalg.vector_norm(t, 3, dim=-1), x)
    torch.testing.assert_close(got, want)
    assert "aten.linalg_vector_norm.default" in compile_stats()["fallback_by_op"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_and_batch_norm_match_eager(dtype):
    gn = torch.nn.GroupNorm(4, 12).to(dtype)
    bn = torch.nn.BatchNorm2d(12).to(dtype).eval()
    with torch.no_grad():
        for p in list(gn.parameters()) + list(bn.parameters()):
            p.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 12, 5, 6, dtype=dtype)
    got, want = _run(lambda t: (gn(t), bn(t)), x)
    rtol, atol = (1.3e-6, 1e-5) if dtype is torch.float32 else (1.6e-2, 1e-2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol)
    _assert_claimed("aten.native_group_norm.default",
                    "aten._native_batch_norm_legit_no_training.default")


def test_group_norm_of_a_channels_last_activation_forward_and_backward():
    # a UNet block's activation as a channels-last model holds it: the statistics are
    # summed in memory order (graph.memory_order), results and gradients still eager's
    gn = torch.nn.GroupNorm(8, 64)
    with torch.no_grad():
        for p in gn.parameters():
            p.normal_()
    x = torch.randn(2, 64, 9, 7).contiguous(memory_format=torch.channels_last)

    def step(model, t):
        t = t.detach().requires_grad_()
        out = F.silu(model(t))
        (out * out).sum().backward()
        return out.detach(), t.grad, [p.grad.clone() for p in model.parameters()]

    want = step(gn, x)
    gn.zero_grad()
    got = step(torch.compile(gn, backend="powerfusion"), x)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-4)
    for g, w in zip(got[2], want[2]):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-3)
    assert compile_stats()["fallback_ops"] == 0


def _modulo_edges(dtype):
    """Every pair of EDGES, less those whose quotient |x / y| overflows float32: there
    eager's vectorised CPU fmod (Sleef) gives NaN, its scalar path the exact result, as
    PowerFusion does (see test_fmod_is_exact_where_eagers_vector_path_is_not)."""
    e = torch.tensor(EDGES, dtype=torch.float64)
    x, y = e.repeat_interleave(len(e)), e.repeat(len(e))
    big = (((x.abs() / y.abs() > 3e38) & x.isfinite()) | (1.5 / y.abs() > 3e38)) & (y != 0)
    keep = ~big
    return x[keep].to(dtype), y[keep].to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16,
                                   torch.bfloat16])
def test_remainder_and_fmod_of_floats_are_eagers_bit_for_bit(dtype):
    """Exact (fmod is; x - floor(x / y) * y is not), at NaN, +-inf, +-0 and quotients up
    to 1e30, for the Tensor, Scalar and Scalar_Tensor overloads and the % operator."""
    x, y = _modulo_edges(dtype)
    got, want = _run(lambda a, b: (torch.remainder(a, b), torch.fmod(a, b), a % b,
                                   torch.remainder(a, -2.5), torch.fmod(a, 3.0),
                                   torch.remainder(1.5, b)), x, y)
    for k, (g, w) in enumerate(zip(got, want)):
        assert _same_bits(g, w), (k, dtype)
    _assert_claimed("aten.remainder.Tensor", "aten.fmod.Tensor", "aten.remainder.Scalar",
                    "aten.fmod.Scalar")


def test_remainder_zero_keeps_the_dividends_sign_as_eagers():
    """PyTorch's remainder of floats gives a zero the dividend's sign (fmod's), numpy's
    the divisor's: torch.remainder(-0., 1.) is -0, numpy.remainder(-0., 1.) +0."""
    x = torch.tensor([0.0, -0.0, 1.0, -1.0, 4.0, -4.0])
    y = torch.tensor([-1.0, 1.0, -1.0, 1.0, -2.0, 2.0])
    got, want = _run(torch.remainder, x, y)
    assert _same_bits(got, want)
    assert torch.signbit(got).tolist() == [False, True, False, True, False, True]


def test_fmod_is_exact_where_eagers_vector_path_is_not():
    """Where |x / y| overflows float32, eager's vectorised fmod gives NaN (its scalar
    tail, numpy and C the exact remainder); the compiled one is exact everywhere."""
    import numpy as np

    x = torch.tensor([0.5, 1e30, -1.5, 3e38] * 16)
    y = torch.tensor([1e-40, 2e-38, 1e-45, -1e-39] * 16)
    got, _ = _run(torch.fmod, x, y)
    assert torch.equal(got, torch.from_numpy(np.fmod(x.numpy(), y.numpy())))
    _assert_claimed("aten.fmod.Tensor")


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_integer_modulo_by_a_scalar_is_claimed(dtype):
    """By a nonzero Python scalar: C's % made total (INT_MIN % -1 is 0)."""
    info = torch.iinfo(dtype)
    x = torch.tensor([0, 1, -1, 7, -7, 3, -3, info.min, info.max, info.min + 1], dtype=dtype)
    got, want = _run(lambda a: (torch.remainder(a, 7), torch.fmod(a, -3), a % -1,
                                torch.fmod(a, -1), torch.remainder(a, 2.5)), x)
    for g, w in zip(got, want):
        assert _same_bits(g, w)
    _assert_claimed("aten.remainder.Scalar", "aten.fmod.Scalar")


def test_integer_modulo_by_a_tensor_or_zero_stays_eager():
    """PyTorch raises ZeroDivisionError for an integer zero divisor; a kernel cannot, so
    these keep PyTorch's kernels, and its error."""
    x, y = torch.tensor([7, -7, 5], dtype=torch.int32), torch.tensor([2, 3, -4],
                                                                     dtype=torch.int32)
    got, want = _run(lambda a, b: (torch.remainder(a, b), torch.fmod(a, b)), x, y)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert {"aten.remainder.Tensor", "aten.fmod.Tensor"} <= \
        compile_stats()["fallback_by_op"].keys()
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        _run(lambda a: torch.remainder(a, 0), x)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        _run(torch.fmod, x, torch.zeros_like(y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16,
                                   torch.float64])
def test_pow_by_halves_takes_torchs_meaning(dtype):
    """PyTorch's x ** 0.5 is sqrt and x ** -0.5 is 1 / sqrt at -0 and -inf (-0, NaN;
    -inf, NaN), numpy's and ml_dtypes' are pow's there; PyTorch's float16 pow is pow's."""
    x = torch.tensor([-math.inf, -0.0, 0.0, 4.0, -1.0, math.inf], dtype=dtype)
    got, want = _run(lambda t: (t ** 0.5, t ** -0.5, torch.pow(t, 0.5)), x)
    for g, w in zip(got, want):
        assert _same_bits(g, w), (g, w)
    _assert_claimed("aten.pow.Tensor_Scalar")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.int32,
                                   torch.bool])
def test_cumsum_matches_eager(dtype):
    """Prefix sums along any dim, in torch's dtypes (ints and bools add in int64), an
    attention mask's position count among them, fused with what follows."""
    def fn(x):
        return torch.cumsum(x, dim=1) * 2 - 1

    def mask_positions(m):
        return (torch.cumsum(m, dim=-1) - 1).masked_fill(m == 0, 1)

    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 37, 5, generator=g) * 4
    x = base > 0 if dtype is torch.bool else base.to(dtype)
    got, want = _run(fn, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    if dtype.is_floating_point:
        # (a sum in another order: the float32 gap of a 37-term sum; bfloat16 rounds
        # eager's running float32 sum and ours once each)
        torch.testing.assert_close(got, want, rtol=1e-5 if dtype is torch.float32 else 2e-2,
                                   atol=1e-4 if dtype is torch.float32 else 1e-1)
    else:
        assert torch.equal(got, want)
    mask = (torch.rand(2, 128, generator=g) > 0.2).to(torch.int64)
    got, want = _run(mask_positions, mask)
    assert torch.equal(got, want)
    assert compile_stats()["fallback_by_op"] == {}


def test_cumsum_of_a_long_axis_or_a_scalar():
    """Past the longest axis the square of adds is built for, cumsum stays eager (counted);
    a 0-d tensor's and an empty axis's prefix sums are themselves."""
    x = torch.randn(2, 1500)
    got, want = _run(lambda v: torch.cumsum(v, dim=-1) + 1, x)
    torch.testing.assert_close(got, want)
    assert compile_stats()["fallback_by_op"] == {"aten.cumsum.default": 1}
    reset_compile_stats()
    for v, dim in ((torch.tensor(2.5), 0), (torch.randn(3, 0), 1), (torch.randn(0, 4), 1)):
        got, want = _run(lambda t: torch.cumsum(t, dim=dim) * 3, v)
        assert got.shape == want.shape and torch.equal(got, want)
    assert compile_stats()["fallback_by_op"] == {}
