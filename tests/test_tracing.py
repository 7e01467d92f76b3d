"""Tracing frontend, pf.* functions and the numpy oracle (pf.jit's argument handling is
in test_jit_arguments.py).

The same Python function runs twice: un-jitted on numpy arrays (numpy's answer) and
traced into a Graph that `graph.reference.evaluate` runs. They must agree in shape,
dtype and value, and every traced graph must satisfy `graph.check`.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import powerfusion as pf
from powerfusion.dtypes import DType
from powerfusion.frontend.tracing import trace
from powerfusion.graph.graph import check
from powerfusion.graph.ops import Op
from powerfusion.graph.reference import (bfloat16_to_float32, evaluate,
                                         float32_to_bfloat16_bits, round_to_bfloat16)

RNG = np.random.default_rng(0)
TOL = {np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-12}
DTYPES = [np.bool_, np.int32, np.int64, np.float16, np.float32, np.float64]


def sample(shape, dtype, positive=False):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return RNG.random(shape) > 0.5
    if dtype.kind == "i":
        return RNG.integers(1 if positive else -5, 6, shape).astype(dtype)
    x = RNG.standard_normal(shape)
    return (np.abs(x) + 0.1 if positive else x).astype(dtype)


def traced(fn, *args):
    """fn traced on args and evaluated by the oracle; the graph is checked."""
    graph, structure = trace(fn, args)
    check(graph)
    outs = evaluate(graph, [a for a in args if isinstance(a, (np.ndarray, np.generic))])
    return graph, (outs[0] if structure == "single" else outs)


def assert_same(got, want):
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if want.dtype.kind == "f":
        tol = TOL[want.dtype.type]
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


def check_against_numpy(fn, *args):
    graph, got = traced(fn, *args)
    with np.errstate(all="ignore"):
        want = fn(*args)
    assert_same(got, want)
    return graph


def ops_of(graph):
    return [n.op for n in graph.toposort()]


# -- element-wise ops, dtypes, broadcasting ---------------------------------------------
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "maximum": np.maximum, "minimum": np.minimum,
    "pf.maximum": pf.maximum, "pf.minimum": pf.minimum,
}


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("da", DTYPES)
@pytest.mark.parametrize("db", DTYPES)
def test_binary_promotion_matches_numpy(name, da, db):
    fn = BINARY[name]
    a, b = sample((3, 4), da), sample((4,), db, positive=True)
    if name == "sub" and da == db == np.bool_:
        with pytest.raises(pf.DTypeError):
            trace(fn, (a, b))
        return
    check_against_numpy(fn, a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scalar", [2, -3, 0.5, True])
def test_python_scalars_are_weakly_typed(dtype, scalar):
    x = sample((5,), dtype, positive=True)
    fns = [lambda x: x + scalar, lambda x: scalar * x, lambda x: x / scalar,
           lambda x: x < scalar, lambda x: x == scalar, lambda x: pf.maximum(x, scalar)]
    if dtype != np.bool_ or not isinstance(scalar, bool):
        fns.append(lambda x: scalar - x)
    for fn in fns:
        check_against_numpy(fn, x)


@pytest.mark.parametrize("op", ["<", "<=", ">", ">=", "==", "!="])
@pytest.mark.parametrize("da", DTYPES)
@pytest.mark.parametrize("db", [np.int32, np.float32, np.bool_])
def test_comparisons(op, da, db):
    fn = eval(f"lambda a, b: a {op} b")
    graph = check_against_numpy(fn, sample((2, 3), da), sample((2, 3), db))
    assert graph.outputs[0].dtype is DType.bool


def test_comparison_with_out_of_range_int_widens_like_numpy():
    check_against_numpy(lambda x: x < 2**40, sample((4,), np.int32))


def test_out_of_range_scalar_is_a_dtype_error():
    with pytest.raises(pf.DTypeError, match="out of bounds for int32"):
        trace(lambda x: x + 2**40, (sample((4,), np.int32),))


UNARY_NUMPY = ["exp", "log", "sqrt", "tanh", "sin", "cos", "abs", "negative", "square",
               "reciprocal", "absolute", "positive", "tan", "log1p", "expm1", "log2", "log10",
               "exp2", "floor", "ceil", "trunc", "rint", "sign"]


@pytest.mark.parametrize("name", UNARY_NUMPY)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
def test_numpy_unary_ufuncs(name, dtype):
    if name == "reciprocal" and dtype == np.int32:
        with pytest.raises(pf.DTypeError):
            trace(np.reciprocal, (sample((3,), dtype),))
        return
    check_against_numpy(getattr(np, name), sample((3, 5), dtype, positive=True))


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "tanh", "sin", "cos", "abs", "tan",
                                  "log1p", "expm1", "log2", "log10", "exp2", "floor", "ceil",
                                  "trunc", "rint", "round"])
@pytest.mark.parametrize("dtype", [np.bool_, np.int64, np.float32])
def test_pf_unary_matches_numpy_and_its_dtype_rules(name, dtype):
    x = sample((4, 3), dtype, positive=True)
    check_against_numpy(getattr(pf, name), x)
    with np.errstate(all="ignore"):
        assert_same(getattr(pf, name)(x), getattr(np, name)(x))


def _gelu_ref(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


PF_ONLY = {
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "erf": np.vectorize(math.erf),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0),
    "gelu": _gelu_ref,
}


@pytest.mark.parametrize("name", PF_ONLY)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_pf_functions_traced_and_concrete(name, dtype):
    x = sample((6, 7), dtype, positive=name == "rsqrt")
    want = PF_ONLY[name](x.astype(np.float64)).astype(dtype)
    fn = getattr(pf, name)
    assert_same(fn(x), want)                 # un-jitted: numpy
    assert_same(traced(fn, x)[1], want)      # traced: the oracle


def test_gelu_tanh_and_bad_approximation():
    x = sample((50,), np.float32)
    t = x.astype(np.float64)
    want = 0.5 * t * (1 + np.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t**3)))
    graph, got = traced(lambda x: pf.gelu(x, approximate="tanh"), x)
    assert Op.GELU_TANH in ops_of(graph)
    assert_same(got, want.astype(np.float32))
    with pytest.raises(ValueError, match="approximate"):
        pf.gelu(x, approximate="erf")


def test_bool_negation_and_relu_are_dtype_errors():
    b = sample((3,), np.bool_)
    for fn in (lambda x: -x, pf.relu, np.negative):
        with pytest.raises(pf.DTypeError):
            trace(fn, (b,))


@pytest.mark.parametrize("shapes", [((3, 1, 5), (4, 5)), ((), (2, 3)), ((2, 1), (1, 3)),
                                    ((1,), (4, 1, 1)), ((0, 3), (1, 3))])
def test_broadcasting_is_explicit(shapes):
    a, b = sample(shapes[0], np.float32), sample(shapes[1], np.float32)
    graph = check_against_numpy(lambda a, b: a * b + a, a, b)
    assert all(n.op is not Op.EXPAND or n.srcs[0].shape != n.shape for n in graph.toposort())


def test_bad_broadcast_names_both_shapes():
    with pytest.raises(pf.ShapeError, match=r"\(2, 3\) and \(4,\)"):
        trace(lambda a, b: a + b, (np.zeros((2, 3)), np.zeros(4)))


@pytest.mark.parametrize("exponent, op", [(2, Op.MUL), (0.5, Op.SQRT), (-1, Op.DIV),
                                          (-0.5, Op.WHERE), (3, Op.MUL), (7, Op.MUL),
                                          (1.7, Op.POW)])   # -0.5: rsqrt, -inf selected
def test_power_with_scalar_exponent(exponent, op):
    x = sample((4, 4), np.float32, positive=True)
    graph = check_against_numpy(lambda x: x ** exponent, x)
    assert graph.outputs[0].op is op
    check_against_numpy(lambda x: 2.0 ** x, x)
    check_against_numpy(lambda x, y: np.power(x, y), x, x)


def test_integer_power():
    x = sample((5,), np.int32)
    check_against_numpy(lambda x: x ** 2, x)
    check_against_numpy(lambda x: x ** 0.5 if False else x ** 3, x)
    with pytest.raises(pf.DTypeError, match="negative integer power"):
        trace(lambda x: x ** -1, (x,))


def test_logical_ops():
    a, b = sample((3, 4), np.bool_), sample((4,), np.bool_)
    for fn in (lambda a, b: a & b, lambda a, b: a | b, lambda a, b: ~a | b,
               np.logical_and, np.logical_or, np.logical_xor, lambda a, b: np.logical_not(a)):
        check_against_numpy(fn, a, b)
    i = sample((4,), np.int32)
    check_against_numpy(lambda i, a: np.logical_and(i, a), i, a)
    for fn in (lambda i, a: i & a, lambda i, a: ~i):
        with pytest.raises(pf.DTypeError, match="bool"):
            trace(fn, (i, a))


def test_isnan_isinf_isfinite():
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0], np.float32)
    for fn in (np.isnan, np.isinf, np.isfinite):
        check_against_numpy(fn, x)


STEPS = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "max": np.maximum, "min": pf.minimum, "where": lambda a, b: np.where(a > b, a, b * 2),
    "tanh": lambda a, b: np.tanh(a), "abs": lambda a, b: abs(a), "neg": lambda a, b: -b,
    "sum": lambda a, b: a.sum(axis=-1, keepdims=True) if a.ndim else a,
    "amax": lambda a, b: np.max(a, axis=0, keepdims=True) if a.ndim else a,
}


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_expressions_match_numpy(data):
    shapes = data.draw(mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=4))
    dtypes = data.draw(st.lists(st.sampled_from([np.float32, np.float64, np.int32,
                                                  np.int64]), min_size=3, max_size=3))
    program = data.draw(st.lists(st.tuples(st.sampled_from(sorted(STEPS)),
                                           st.integers(0, 9), st.integers(0, 9)),
                                 min_size=1, max_size=8))
    args = [sample(shape, dtype) for shape, dtype in zip(shapes.input_shapes, dtypes)]

    def fn(*xs):
        values = list(xs)
        for name, i, j in program:
            values.append(STEPS[name](values[i % len(values)], values[j % len(values)]))
        return values[-1]
    graph, got = traced(fn, *args)
    want = np.asarray(fn(*args))
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# -- where, casts ------------------------------------------------------------------------
@pytest.mark.parametrize("where", [np.where, pf.where])
def test_where(where):
    c, x, y = sample((3, 4), np.bool_), sample((4,), np.float32), sample((3, 1), np.float16)
    check_against_numpy(lambda c, x, y: where(c, x, y), c, x, y)
    check_against_numpy(lambda c, x: where(c, x, 0), c, x)
    check_against_numpy(lambda c, x: where(x > 0, 1, 2.5), c, x)
    check_against_numpy(lambda x: where(x, x, -1), sample((4,), np.int32))
    with pytest.raises(pf.UnsupportedError, match="data-dependent"):
        trace(lambda c: np.where(c), (c,))


@pytest.mark.parametrize("src", DTYPES)
@pytest.mark.parametrize("dst", DTYPES)
def test_astype(src, dst):
    x = sample((2, 5), src) * (3 if np.dtype(src).kind != "b" else 1)
    if np.dtype(src).kind != "b":
        x = x.astype(src)
    graph = check_against_numpy(lambda x: x.astype(dst), x)
    assert graph.outputs[0].dtype is pf.DType[np.dtype(dst).name]


def test_bfloat16_cast_and_arithmetic_round_each_op():
    x = sample((64,), np.float32)
    graph, got = traced(lambda x: (x.astype(pf.bfloat16) * 3 + 1).astype(pf.float32), x)
    step = round_to_bfloat16(x)
    step = round_to_bfloat16(step * np.float32(3))
    assert_same(got, round_to_bfloat16(step + np.float32(1)))
    graph, bits = traced(lambda x: pf.exp(x.astype(pf.bfloat16)), x)
    assert bits.dtype == np.uint16
    want = np.exp(round_to_bfloat16(x).astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(bits, float32_to_bfloat16_bits(want))


def test_bfloat16_rounding_helper():
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5, np.inf, np.nan, 1e-40], np.float32)
    bits = float32_to_bfloat16_bits(x)
    back = bfloat16_to_float32(bits)
    assert back[0] == 1.0 and back[1] == 1.0 and back[2] == 1 + 2**-6   # ties to even
    assert back[3] == -2.5 and back[4] == np.inf and np.isnan(back[5])


# -- reductions --------------------------------------------------------------------------
AXES = [None, 0, -1, (0, 2), (-1, 1), ()]


@pytest.mark.parametrize("method", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduction_methods(method, axis, keepdims):
    x = sample((3, 4, 5), np.float32)
    check_against_numpy(lambda x: getattr(x, method)(axis=axis, keepdims=keepdims), x)
    check_against_numpy(lambda x: getattr(pf, method)(x, axis=axis, keepdims=keepdims), x)
    check_against_numpy(lambda x: getattr(np, method)(x, axis=axis, keepdims=keepdims), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reduction_dtypes_match_numpy(dtype):
    x = sample((4, 6), dtype)
    for fn in (lambda x: x.sum(axis=1), lambda x: x.mean(axis=-1), np.amax, np.amin,
               lambda x: np.sum(x, 0, keepdims=True), lambda x: x.sum(dtype=np.float32)):
        check_against_numpy(fn, x)


def test_reductions_keep_dims_then_reshape():
    graph, _ = traced(lambda x: x.sum(axis=(2, 0)), sample((2, 3, 4), np.float32))
    (red,) = [n for n in graph.toposort() if n.op is Op.SUM]
    assert red.arg == (0, 2) and red.shape == (1, 3, 1)
    assert graph.outputs[0].op is Op.RESHAPE and graph.outputs[0].shape == (3,)


def test_var_std_and_ufunc_reduce():
    x = sample((4, 9), np.float64)
    check_against_numpy(lambda x: np.var(x, axis=-1), x)
    check_against_numpy(lambda x: np.std(x, axis=0, keepdims=True, ddof=1), x)
    check_against_numpy(lambda x: np.add.reduce(x, axis=1), x)
    check_against_numpy(lambda x: np.maximum.reduce(x), x)


def test_axis_errors():
    x = np.zeros((2, 3))
    with pytest.raises(pf.ShapeError, match=r"axis 2 is out of bounds .*\(2, 3\)"):
        trace(lambda x: x.sum(axis=2), (x,))
    with pytest.raises(pf.ShapeError, match="duplicate"):
        trace(lambda x: x.max(axis=(1, -1)), (x,))
    with pytest.raises(pf.ShapeError, match="zero-size"):
        trace(lambda x: x.max(axis=0), (np.zeros((0, 3)),))


# -- movement ------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [
    lambda x: x.reshape(6, -1), lambda x: x.reshape((-1,)), lambda x: x.reshape(2, 3, 4),
    lambda x: np.reshape(x, (4, 6)), lambda x: pf.reshape(x, (3, -1, 2)),
    lambda x: x.T, lambda x: x.transpose(), lambda x: x.transpose(1, 0, 2),
    lambda x: x.transpose((2, 0, 1)), lambda x: np.transpose(x, (0, 2, 1)),
    lambda x: pf.transpose(x, (-1, 0, 1)), lambda x: x.transpose(0, 1, 2) + 1,
    lambda x: np.expand_dims(x, (0, -1)), lambda x: np.squeeze(x[:, :1]),
    lambda x: np.swapaxes(x, 0, 2), lambda x: x.flatten(),
    lambda x: np.broadcast_to(x[:1], (5, 3, 4)), lambda x: np.clip(x, -0.5, 0.5),
])
def test_views(fn):
    check_against_numpy(fn, sample((2, 3, 4), np.float32))


def test_reshape_and_transpose_errors():
    x = np.zeros((2, 3))
    with pytest.raises(pf.ShapeError, match=r"\(2, 3\).*\(4, -1\)|\(2, 3\).*into shape"):
        trace(lambda x: x.reshape(4, -1), (x,))
    with pytest.raises(pf.ShapeError, match=r"\(5,\)"):
        trace(lambda x: x.reshape(5), (x,))
    with pytest.raises(pf.ShapeError, match="axes"):
        trace(lambda x: x.transpose(0, 0), (x,))


@pytest.mark.parametrize("index", [
    0, -1, (1, 2), slice(1, 3), (slice(None), slice(0, 4, 2)), (Ellipsis, 1),
    (None, 0, Ellipsis, None), (slice(2, 100), None, slice(1, 2)), (slice(3, 1),),
    (Ellipsis,), (np.int64(1), slice(None, None, 3)), (slice(-3, -1), 2, -2),
])
def test_getitem(index):
    check_against_numpy(lambda x: x[index], sample((4, 5, 6), np.float32))


def test_getitem_int_drops_axis_by_slice_then_reshape():
    graph, _ = traced(lambda x: x[1], sample((3, 4), np.float32))
    out = graph.outputs[0]
    assert out.op is Op.RESHAPE and out.shape == (4,)
    assert out.srcs[0].op is Op.SLICE and out.srcs[0].arg == ((1, 2, 1), (0, 4, 1))


def test_getitem_errors():
    x = np.zeros((3, 4))
    with pytest.raises(pf.UnsupportedError, match="positive steps"):
        trace(lambda x: x[::-1], (x,))
    with pytest.raises(pf.ShapeError, match="out of bounds"):
        trace(lambda x: x[3], (x,))
    with pytest.raises(pf.ShapeError, match="too many indices"):
        trace(lambda x: x[0, 0, 0], (x,))
    with pytest.raises(pf.UnsupportedError, match="advanced or boolean"):
        trace(lambda x: x[x > 0], (x,))
    with pytest.raises(pf.UnsupportedError):
        trace(lambda x: x[[0, 1]], (x,))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate(axis):
    a, b = sample((2, 3), np.float32), sample((2, 3), np.float16)
    check_against_numpy(lambda a, b: pf.concatenate([a, b, a], axis=axis), a, b)
    check_against_numpy(lambda a, b: np.concatenate((a, b), axis), a, b)
    check_against_numpy(lambda a, b: np.stack([a, b], axis), a, b)


def test_concatenate_edge_cases():
    a, e = sample((2, 3), np.float32), np.zeros((0, 3), np.float32)
    check_against_numpy(lambda a, e: np.concatenate([e, a, e]), a, e)
    check_against_numpy(lambda a: np.concatenate([a, a], axis=None), a)
    with pytest.raises(pf.ShapeError, match=r"\(2, 3\), \(2, 4\)"):
        trace(lambda a, b: pf.concatenate([a, b]), (a, np.zeros((2, 4))))


# -- numpy protocols, constants, control flow ----------------------------------------------
def test_numpy_scalars_and_0d_arrays_become_constants():
    x = sample((3,), np.float16)
    graph = check_against_numpy(lambda x: x * np.float32(2) + np.array(1.5), x)
    assert graph.outputs[0].dtype is DType.float64   # numpy scalars are strongly typed
    check_against_numpy(lambda x: np.array(2.0, np.float16) + x, x)   # ndarray op Tensor


def test_closed_over_arrays_must_be_arguments():
    w = np.ones(3, np.float32)
    with pytest.raises(pf.UnsupportedError, match="pass it as an argument"):
        trace(lambda x: x * w, (sample((3,), np.float32),))
    with pytest.raises(pf.UnsupportedError, match="pass it as an argument"):
        trace(lambda x: w + x, (sample((3,), np.float32),))


@pytest.mark.parametrize("fn, name", [
    (np.fft.fft, "numpy.fft.fft"), (np.cumsum, "numpy.cumsum"), (np.arctan, "numpy.arctan"),
    (lambda x: np.add.accumulate(x), "numpy.add.accumulate"), (np.sort, "numpy.sort"),
])
def test_unsupported_numpy_functions_are_named(fn, name):
    with pytest.raises(pf.UnsupportedError, match=f"{name} is not supported"):
        trace(fn, (np.zeros(4, np.float32),))


def test_ufunc_out_and_matmul_are_unsupported():
    x = np.zeros(4, np.float32)
    with pytest.raises(pf.UnsupportedError, match="out="):
        trace(lambda x: np.exp(x, out=x), (x,))
    with pytest.raises(pf.UnsupportedError, match="matmul"):
        trace(lambda x: x @ x, (x,))


@pytest.mark.parametrize("fn", [lambda x: x if x.sum() > 0 else -x, lambda x: float(x[0]),
                                lambda x: int(x.max()), lambda x: [1, 2][x[0]],
                                lambda x: np.asarray(x), lambda x: x.item()])
def test_data_dependent_control_flow_is_unsupported(fn):
    with pytest.raises(pf.UnsupportedError, match="control flow"):
        trace(fn, (np.ones(4, np.float32),))


def test_static_facts_and_results():
    x = np.zeros((2, 3), np.float32)

    def fn(x, s):
        assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2
        assert x.dtype is pf.float32 and x.T.shape == (3, 2)
        return [x * s, x.sum(axis=0)]
    graph, structure = trace(fn, (x, 2.0))
    assert structure == "list" and len(graph.outputs) == 2 and len(graph.inputs) == 1
    with pytest.raises(pf.UnsupportedError, match="returned float"):
        trace(lambda x: 1.0, (x,))
    with pytest.raises(pf.UnsupportedError, match="result 1"):
        trace(lambda x: (x, None), (x,))


def test_layernorm_softmax_composites():
    x, w, b = sample((8, 32), np.float32), sample((32,), np.float32), sample((32,), np.float32)

    def layernorm(x, w, b):
        mu = x.mean(axis=-1, keepdims=True)
        d = x - mu
        return d * pf.rsqrt((d * d).mean(axis=-1, keepdims=True) + 1e-5) * w + b

    def softmax(x):
        e = np.exp(x - np.max(x, axis=-1, keepdims=True))
        return e / np.sum(e, axis=-1, keepdims=True)
    check_against_numpy(layernorm, x, w, b)
    check_against_numpy(softmax, x)
    check_against_numpy(softmax, x.astype(np.float16))


def test_import_does_not_load_torch():
    code = "import sys, powerfusion; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
