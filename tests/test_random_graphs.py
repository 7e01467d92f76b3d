"""Random expression graphs, compiled, against the same code run eagerly on numpy.

Hypothesis draws 1-3 inputs of mutually broadcastable shapes (in random memory
layouts) and a chain of steps: unary ops with safe domains, binary ops with
broadcasting, reductions over random axes with or without keepdims, transposes,
reshapes, slices and concatenations. The steps become one Python function written
with pf.* functions, methods and numpy-protocol calls. Un-jitted it runs on numpy
arrays (the reference); jitted it is traced and compiled.

Values are compared against the eager function run in float64, with a tolerance
that is a small base plus a multiple of how far numpy's own float32 evaluation is
from float64: ill-conditioned graphs (cancellation in sums) get the slack they need,
well-conditioned ones none.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import LAYOUTS, dtype_name, f64, with_layout
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import powerfusion as pf

# -- the op vocabulary: every op works on traced tensors and on numpy arrays -----------------
# Unary ops are Lipschitz with small constants on all of R (no sqrt(|x|) at 0, no exp of
# an unbounded value), so a tiny float32 rounding upstream stays tiny downstream.
UNARY = {
    "neg": lambda x: -x,
    "abs": pf.abs,
    "np.abs": np.abs,
    "tanh": pf.tanh,
    "np.tanh": np.tanh,
    "sigmoid": pf.sigmoid,
    # sin and cos of clamped arguments: huge arguments test range reduction, not fusion
    "sin": lambda x: pf.sin(pf.minimum(pf.maximum(x, -100.0), 100.0)),
    "np.cos": lambda x: np.cos(np.clip(x, -100.0, 100.0)),
    "erf": pf.erf,
    "relu": pf.relu,
    "silu": pf.silu,
    "gelu": pf.gelu,
    "gelu_tanh": lambda x: pf.gelu(x, approximate="tanh"),
    "exp_neg_abs": lambda x: pf.exp(-pf.abs(x)),
    "np.exp_neg_abs": lambda x: np.exp(-np.abs(x)),
    "log1p_abs": lambda x: pf.log(pf.abs(x) + 1.0),
    "sqrt1p_abs": lambda x: pf.sqrt(pf.abs(x) + 1),
    "rsqrt1p_abs": lambda x: pf.rsqrt(pf.abs(x) + 1.0),
    "affine": lambda x: x * 0.5 + 1.0,
    "rsub": lambda x: 2.0 - x,
    "clamped_square": lambda x: pf.minimum(pf.maximum(x, -3.0), 3.0) ** 2,
    "leaky_relu": lambda x: pf.where(x > 0, x, 0.1 * x),
}

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "safe_div": lambda a, b: a / (pf.abs(b) + 1.0),
    "maximum": pf.maximum,
    "np.minimum": np.minimum,
    "where_gt": lambda a, b: pf.where(a > b, a, b),           # continuous in a and b
    "np.where_le": lambda a, b: np.where(a <= b, a, b),
}

REDUCE = {
    "sum": lambda x, axis, keepdims: x.sum(axis=axis, keepdims=keepdims),
    "mean": lambda x, axis, keepdims: pf.mean(x, axis=axis, keepdims=keepdims),
    "max": lambda x, axis, keepdims: np.max(x, axis=axis, keepdims=keepdims),
    "min": lambda x, axis, keepdims: x.min(axis=axis, keepdims=keepdims),
    "np.sum": lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims),
}


# -- drawing a program -----------------------------------------------------------------------
def _broadcastable(a: tuple, b: tuple) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def _draw_step(draw, shapes: list[tuple]):
    """One step as (kind, operand indices, parameters), valid for the current shapes."""
    kind = draw(st.sampled_from(
        ["unary"] * 4 + ["binary"] * 4 + ["reduce"] * 3 + ["transpose", "reshape", "slice",
                                                           "concat"]), label="kind")
    # prefer recent values, so that chains get deep
    i = draw(st.integers(0, len(shapes) - 1).map(lambda k: len(shapes) - 1 - k
                                                       if k % 2 else k), label="operand")
    shape = shapes[i]
    nd = len(shape)
    if kind == "unary":
        return ("unary", (i,), draw(st.sampled_from(sorted(UNARY)), label="unary"))
    if kind == "binary":
        partners = [j for j, s in enumerate(shapes) if _broadcastable(shape, s)]
        j = draw(st.sampled_from(partners), label="partner")
        swap = draw(st.booleans(), label="swap")
        name = draw(st.sampled_from(sorted(BINARY)), label="binary")
        return ("binary", (j, i) if swap else (i, j), name)
    if kind == "reduce":
        name = draw(st.sampled_from(sorted(REDUCE)), label="reduce")
        keepdims = draw(st.booleans(), label="keepdims")
        if nd == 0:
            return ("reduce", (i,), (name, None, keepdims))
        form = draw(st.sampled_from(["none", "int", "negative", "tuple"]), label="axis form")
        if form == "none":
            axis = None
        elif form == "int":
            axis = draw(st.integers(0, nd - 1), label="axis")
        elif form == "negative":
            axis = draw(st.integers(-nd, -1), label="axis")
        else:
            axis = tuple(sorted(draw(st.sets(st.integers(0, nd - 1), min_size=1,
                                                  max_size=nd), label="axes")))
        return ("reduce", (i,), (name, axis, keepdims))
    if kind == "transpose":
        perm = tuple(draw(st.permutations(range(nd)), label="perm"))
        spelling = draw(st.sampled_from(["method", "pf", "np", "T"]), label="spelling")
        return ("transpose", (i,), (perm, spelling))
    if kind == "reshape":
        factors = _prime_factors(math.prod(shape))
        ndim = draw(st.integers(1, 4), label="new ndim")
        where = [draw(st.integers(0, ndim - 1), label="factor slot") for _ in factors]
        new = [1] * ndim
        for f, k in zip(factors, where):
            new[k] *= f
        if draw(st.booleans(), label="use -1") and ndim > 1:
            new[draw(st.integers(0, ndim - 1), label="-1 slot")] = -1
        return ("reshape", (i,), tuple(new))
    if kind == "slice":
        if nd == 0:
            return ("unary", (i,), "neg")
        axis = draw(st.integers(0, nd - 1), label="slice axis")
        n = shape[axis]
        start = draw(st.integers(0, n - 1), label="start")
        stop = draw(st.integers(start + 1, n), label="stop")
        negative = draw(st.booleans(), label="negative stop")
        return ("slice", (i,), (axis, start, stop - n if negative and stop < n else stop))
    # concat: pieces agree on every axis but one
    if nd == 0:
        return ("unary", (i,), "abs")
    axis = draw(st.integers(-nd, nd - 1), label="concat axis")
    a = axis % nd
    partners = [j for j, s in enumerate(shapes)
                if len(s) == nd and all(s[k] == shape[k] for k in range(nd) if k != a)]
    others = draw(st.lists(st.sampled_from(partners), min_size=1, max_size=2),
                       label="pieces")
    return ("concat", (i, *others), axis)


def _apply(step, values):
    kind, operands, param = step
    args = [values[k] for k in operands]
    if kind == "unary":
        return UNARY[param](args[0])
    if kind == "binary":
        return BINARY[param](*args)
    if kind == "reduce":
        name, axis, keepdims = param
        return REDUCE[name](args[0], axis, keepdims)
    if kind == "transpose":
        perm, spelling = param
        x = args[0]
        if spelling == "T" and perm == tuple(reversed(range(len(perm)))):
            return x.T
        if spelling == "pf":
            return pf.transpose(x, perm)
        if spelling == "np":
            return np.transpose(x, perm)
        return x.transpose(perm)
    if kind == "reshape":
        return args[0].reshape(param)
    if kind == "slice":
        axis, start, stop = param
        index = (slice(None),) * axis + (slice(start, stop),)
        return args[0][index]
    if kind == "concat":
        return pf.concatenate(args, axis=param)
    raise AssertionError(kind)


def make_function(n_inputs: int, steps: list, outputs: list[int]):
    """The program as a plain Python function of its inputs."""
    def program(*inputs):
        assert len(inputs) == n_inputs
        values = list(inputs)
        for step in steps:
            values.append(_apply(step, values))
        results = tuple(values[k] for k in outputs)
        return results[0] if len(results) == 1 else results
    program.steps = steps            # for the failure report
    return program


@st.composite
def programs(draw):
    """(function, inputs, description) for one random graph."""
    n_inputs = draw(st.integers(1, 3), label="inputs")
    shapes = draw(mutually_broadcastable_shapes(num_shapes=n_inputs, min_dims=0, max_dims=3,
                                                min_side=1, max_side=7), label="shapes")
    shapes = [tuple(s) for s in shapes.input_shapes]
    dtypes = [draw(st.sampled_from(["float32", "float32", "float32", "float64"]),
                   label="dtype") for _ in shapes]
    layouts = [draw(st.sampled_from(LAYOUTS), label="layout") for _ in shapes]
    seed = draw(st.integers(0, 2 ** 32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    inputs = []
    for shape, dtype, layout in zip(shapes, dtypes, layouts):
        x = (rng.standard_normal(shape) * 1.5).astype(dtype)
        inputs.append(with_layout(x, layout))
    # grow the program, tracking shapes by running it eagerly as it is drawn
    n_steps = draw(st.integers(1, 6), label="steps")
    steps, values = [], [np.asarray(x, dtype=np.float64) for x in inputs]
    for _ in range(n_steps):
        step = _draw_step(draw, [v.shape for v in values])
        steps.append(step)
        values.append(np.asarray(_apply(step, values)))
    last = len(values) - 1
    outputs = [last]
    if n_steps > 1 and draw(st.booleans(), label="two outputs"):
        outputs.append(draw(st.integers(n_inputs, last - 1), label="second output"))
    fn = make_function(n_inputs, steps, outputs)
    description = (f"inputs: {[(s, d, l) for s, d, l in zip(shapes, dtypes, layouts)]}\n"
                   f"steps: {steps}\noutputs: {outputs}")
    return fn, inputs, description


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


@settings(max_examples=40, deadline=None, derandomize=True, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(programs())
def test_random_graph_matches_numpy(program):
    fn, inputs, description = program
    eager = _as_tuple(fn(*inputs))                                  # numpy's answer
    exact = _as_tuple(fn(*[np.asarray(x, dtype=np.float64) for x in inputs]))
    got = _as_tuple(pf.jit(fn)(*inputs))
    assert len(got) == len(eager), description
    for k, (g, e, x) in enumerate(zip(got, eager, exact)):
        e = np.asarray(e)
        where = f"output {k}\n{description}"
        assert isinstance(g, np.ndarray), where
        assert g.shape == e.shape, f"shape {g.shape}, numpy {e.shape}; {where}"
        assert dtype_name(g.dtype) == dtype_name(e.dtype), \
            f"dtype {g.dtype}, numpy {e.dtype}; {where}"
        x = np.asarray(x, dtype=np.float64)
        assert np.isfinite(x).all(), where
        magnitude = max(1.0, float(np.abs(x).max(initial=0.0)))
        numpy_error = float(np.abs(f64(e) - x).max(initial=0.0))
        base = 1e-5 if e.dtype == np.float32 else 1e-9
        np.testing.assert_allclose(f64(g), x, rtol=base,
                                   atol=base * magnitude + 8 * numpy_error, err_msg=where)


# -- the generator itself, without the compiler ----------------------------------------------
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_random_programs_are_valid_numpy(program):
    """Every drawn program runs eagerly, gives finite values, and is traceable: the
    strategy never draws something numpy rejects, so compiled failures are real."""
    from powerfusion.frontend.tracing import trace

    fn, inputs, description = program
    for out in _as_tuple(fn(*inputs)):
        assert np.isfinite(f64(out)).all(), description
    graph, _ = trace(fn, inputs)
    assert len(graph.outputs) == len(_as_tuple(fn(*inputs)))


def test_the_generator_covers_every_kind_of_step():
    """Across a fixed sample, every op kind and every vocabulary entry appears."""
    from hypothesis import find
    from hypothesis.errors import NoSuchExample

    seen = set()

    def record(program):
        for kind, _, param in program[0].steps:
            seen.add(kind)
            if kind in ("unary", "binary"):
                seen.add(param)
        return False

    with pytest.raises(NoSuchExample):   # find() never succeeds: it only walks the examples
        find(programs(), record, settings=settings(max_examples=300, derandomize=True,
                                                   database=None, deadline=None,
                                                   suppress_health_check=list(HealthCheck)))
    for kind in ("unary", "binary", "reduce", "transpose", "reshape", "slice", "concat"):
        assert kind in seen, kind
    missing = (set(UNARY) | set(BINARY)) - seen
    assert len(missing) <= 3, f"never drawn: {sorted(missing)}"
