"""Every typed error, raised where users meet it, with a message that says what went wrong;
and no silent wrong answers when a jitted function meets new shapes or layouts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_close, f64, make, needs_torch, torch

import powerfusion as pf
from powerfusion import errors


# -- the hierarchy ---------------------------------------------------------------------------
def test_error_hierarchy():
    assert issubclass(pf.ShapeError, ValueError)
    assert issubclass(pf.DTypeError, TypeError)
    for cls in (pf.ShapeError, pf.DTypeError, pf.UnsupportedError, pf.CompileError):
        assert issubclass(cls, pf.PowerFusionError)
        assert getattr(errors, cls.__name__) is cls       # the same classes at both places
    assert issubclass(pf.PowerFusionError, Exception)
    e = pf.ShapeError("x")
    assert isinstance(e, ValueError) and isinstance(e, pf.PowerFusionError)
    e = pf.DTypeError("x")
    assert isinstance(e, TypeError) and isinstance(e, pf.PowerFusionError)


# -- ShapeError ------------------------------------------------------------------------------
def test_mismatched_broadcast_names_both_shapes(rng):
    f = pf.jit(lambda a, b: a + b)
    with pytest.raises(pf.ShapeError) as info:
        f(make(rng, (3, 4)), make(rng, (5,)))
    message = str(info.value)
    assert "(3, 4)" in message and "(5,)" in message
    assert isinstance(info.value, ValueError)


def test_mismatched_broadcast_inside_a_longer_function(rng):
    @pf.jit
    def f(x, w):
        y = pf.exp(x) * 2
        return y.sum(axis=0) * w           # (6,) * (5,)

    with pytest.raises(ValueError) as info:           # catchable as a ValueError
        f(make(rng, (4, 6)), make(rng, (5,)))
    assert isinstance(info.value, pf.ShapeError)
    assert "(6,)" in str(info.value) and "(5,)" in str(info.value)


def test_bad_reshape(rng):
    with pytest.raises(pf.ShapeError) as info:
        pf.jit(lambda x: x.reshape(5, 3))(make(rng, (3, 4)))
    assert "(5, 3)" in str(info.value) and "(3, 4)" in str(info.value)
    with pytest.raises(pf.ShapeError):
        pf.jit(lambda x: x.reshape(-1, 5))(make(rng, (3, 4)))


@pytest.mark.parametrize("spelling", ["method", "pf", "np", "tuple", "negative"])
def test_axis_out_of_range(spelling, rng):
    fns = {
        "method": lambda x: x.sum(axis=2),
        "pf": lambda x: pf.max(x, axis=2),
        "np": lambda x: np.mean(x, axis=2),
        "tuple": lambda x: x.min(axis=(0, 5)),
        "negative": lambda x: x.sum(axis=-3),
    }
    with pytest.raises(pf.ShapeError) as info:
        pf.jit(fns[spelling])(make(rng, (3, 4)))
    assert "(3, 4)" in str(info.value)


def test_other_shape_errors(rng):
    x = make(rng, (3, 4))
    with pytest.raises(pf.ShapeError):
        pf.jit(lambda x: x.transpose(0, 0))(x)
    with pytest.raises(pf.ShapeError):
        pf.jit(lambda x: pf.concatenate([x, x[:2, :3]], axis=0))(x)
    with pytest.raises(pf.ShapeError):
        pf.jit(lambda x: pf.where(x > 0, x, x[:2]))(x)


# -- DTypeError ------------------------------------------------------------------------------
def test_complex_input_is_a_dtype_error():
    x = np.ones((3,), np.complex64)
    with pytest.raises(pf.DTypeError) as info:
        pf.jit(lambda x: x + 1)(x)
    assert "complex64" in str(info.value)
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "complex128", "object"])
def test_other_unsupported_input_dtypes(dtype):
    x = np.zeros((4,), dtype=dtype)
    with pytest.raises(pf.DTypeError) as info:
        pf.jit(lambda x: x * 2)(x)
    assert np.dtype(dtype).name in str(info.value)


def test_string_argument_is_a_dtype_error(rng):
    with pytest.raises(pf.DTypeError) as info:
        pf.jit(lambda x, s: x * 2)(make(rng, (3,)), "hello")
    assert "str" in str(info.value)


@pytest.mark.parametrize("value", [[1.0, 2.0, 3.0], object(), 1 + 2j],
                         ids=["list", "object", "complex"])
def test_unsupported_argument_kind_is_a_typed_error(value, rng):
    """Not an array, a tensor or a real scalar: a DTypeError, not a crash deep inside."""
    with pytest.raises(pf.DTypeError):
        pf.jit(lambda x, y: x + y)(make(rng, (3,)), value)


def test_unsupported_astype_target(rng):
    with pytest.raises(pf.DTypeError) as info:
        pf.jit(lambda x: x.astype(np.complex64))(make(rng, (3,)))
    assert "complex64" in str(info.value)


# -- UnsupportedError ------------------------------------------------------------------------
@pytest.mark.parametrize("name,fn", [
    ("sort", lambda x: np.sort(x)),
    ("fft", lambda x: np.fft.fft(x)),
    ("cumsum", lambda x: np.cumsum(x, axis=0)),
])
def test_unsupported_numpy_function_is_named(name, fn, rng):
    with pytest.raises(pf.UnsupportedError) as info:
        pf.jit(fn)(make(rng, (4, 5)))
    assert name in str(info.value)


def test_data_dependent_control_flow(rng):
    @pf.jit
    def f(x):
        if x.sum() > 0:
            return x * 2
        return x

    with pytest.raises(pf.UnsupportedError) as info:
        f(make(rng, (5,)))
    assert "pf.where" in str(info.value) or "control flow" in str(info.value)


def test_converting_a_traced_value_to_a_python_number(rng):
    with pytest.raises(pf.UnsupportedError):
        pf.jit(lambda x: x * float(x.max()))(make(rng, (5,)))
    with pytest.raises(pf.UnsupportedError):
        pf.jit(lambda x: np.asarray(x) + 1)(make(rng, (5,)))


def test_matmul_is_unsupported(rng):
    with pytest.raises(pf.UnsupportedError):
        pf.jit(lambda a, b: a @ b)(make(rng, (3, 4)), make(rng, (4, 2)))


def test_unknown_target(rng):
    with pytest.raises(pf.PowerFusionError):
        pf.jit(lambda x: x + 1, target="no-such-target")(make(rng, (3,)))


def test_jit_of_a_non_function():
    with pytest.raises(pf.PowerFusionError):
        pf.jit(42)


# -- CompileError ----------------------------------------------------------------------------
def test_compile_error_attributes(kernel_cache):
    from powerfusion.runtime.cpu import compile_shared

    with pytest.raises(pf.CompileError) as info:
        compile_shared("this is not C", name="bad")
    err = info.value
    assert isinstance(err, pf.PowerFusionError)
    assert isinstance(err.command, list) and err.command
    assert any("gcc" in part or "cc" in os.path.basename(part) for part in err.command)
    assert isinstance(err.stderr, str) and "error" in err.stderr.lower()
    assert err.source_path, "the failing source must be kept for inspection"
    kept = Path(err.source_path)
    assert kept.is_file() and "this is not C" in kept.read_text()
    # the message carries the command, the path and what the compiler said
    message = str(err)
    assert err.source_path in message and "error" in message.lower()
    # the kept source lives in this session's private cache, not the user's
    assert Path(os.environ["POWERFUSION_CACHE_DIR"]) == kernel_cache
    assert kernel_cache.resolve() in kept.resolve().parents


def test_compile_error_is_not_cached(kernel_cache):
    """A failed compile leaves no entry behind that a second attempt would trust."""
    from powerfusion.runtime.cpu import compile_shared

    for _ in range(2):
        with pytest.raises(pf.CompileError):
            compile_shared("int broken( { return 0; }", name="bad2")


def test_a_call_to_an_undeclared_helper_fails_to_compile(kernel_cache):
    """Not a warning and an unresolved symbol at load time: a typed error, at compile time."""
    from powerfusion.runtime.cpu import compile_shared

    with pytest.raises(pf.CompileError, match="implicit"):
        compile_shared("void k(void **args) { pf_no_such_helper(args[0]); }", name="undeclared")


def test_compile_error_can_be_constructed_with_details():
    err = pf.CompileError("failed", command=["gcc", "-c", "k.c"], stderr="k.c:1: error: x",
                          source_path="/tmp/k.c")
    assert err.command == ["gcc", "-c", "k.c"]
    assert err.stderr == "k.c:1: error: x"
    assert err.source_path == "/tmp/k.c"
    assert "gcc -c k.c" in str(err) and "/tmp/k.c" in str(err)


# -- calling a jitted function wrongly -------------------------------------------------------
def test_wrong_number_of_arguments(rng):
    f = pf.jit(lambda x, y: x + y)
    x = make(rng, (3,))
    with pytest.raises(TypeError):
        f(x)
    with pytest.raises(TypeError):
        f(x, x, x)
    with pytest.raises(TypeError):
        f(x, z=x)


def test_wrong_number_of_arguments_after_a_good_call(rng):
    f = pf.jit(lambda x, y: x + y)
    x = make(rng, (3,))
    assert_close(f(x, x), 2 * f64(x), "float32")
    with pytest.raises(TypeError):
        f(x)


@needs_torch
def test_torch_tensor_of_unsupported_dtype():
    with pytest.raises(pf.DTypeError):
        pf.jit(lambda x: x + 1)(torch.zeros(3, dtype=torch.complex64))


# -- no silent wrong answers -----------------------------------------------------------------
def test_new_shape_recompiles(rng):
    f = pf.jit(lambda x: x - x.mean(axis=-1, keepdims=True))
    a, b, c = make(rng, (4, 8)), make(rng, (3, 5)), make(rng, (4, 8, 2))
    for x in (a, b, c, a):
        x64 = f64(x)
        assert_close(f(x), x64 - x64.mean(axis=-1, keepdims=True), "float32")


def test_new_dtype_recompiles(rng):
    f = pf.jit(lambda x: x * 3 + 1)
    for dtype in ("float32", "float64", "int32", "float16", "float32"):
        x = make(rng, (5, 6), dtype)
        assert_close(f(x), f64(x) * 3 + 1, dtype)


def test_non_contiguous_after_contiguous_of_the_same_shape(rng):
    f = pf.jit(lambda x, b: (x + b).sum(axis=1))
    base = make(rng, (12, 10))
    b = make(rng, (10,))
    variants = [base[:6],                         # contiguous (6, 10)
                base[::2],                        # every other row
                make(rng, (10, 6)).T,             # column-major
                base[:6, ::-1],                   # negative stride on the inner axis
                np.broadcast_to(base[:1], (6, 10)),   # stride 0
                base[:6]]                         # and the first one again
    for k, x in enumerate(variants):
        assert_close(f(x, b), (f64(x) + f64(b)).sum(axis=1), "float32", scale=3,
                     label=f"variant {k}")


def test_scalar_argument_value_is_part_of_the_signature(rng):
    f = pf.jit(lambda x, s: x * s)
    x = make(rng, (7,))
    for s in (2.0, 3.0, 2, -1.5, True):
        out = f(x, s)
        assert_close(out, f64(x) * float(s), "float32", label=f"s={s!r}")


def test_same_shape_different_arguments_do_not_alias(rng):
    """The compiled code never keeps a pointer to the previous call's arrays."""
    f = pf.jit(lambda x, y: x * y + 1)
    x1, y1, x2, y2 = (make(rng, (9, 9)) for _ in range(4))
    r1 = f(x1, y1)
    r2 = f(x2, y2)
    assert_close(r1, f64(x1) * f64(y1) + 1, "float32")
    assert_close(r2, f64(x2) * f64(y2) + 1, "float32")
    assert not np.shares_memory(r1, r2)


def test_inputs_are_not_modified(rng):
    x = make(rng, (8, 16))
    keep = x.copy()
    pf.jit(lambda x: pf.exp(x - x.max(axis=-1, keepdims=True)))(x)
    assert np.array_equal(x, keep)


def test_error_leaves_the_function_usable(rng):
    f = pf.jit(lambda a, b: a + b)
    a = make(rng, (3, 4))
    with pytest.raises(pf.ShapeError):
        f(a, make(rng, (5,)))
    assert_close(f(a, a), 2 * f64(a), "float32")


@needs_torch
@pytest.mark.parametrize("fn, name", [
    (lambda x: torch.nn.functional.gelu(x), "torch.nn.functional.gelu"),
    (lambda x: torch.exp(x) + 1, "torch.exp"),
    (lambda x: torch.where(x > 0, x, 0.0), "torch.where"),
])
def test_torch_ops_on_traced_values_say_what_to_use(fn, name):
    """Torch code given to pf.jit or pf.explain: a typed error pointing at torch.compile,
    not torch's "must be Tensor, not Tensor"."""
    x = np.ones(3, np.float32)
    for call in (lambda: pf.jit(fn)(x), lambda: pf.explain(fn, x)):
        with pytest.raises(pf.UnsupportedError, match=rf"{name} was called on a value "
                           r"PowerFusion is tracing.*backend=\"powerfusion\""):
            call()
    compiled = torch.compile(fn, backend="powerfusion")      # the way to run it
    np.testing.assert_allclose(compiled(torch.from_numpy(x)).numpy(), fn(torch.from_numpy(x)))


@needs_torch
def test_torch_constants_of_one_value_embed_like_numpy_ones():
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(pf.jit(lambda v: torch.tensor(2.0) + v)(x), x + 2)
    np.testing.assert_array_equal(pf.jit(lambda v: v * torch.tensor([3.0]).expand(3))(x),
                                  x * 3)
    with pytest.raises(pf.UnsupportedError, match=r"concrete array of shape \(3,\)"):
        pf.jit(lambda v: torch.ones(3) * v)(x)
