"""GIR by hand: the interpreter against numpy, the printer, traffic, the checker, Expr.

No compiler needed: every program here is built statement by statement.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powerfusion.dtypes import DType
from powerfusion.errors import PowerFusionError
from powerfusion.gir.check import GIRError, check
from powerfusion.gir.expr import Expr, Var, flatten, unflatten
from powerfusion.gir.interpreter import OPS, as_storage, run
from powerfusion.gir.ir import (Access, Buffer, Compute, Const, IndexValue, Level, Loop, Move,
                                Parallel, Program, Role, format_program)
from powerfusion.gir.traffic import global_bytes, traffic
from powerfusion.graph.ops import Group, Op

F32, F16, BF16, F64 = DType.float32, DType.float16, DType.bfloat16, DType.float64
I32, I64, BOOL = DType.int32, DType.int64, DType.bool
CORES, SIMD, SERIAL = Parallel.CORES, Parallel.SIMD, Parallel.SERIAL


# -- building programs ------------------------------------------------------------------
def gbuf(name, shape, dtype=F32, role=Role.INPUT) -> Buffer:
    return Buffer(name, Level.GLOBAL, dtype, tuple(shape), role)


def reg(name, dtype=F32) -> Access:
    return Access(Buffer(name, Level.REGISTER, dtype))


def at(buf: Buffer, index) -> Access:
    return Access(buf, Expr.of(index))


def loop(var: Var, kind: Parallel, *body) -> Loop:
    return Loop(var, kind, tuple(body))


def prog(params, *body, name="k") -> Program:
    return Program(name, tuple(params), tuple(body))


M, N = 4, 8
P, I = Var("p", M), Var("i", N)
ROW = Expr.of(P) * N + I                 # element [p, i] of a contiguous [M, N] tensor
X, Y = gbuf("x", (M, N)), gbuf("y", (M, N))
Z = gbuf("z", (M, N), role=Role.OUTPUT)


def add_program() -> Program:
    a, b, c = reg("a"), reg("b"), reg("c")
    return prog((X, Y, Z), loop(P, CORES, loop(I, SIMD, Move(a, at(X, ROW)), Move(b, at(Y, ROW)),
                                               Compute(Op.ADD, c, (a, b)), Move(at(Z, ROW), c))),
                name="add")


def row_sum_program() -> Program:
    out = gbuf("s", (M,), role=Role.OUTPUT)
    acc, r = reg("acc"), reg("r")
    return prog((X, out), loop(P, CORES, Compute(None, acc, (Const(0.0, F32),)),
                               loop(I, SIMD, Move(r, at(X, ROW)), Compute(Op.ADD, acc, (acc, r))),
                               Move(at(out, P), acc)))


def softmax_program(m=M, n=N) -> Program:
    """Row softmax in the naive form: max, exp(x - max), sum and quotient via globals."""
    p, i = Var("p", m), Var("i", n)
    row = Expr.of(p) * n + i
    x, y = gbuf("x", (m, n)), gbuf("y", (m, n), role=Role.OUTPUT)
    mx, ex, sm = (gbuf(nm, shape, role=Role.TEMP) for nm, shape in
                  (("mx", (m,)), ("ex", (m, n)), ("sm", (m,))))
    r, t, u = reg("r"), reg("t"), reg("u")
    acc, total = reg("acc"), reg("total")
    return prog((x, y, mx, ex, sm), loop(
        p, CORES,
        Compute(None, acc, (Const(float("-inf"), F32),)),
        loop(i, SIMD, Move(r, at(x, row)), Compute(Op.MAXIMUM, acc, (acc, r))),
        Move(at(mx, p), acc),
        loop(i, SIMD, Move(r, at(x, row)), Move(t, at(mx, p)), Compute(Op.SUB, u, (r, t)),
             Compute(Op.EXP, u, (u,)), Move(at(ex, row), u)),
        Compute(None, total, (Const(0.0, F32),)),
        loop(i, SIMD, Move(r, at(ex, row)), Compute(Op.ADD, total, (total, r))),
        Move(at(sm, p), total),
        loop(i, SIMD, Move(r, at(ex, row)), Move(t, at(sm, p)), Compute(Op.DIV, u, (r, t)),
             Move(at(y, row), u))), name="softmax")


def run_rows(program, **inputs) -> dict[str, np.ndarray]:
    return run(program, {k: v.reshape(-1) for k, v in inputs.items()})


def f32(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


# -- interpreter -------------------------------------------------------------------------
def test_elementwise_add_matches_numpy(rng):
    x, y = f32(rng, M, N), f32(rng, M, N)
    out = run_rows(add_program(), x=x, y=y)
    np.testing.assert_array_equal(out["z"].reshape(M, N), x + y)


def test_outputs_are_written_into_the_callers_array(rng):
    x, y, z = f32(rng, M, N), f32(rng, M, N), np.zeros((M, N), np.float32)
    run(add_program(), {"x": x, "y": y, "z": z})
    np.testing.assert_array_equal(z, x + y)


def test_row_sum_accumulates_in_order(rng):
    x = f32(rng, M, N)
    expected = np.zeros(M, np.float32)
    for k in range(N):
        expected += x[:, k]
    np.testing.assert_array_equal(run_rows(row_sum_program(), x=x)["s"], expected)


def test_naive_softmax_matches_numpy(rng):
    x = f32(rng, M, N)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    y = run_rows(softmax_program(), x=x)["y"].reshape(M, N)
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-6)


def test_local_tile_round_trip_reverses_rows(rng):
    tile = Buffer("tile", Level.LOCAL, F32, (N,))
    j = Var("j", N)
    r = reg("r")
    program = prog((X, Z), loop(P, CORES,
                                loop(I, SIMD, Move(r, at(X, ROW)), Move(at(tile, I), r)),
                                loop(j, SIMD, Move(r, at(tile, N - 1 - Expr.of(j))),
                                     Move(at(Z, Expr.of(P) * N + j), r))))
    check(program)
    x = f32(rng, M, N)
    np.testing.assert_array_equal(run_rows(program, x=x)["z"].reshape(M, N), x[:, ::-1])


def test_cast_to_float16_rounds_other_computes_do_not():
    x, z = gbuf("x", (1,)), gbuf("z", (2,), role=Role.OUTPUT)
    r, h, kept = reg("r"), reg("h", F16), reg("kept", F16)
    program = prog((x, z), Move(r, at(x, 0)), Compute(Op.CAST, h, (r,)),
                   Compute(Op.ADD, kept, (r, Const(0.0, F16))),
                   Move(at(z, 0), h), Move(at(z, 1), kept))
    third = np.float32(1 / 3)
    out = run(program, {"x": np.array([third])})["z"]
    assert out[0] == np.float32(np.float16(third)) != third
    assert out[1] == third               # a float16 register holds float32 until rounded


def test_move_into_bfloat16_rounds_to_nearest_even_and_keeps_nan():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([1.0, 1 / 3, 1 + 2**-8, 1 + 3 * 2**-8, -2.5e-3, np.inf, 3e38, 0.0],
                      np.float32)
    n = values.size + 1
    x, z = gbuf("x", (n,)), gbuf("z", (n,), BF16, Role.OUTPUT)
    i, r = Var("i", n), reg("r")
    program = prog((x, z), loop(i, SERIAL, Move(r, at(x, i)), Move(at(z, i), r)))
    out = run(program, {"x": np.append(values, np.float32(np.nan))})["z"]
    assert out.dtype == np.uint16
    expected = values.astype(ml_dtypes.bfloat16).view(np.uint16)
    np.testing.assert_array_equal(out[:-1], expected)
    assert np.isnan((out[-1:].astype(np.uint32) << 16).view(np.float32)[0])


def test_bfloat16_input_is_read_from_bit_patterns():
    x, z = gbuf("x", (2,), BF16), gbuf("z", (2,), role=Role.OUTPUT)
    i, r = Var("i", 2), reg("r", BF16)
    program = prog((x, z), loop(i, SIMD, Move(r, at(x, i)), Move(at(z, i), r)))
    out = run(program, {"x": np.array([0x3F80, 0xC040], np.uint16)})["z"]
    np.testing.assert_array_equal(out, [1.0, -3.0])


def test_index_value_and_where_keep_the_strict_lower_triangle(rng):
    r, cond, v = reg("r"), reg("c", BOOL), reg("v")
    program = prog((X, Z), loop(P, CORES, loop(
        I, SIMD, Move(r, at(X, ROW)), Compute(Op.LT, cond, (IndexValue(Expr.of(I)),
                                                           IndexValue(Expr.of(P)))),
        Compute(Op.WHERE, v, (cond, r, Const(0.0, F32))), Move(at(Z, ROW), v))))
    check(program)
    x = f32(rng, M, N)
    np.testing.assert_array_equal(run_rows(program, x=x)["z"].reshape(M, N), np.tril(x, -1))


def test_negative_strides_read_through_a_base_offset(rng):
    x = gbuf("x", (M, N))
    r = reg("r")
    flipped = -Expr.of(P) * N + I        # x[::-1] of a contiguous [M, N] array
    program = prog((x, Z), loop(P, CORES, loop(I, SIMD, Move(r, at(x, flipped)),
                                               Move(at(Z, ROW), r))))
    check(program)                        # inputs may be read at negative offsets
    data = f32(rng, M, N)
    flat, base = as_storage(data[::-1])
    assert base == (M - 1) * N
    out = run(program, {"x": (flat, base)})["z"].reshape(M, N)
    np.testing.assert_array_equal(out, data[::-1])   # z is a contiguous copy of the view


def test_as_storage_writes_reach_a_transposed_view():
    data = np.zeros((3, 2), np.float32)
    flat, base = as_storage(data.T)
    flat[base + 1] = 7.0                 # memory order: element [0, 1] of data
    assert data[0, 1] == 7.0


def unary(op: Op, value, dtype=F32, dst=None):
    """op applied by the interpreter to one value loaded from a 1-element buffer."""
    dst = dst or dtype
    x, z = gbuf("x", (1,), dtype), gbuf("z", (1,), dst, Role.OUTPUT)
    r, v = reg("r", dtype), reg("v", dst)
    program = prog((x, z), Move(r, at(x, 0)), Compute(op, v, (r,)), Move(at(z, 0), v))
    return run(program, {"x": np.array([value], dtype.to_numpy())})["z"][0]


def binary(op: Op, a, b, dtype=F32, dst=None):
    dst = dst or dtype
    z = gbuf("z", (1,), dst, Role.OUTPUT)
    v = reg("v", dst)
    program = prog((z,), Compute(op, v, (Const(a, dtype), Const(b, dtype))), Move(at(z, 0), v))
    return run(program, {})["z"][0]


FLOAT64_REFERENCE = {
    Op.NEG: lambda x: -x, Op.EXP: math.exp, Op.LOG: math.log, Op.SQRT: math.sqrt,
    Op.RSQRT: lambda x: 1 / math.sqrt(x), Op.ABS: abs, Op.TANH: math.tanh, Op.ERF: math.erf,
    Op.SIGMOID: lambda x: 1 / (1 + math.exp(-x)), Op.RELU: lambda x: max(x, 0.0),
    Op.SILU: lambda x: x / (1 + math.exp(-x)),
    Op.GELU: lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))),
    Op.GELU_TANH: lambda x: 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi)
                                                     * (x + 0.044715 * x ** 3))),
    Op.SIN: math.sin, Op.COS: math.cos, Op.TAN: math.tan, Op.LOG1P: math.log1p,
    Op.EXPM1: math.expm1, Op.LOG2: math.log2, Op.LOG10: math.log10, Op.EXP2: lambda x: 2 ** x,
    Op.FLOOR: math.floor, Op.CEIL: math.ceil, Op.TRUNC: math.trunc, Op.RINT: round,
    Op.SIGN: lambda x: (x > 0) - (x < 0),
}


@pytest.mark.parametrize("op", sorted(FLOAT64_REFERENCE, key=lambda o: o.name))
@pytest.mark.parametrize("value", [0.7, 1.9, -0.4])
def test_unary_float_ops(op, value):
    if op in (Op.LOG, Op.SQRT, Op.RSQRT, Op.LOG2, Op.LOG10) and value < 0:
        value = -value
    got = unary(op, value)
    assert got.dtype == np.float32
    assert got == pytest.approx(FLOAT64_REFERENCE[op](float(np.float32(value))), rel=2e-6)


def test_every_elementwise_op_has_an_implementation():
    assert Group.ELEMENTWISE <= OPS.keys()


def test_nan_propagates_through_maximum_minimum_and_relu():
    assert np.isnan(binary(Op.MAXIMUM, float("nan"), 1.0))
    assert np.isnan(binary(Op.MINIMUM, 1.0, float("nan")))
    assert np.isnan(unary(Op.RELU, np.nan))


@pytest.mark.parametrize("a,b,expected", [(7, 2, 3), (-7, 2, -3), (7, -2, -3), (-8, 2, -4)])
def test_integer_division_truncates_toward_zero(a, b, expected):
    assert binary(Op.DIV, a, b, I32) == expected


def test_integer_overflow_wraps():
    assert binary(Op.ADD, 2**31 - 1, 1, I32) == -2**31


def _same(got, want) -> bool:
    """Equal, sign bit included (NaN matches NaN), and of want's type."""
    if type(got) is not type(want):
        return False
    if np.isnan(want):
        return bool(np.isnan(got))
    return bool(got == want) and bool(np.signbit(got) == np.signbit(want))


SPECIAL = [0.0, -0.0, 1.0, -1.0, 5.5, -5.5, 3.0, -3.0, 1e30, -7.25e20, 1e-40, math.inf,
           -math.inf, math.nan]


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_fmod_and_mod_are_numpys_at_special_values(dtype):
    """FMOD is C's fmod (the dividend's sign), MOD numpy's remainder (the divisor's,
    -0 for 1 % -1), exactly, at zeros, infinities, NaN and huge quotients."""
    t = dtype.to_numpy().type
    with np.errstate(all="ignore"):
        for a, b in itertools.product(SPECIAL, SPECIAL):
            assert _same(binary(Op.FMOD, a, b, dtype), np.fmod(t(a), t(b))), (a, b)
            assert _same(binary(Op.MOD, a, b, dtype), np.remainder(t(a), t(b))), (a, b)


@pytest.mark.parametrize("dtype", [I32, DType.int64], ids=str)
def test_integer_fmod_and_mod_are_total(dtype):
    """numpy's integer x % 0 and INT_MIN % -1 are 0 (C's are undefined)."""
    low = -2 ** (dtype.itemsize * 8 - 1)
    values = [0, 1, -1, 7, -7, 3, -3, low, -low - 1]
    t = dtype.to_numpy().type
    with np.errstate(all="ignore"):
        for a, b in itertools.product(values, values):
            assert binary(Op.FMOD, a, b, dtype) == np.fmod(t(a), t(b)), (a, b)
            assert binary(Op.MOD, a, b, dtype) == np.remainder(t(a), t(b)), (a, b)


def test_pow_and_true_division():
    assert binary(Op.POW, 2.0, 10.0) == 1024.0
    assert binary(Op.DIV, 1.0, 4.0) == 0.25


def test_comparisons_make_bools_from_floats():
    assert binary(Op.LT, 1.0, 2.0, F32, BOOL) is np.True_
    assert binary(Op.GE, 1.0, 2.0, F32, BOOL) is np.False_


def test_conversions_truncate_to_int_and_test_nonzero_for_bool():
    assert unary(Op.CAST, -2.7, F32, I32) == -2
    assert unary(Op.CAST, 2.7, F64, I64) == 2
    assert unary(Op.CAST, 0.5, F32, BOOL) is np.True_
    assert unary(Op.NOT, 0.0, F32, BOOL) is np.True_


def test_out_of_bounds_access_is_an_error():
    x, z = gbuf("x", (2,)), gbuf("z", (2,), role=Role.OUTPUT)
    i, r = Var("i", 3), reg("r")
    program = prog((x, z), loop(i, SERIAL, Move(r, at(x, i)), Move(at(z, 0), r)))
    with pytest.raises(GIRError, match="out of bounds"):
        run(program, {"x": np.zeros(2, np.float32)})


def test_storage_of_the_wrong_dtype_is_an_error():
    with pytest.raises(GIRError, match="float32"):
        run(add_program(), {"x": np.zeros(M * N), "y": np.zeros(M * N, np.float32)})
    with pytest.raises(GIRError, match="input y"):
        run(add_program(), {"x": np.zeros(M * N, np.float32)})


# -- printer -----------------------------------------------------------------------------
def test_printer_shows_header_loops_and_statements():
    text = format_program(softmax_program())
    lines = text.splitlines()
    assert lines[0] == ("kernel softmax(x: float32[4, 8] global input, "
                        "y: float32[4, 8] global output, mx: float32[4] global temp, "
                        "ex: float32[4, 8] global temp, sm: float32[4] global temp)")
    assert lines[1] == "  cores p in 0..4:"
    assert "    compute acc: float32 <- set(-inf)" in lines
    assert "    simd i in 0..8:" in lines
    assert "      move r: float32 <- x[i + 8*p]   (global -> register)" in lines
    assert "      compute acc: float32 <- maximum(acc, r)" in lines
    assert "    move mx[p] <- acc   (register -> global)" in lines


def test_printer_declares_local_buffers_and_is_deterministic():
    tile = Buffer("tile", Level.LOCAL, F16, (N,))
    r = reg("r", F16)

    def build():
        return prog((X, Z), loop(P, CORES, loop(I, SIMD, Move(r, at(X, ROW)),
                                                Move(at(tile, I), r), Move(at(Z, ROW), r))))

    text = format_program(build())
    assert text.splitlines()[1] == "  local tile: float16[8]"
    assert text == format_program(build()) == str(build())


# -- traffic -----------------------------------------------------------------------------
def test_traffic_of_naive_softmax_counts_every_execution():
    m, n = 3, 5
    t = traffic(softmax_program(m, n))
    reads = 2 * m * n + m * n + 2 * m * n + m * n   # x twice, mx per i, ex twice, sm per i
    writes = m + m * n + m + m * n                  # mx, ex, sm, y
    assert t["global"] == {"read": 4 * reads, "write": 4 * writes}
    assert t["register"] == {"read": 4 * writes, "write": 4 * reads}
    assert t["local"] == {"read": 0, "write": 0}
    assert global_bytes(softmax_program(m, n)) == 4 * (reads + writes)


def test_traffic_uses_each_side_s_itemsize():
    x, z = gbuf("x", (N,), F16), gbuf("z", (N,), F64, Role.OUTPUT)
    r = reg("r")
    t = traffic(prog((x, z), loop(I, SIMD, Move(r, at(x, I)), Move(at(z, I), r))))
    assert t["global"] == {"read": 2 * N, "write": 8 * N}
    assert t["register"] == {"read": 4 * N, "write": 4 * N}


# -- checker: the good programs pass, each rule has a program that breaks it -----------
@pytest.mark.parametrize("build", [add_program, row_sum_program, softmax_program])
def test_checker_accepts_well_formed_programs(build):
    check(build())


def test_gir_error_is_a_powerfusion_error_and_an_assertion():
    assert issubclass(GIRError, PowerFusionError) and issubclass(GIRError, AssertionError)


def rejected(program: Program, message: str) -> None:
    with pytest.raises(GIRError, match=message):
        check(program)


def copy_row(*extra, params=(X, Z), src=X, dst=Z, index=ROW, outer=CORES) -> Program:
    r = reg("r")
    return prog(params, loop(P, outer, loop(I, SIMD, Move(r, at(src, index)), *extra,
                                            Move(at(dst, index), r))))


def test_checker_rejects_a_rebound_loop_variable():
    r = reg("r")
    inner = Var("p", 2)
    rejected(prog((X, Z), loop(P, CORES, loop(inner, SIMD, Move(r, at(X, P)),
                                              Move(at(Z, P), r)))), "already bound")


def test_checker_rejects_an_index_over_a_variable_not_in_scope():
    rejected(copy_row(index=Expr.of(Var("q", 4))), "not a variable of an enclosing loop")
    r, j = reg("r"), Var("j", N)
    sibling = loop(j, SIMD, Move(r, at(X, ROW)), Move(at(Z, ROW), r))   # i is not bound here
    rejected(prog((X, Z), loop(P, CORES, loop(I, SIMD, Move(r, at(X, ROW))), sibling)),
             "i\\(extent 8\\), not a variable")


def test_checker_rejects_an_index_value_over_a_variable_not_in_scope():
    v = reg("v", I64)
    rejected(copy_row(Compute(None, v, (IndexValue(Expr.of(Var("q", 4))),))), "q")


def test_checker_rejects_reading_a_register_before_writing_it():
    r, s = reg("r"), reg("s")
    rejected(prog((X, Z), Compute(Op.NEG, s, (r,)), Move(at(Z, 0), s)), "register r")


def test_checker_rejects_reading_after_the_loop_a_register_written_inside():
    r = reg("r")
    rejected(prog((X, Z), loop(P, CORES, loop(I, SIMD, Move(r, at(X, ROW))),
                               Move(at(Z, Expr.of(P) * N), r))), "before any write")


def test_checker_rejects_compute_on_memory_operands():
    c = reg("c")
    rejected(copy_row(Compute(Op.NEG, c, (at(X, ROW),))), "computes take registers")
    rejected(copy_row(Compute(Op.NEG, at(Z, ROW), (reg("r"),))), "computes take registers")


def test_checker_rejects_a_wrong_number_of_operands():
    r, c = reg("r"), reg("c")
    rejected(copy_row(Compute(Op.ADD, c, (r,))), "ADD takes 2")


def test_checker_rejects_a_local_buffer_shared_by_cores_and_written_by_them():
    tile = Buffer("tile", Level.LOCAL, F32, (N,))
    fill = loop(Var("j", N), SIMD, Compute(None, reg("w"), (Const(1.0, F32),)),
                Move(at(tile, Expr.of(Var("j", N))), reg("w")))
    t = reg("t")
    read = copy_row(Move(t, at(tile, I)))       # preloaded once, read by every core
    check(prog(read.params, fill, *read.body))
    written = copy_row(Move(at(tile, I), reg("r")))
    rejected(prog(written.params, fill, *written.body), "written inside one")


def test_checker_rejects_out_of_bounds_accesses():
    small = gbuf("z", (M, N - 1), role=Role.OUTPUT)
    rejected(copy_row(params=(X, small), dst=small), "reaches elements 0..31 of z")
    tile = Buffer("tile", Level.LOCAL, F32, (N,))
    rejected(copy_row(Move(at(tile, Expr.of(I) - 1), reg("r"))), "reaches elements -1..6")
    bad_reg = Access(Buffer("r", Level.REGISTER, F32), Expr(1))
    rejected(copy_row(Compute(None, reg("c"), (bad_reg,))), "indexed by 1")


def test_checker_rejects_a_global_buffer_missing_from_params():
    rejected(copy_row(params=(X,)), "z is not a param")


def test_checker_rejects_two_buffers_of_one_name():
    other_x = gbuf("x", (M, N), F16)
    rejected(copy_row(Move(reg("q", F16), at(other_x, ROW))), "two different buffers")
    rejected(copy_row(Move(reg("r", F16), at(X, ROW))), "two different buffers are named r")


def test_checker_rejects_bad_params():
    rejected(copy_row(params=(X, Z, X)), "listed twice")
    rejected(copy_row(params=(X, Z, Buffer("t", Level.LOCAL, F32, (2,)))), "not global")


def test_checker_rejects_writes_to_inputs():
    rejected(copy_row(params=(X, Y), dst=Y), "input y is written")


# -- Expr --------------------------------------------------------------------------------
@given(st.integers(1, 9), st.integers(2, 9), st.integers(0, 8))
def test_split_then_divide_gives_the_outer_index(extent_i, k, spare):
    i, j = Var("i", extent_i), Var("j", max(1, k - spare))
    flat = Expr.of(i) * k + j
    assert flat // k == Expr.of(i)
    assert flat % k == Expr.of(j)


@given(st.lists(st.integers(1, 6), min_size=1, max_size=4))
def test_flatten_of_unflatten_is_the_identity(shape):
    if math.prod(shape) == 1:
        shape = shape + [2]             # a variable of extent 1 simplifies to 0
    x = Var("x", math.prod(shape))
    assert flatten(unflatten(Expr.of(x), tuple(shape)), tuple(shape)) == Expr.of(x)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.data())
def test_unflatten_agrees_with_numpy(shape, data):
    x = Var("x", math.prod(shape))
    value = data.draw(st.integers(0, x.extent - 1))
    got = tuple(e.evaluate({x: value}) for e in unflatten(Expr.of(x), tuple(shape)))
    assert got == np.unravel_index(value, shape)


VARS = (Var("a", 5), Var("b", 7), Var("c", 12))


def _combine(kind, x, y=None, k=1, width=0):
    """(expr, python function of env) for one construction step."""
    (ex, fx), (ey, fy) = x, y or (Expr(0), lambda env: 0)
    return {
        "add": (ex + ey, lambda env: fx(env) + fy(env)),
        "sub": (ex - ey, lambda env: fx(env) - fy(env)),
        "mul": (ex * k, lambda env: fx(env) * k),
        "div": (ex // abs(k or 1), lambda env: fx(env) // abs(k or 1)),
        "mod": (ex % abs(k or 1), lambda env: fx(env) % abs(k or 1)),
        "clamp": (ex.clamp(k, k + width), lambda env: min(max(fx(env), k), k + width)),
    }[kind]


_leaves = st.one_of(
    st.sampled_from(VARS).map(lambda v: (Expr.of(v), lambda env: env[v])),
    st.integers(-20, 20).map(lambda c: (Expr(c), lambda env: c)))
expressions = st.recursive(_leaves, lambda inner: st.builds(
    _combine, st.sampled_from(["add", "sub", "mul", "div", "mod", "clamp"]), inner, inner,
    st.integers(-6, 9), st.integers(0, 15)), max_leaves=10)
environments = st.tuples(*(st.integers(0, v.extent - 1) for v in VARS)).map(
    lambda values: dict(zip(VARS, values)))


@settings(max_examples=300)
@given(expressions, environments)
def test_evaluate_agrees_with_python_and_bounds_hold(expr_and_fn, env):
    expr, fn = expr_and_fn
    value = expr.evaluate(env)
    assert value == fn(env)
    lo, hi = expr.bounds()
    assert lo <= value <= hi


@settings(max_examples=200)
@given(expressions, expressions, environments)
def test_substitute_agrees_with_evaluating_the_replacement(outer, replacement, env):
    a = VARS[0]
    substituted = outer[0].substitute({a: replacement[0]})
    assert substituted.evaluate(env) == outer[0].evaluate({**env, a: replacement[1](env)})


def test_substitute_returns_the_same_object_when_nothing_changes():
    e = Expr.of(VARS[1]) * 3 + 1
    assert e.substitute({VARS[0]: 5}) is e


def test_storage_of_a_0d_array_is_a_view_writes_reach():
    """as_storage of a 0-d array once indexed it with (), a copy: the interpreter's writes
    to a 0-d output were lost (fuzzer finding F25)."""
    from powerfusion.gir.interpreter import as_storage

    out = np.zeros((), np.int64)
    flat, base = as_storage(out)
    flat[base] = 5
    assert out[()] == 5
