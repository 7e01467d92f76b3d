"""Shared helpers for the compiled-code tests: inputs, float64 references, tolerances.

Every comparison happens in float64: the compiled result is widened exactly, the
reference is computed in float64 from the (exactly widened) inputs, and the
tolerance is chosen by the dtype of the result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

try:  # numpy has no bfloat16 of its own
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    ml_dtypes = None
    BF16 = None

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

needs_bf16 = pytest.mark.skipif(BF16 is None, reason="bfloat16 arrays need ml_dtypes")
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# -- dtypes ----------------------------------------------------------------------------------
FLOAT_NAMES = ("float32", "float16", "bfloat16", "float64")
INT_NAMES = ("int32", "int64")
ALL_NAMES = FLOAT_NAMES + INT_NAMES + ("bool",)


def np_dtype(name) -> np.dtype:
    """numpy dtype by name; 'bfloat16' needs ml_dtypes (the test is skipped without it)."""
    if isinstance(name, np.dtype):
        return name
    if name == "bfloat16":
        if BF16 is None:
            pytest.skip("bfloat16 arrays need ml_dtypes")
        return BF16
    return np.dtype(name)


def dtype_name(dtype) -> str:
    """'float32', 'bfloat16', ... for a numpy dtype, a torch dtype or a name."""
    if isinstance(dtype, str):
        return dtype
    if torch is not None and isinstance(dtype, torch.dtype):
        return str(dtype)[len("torch."):]
    dtype = np.dtype(dtype)
    if BF16 is not None and dtype == BF16:
        return "bfloat16"
    return dtype.name


def dtype_param(name: str):
    """A pytest param for a dtype name, marked to skip bfloat16 without ml_dtypes."""
    return pytest.param(name, id=name, marks=needs_bf16 if name == "bfloat16" else ())


def dtype_params(*names):
    return [dtype_param(n) for n in names]


# -- inputs ----------------------------------------------------------------------------------
def make(rng, shape, dtype="float32", kind: str = "normal", scale: float = 1.0) -> np.ndarray:
    """A random array. kind: 'normal', 'positive' (|x| + 0.1), 'small_int' (integer
    values in [-3, 3], so comparisons meet equal values), 'unit' (uniform in (-1, 1))."""
    dt = np_dtype(dtype)
    shape = tuple(shape)
    if dt == np.bool_:
        return rng.random(shape) > 0.5
    if dt.kind in "iu":
        lo, hi = (-3, 4) if kind == "small_int" else ((1, 50) if kind == "positive" else (-50, 51))
        return rng.integers(lo, hi, shape).astype(dt)
    if kind == "small_int":
        x = rng.integers(-3, 4, shape).astype(np.float64)
    elif kind == "unit":
        x = rng.uniform(-1.0, 1.0, shape)
    else:
        x = rng.standard_normal(shape) * scale
        if kind == "positive":
            x = np.abs(x) + 0.1
    return np.asarray(x).astype(dt)


def f64(a) -> np.ndarray:
    """Any array-like (numpy of any dtype incl. bfloat16, torch tensor, scalar) as float64."""
    if torch is not None and isinstance(a, torch.Tensor):
        return a.detach().to(torch.float64).numpy()
    return np.asarray(a).astype(np.float64)


def widen(a) -> np.ndarray:
    """The exact float64 value of an input (ints and bools stay exact), for references."""
    a = np.asarray(a)
    if a.dtype.kind in "biu":
        return a.astype(np.int64) if a.dtype.kind != "b" else a
    return a.astype(np.float64)


# -- float64 references of the ops numpy lacks -----------------------------------------------
_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def erf64(x) -> np.ndarray:
    return np.asarray(_erf_scalar(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def sigmoid64(x):
    x = np.asarray(x, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-x))


def gelu64(x, approximate: str = "none"):
    x = np.asarray(x, dtype=np.float64)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + erf64(x / math.sqrt(2.0)))


# -- tolerances ------------------------------------------------------------------------------
# (rtol, atol) per result dtype; `transcendental=True` loosens float32/float64 for ops with
# vectorised approximations (exp, log, tanh, erf, sin, ...). 16-bit results are dominated
# by the final rounding (half an ulp: 2**-11 for float16, 2**-8 for bfloat16).
TOLERANCES = {
    "float64": (1e-12, 1e-13),
    "float32": (1e-5, 1e-6),
    "float16": (2e-3, 1e-3),
    "bfloat16": (1.6e-2, 1e-2),
}
TRANSCENDENTAL = {
    "float64": (1e-9, 1e-10),
    "float32": (4e-5, 4e-6),
    "float16": (2e-3, 1e-3),
    "bfloat16": (1.6e-2, 1e-2),
}


def tolerance(dtype, transcendental: bool = False, factor: float = 1.0) -> tuple[float, float]:
    name = dtype_name(dtype)
    rtol, atol = (TRANSCENDENTAL if transcendental else TOLERANCES)[name]
    return rtol * factor, atol * factor


def check_jit(fn, *args, tol=2e-5):
    """pf.jit(fn) against fn run by numpy on float64 copies, each result within tol
    (relative, and absolute against the result's largest magnitude)."""
    import powerfusion as pf

    out = pf.jit(fn)(*args)
    ref = fn(*(a.astype(np.float64) for a in args))
    out = out if isinstance(out, tuple) else (out,)
    ref = ref if isinstance(ref, tuple) else (ref,)
    for o, r in zip(out, ref):
        assert o.shape == r.shape
        np.testing.assert_allclose(o, r, rtol=tol, atol=tol * np.abs(r).max(initial=0.0))


def _is_torch(a) -> bool:
    return torch is not None and isinstance(a, torch.Tensor)


def assert_close(actual, expected, dtype, *, transcendental: bool = False,
                 factor: float = 1.0, scale: float = 1.0, label: str = "") -> None:
    """`actual` (numpy or torch) has dtype `dtype`, the shape of `expected`, and its
    values: exactly for ints and bools; for floats within the dtype's (rtol, atol),
    atol multiplied by `scale` (the magnitude of the terms, e.g. for sums).
    `expected` is a float64 (or int/bool) reference."""
    where = f"{label}: " if label else ""
    name = dtype_name(dtype)
    got_name = dtype_name(actual.dtype)
    assert got_name == name, f"{where}dtype {got_name}, expected {name}"
    expected = np.asarray(expected)
    got_shape = tuple(actual.shape)
    assert got_shape == expected.shape, f"{where}shape {got_shape}, expected {expected.shape}"
    if name in ("bool", "int32", "int64"):
        got = actual.numpy() if _is_torch(actual) else np.asarray(actual)
        mismatch = got != expected.astype(got.dtype)
        assert not mismatch.any(), (
            f"{where}{int(mismatch.sum())} of {mismatch.size} elements differ; first at "
            f"{np.argwhere(mismatch)[0].tolist()}: got {got[mismatch][:5]}, "
            f"expected {expected[mismatch][:5]}")
        return
    rtol, atol = tolerance(name, transcendental, factor)
    np.testing.assert_allclose(f64(actual), expected.astype(np.float64), rtol=rtol,
                               atol=atol * scale, equal_nan=True, err_msg=where)


def round_to(expected64, dtype) -> np.ndarray:
    """A float64 reference rounded to `dtype` and widened back (what a correctly rounded
    result holds); for exact comparisons of casts."""
    return np.asarray(expected64).astype(np_dtype(dtype)).astype(np.float64)


# -- layouts ---------------------------------------------------------------------------------
LAYOUTS = ("contiguous", "transposed", "strided", "reversed", "broadcast", "offset")


def with_layout(a: np.ndarray, layout: str, rng=None) -> np.ndarray:
    """The same values as `a`, laid out in memory another way (a view of a larger or
    permuted buffer). 'broadcast' needs an axis of size 1 to stretch from, so it makes
    a view whose values come from a[..., :1]-like row: it returns np.broadcast_to of
    a slice of a, i.e. different values (use the returned array as the input)."""
    if layout == "contiguous" or a.ndim == 0:
        return np.array(a, order="C")
    if layout == "transposed":          # Fortran order: strides reversed
        return np.asfortranarray(a) if a.ndim >= 2 else a
    if layout == "strided":             # every other element on every axis
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        big[tuple(slice(None, None, 2) for _ in a.shape)] = a
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        assert view.base is not None
        return view
    if layout == "reversed":            # negative strides
        rev = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
        return rev[tuple(slice(None, None, -1) for _ in a.shape)]
    if layout == "offset":              # a view that starts inside its buffer
        big = np.zeros((a.size + 3,), a.dtype)
        big[3:] = a.reshape(-1)
        return big[3:].reshape(a.shape)
    if layout == "broadcast":           # zero strides on the first axis
        if a.ndim == 0:
            return a
        return np.broadcast_to(a[:1], a.shape)
    raise ValueError(layout)


def opencl_or_skip():
    """The OpenCL device the tests run on (PoCL in CI), or skip with the reason."""
    pytest.importorskip("pyopencl", reason="pyopencl is not installed")
    from powerfusion.errors import UnsupportedError
    from powerfusion.runtime import opencl

    try:
        return opencl.device()
    except UnsupportedError as exc:
        pytest.skip(f"no OpenCL device: {exc}")
