"""numpy's answer to a program, node by node, with error bounds and validity checks.

Each node's value is what numpy computes (the reference). Beside it runs a first-order
forward error analysis (ops.py): `error` bounds how far any correct implementation,
numpy's or pf's, may be from the exact result, given that floats round to their dtype
at each op (16-bit floats may also stay float32 between ops, as pf documents). A
program is *valid* only if no result depends on rounding: no comparison of values
closer than their error, no truncation to an integer next to one, no overflow that
only one rounding would cause, no float-to-int cast numpy itself calls undefined.
The generator and the shrinker keep only valid programs, so every disagreement pf
shows on them is a defect, however small the tolerance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .bounds import BF16, FLOAT_INFO, is_float
from .ops import OPS, apply, scalar_param
from .program import Node, Program
from .values import DTYPES, np_dtype

SUPPORTED = {np_dtype(d) for d in DTYPES}


class Fragile(Exception):
    """The program's result depends on rounding at some node: not a valid test."""


class NumpyRaised(Exception):
    """numpy rejects an op of the program (the exception is `.error`)."""

    def __init__(self, error: BaseException):
        super().__init__(repr(error))
        self.error = error


@dataclass
class Info:
    value: object                # numpy's result, as numpy returned it
    error: np.ndarray            # float64 bound on |any correct result - exact|, per element

    @property
    def array(self) -> np.ndarray:
        return native(self.value)

    @property
    def supported(self) -> bool:
        """pf has this dtype (numpy's bool ** 2 is int8: an output only, never reused)."""
        return self.array.dtype in SUPPORTED


@dataclass
class Expected:
    """numpy's results (one Info per output), or the exception numpy raised."""

    outputs: list[Info] | None
    error: BaseException | None = None
    may_refuse: bool = False      # pf may refuse it, typed: numpy made a dtype pf lacks
                                  # (int8), an int ** int tensor, or an output
                                  # depends on no array argument


def native(value) -> np.ndarray:
    """value as an array in the machine's byte order (views of big-endian inputs are not)."""
    a = np.asarray(value)
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


class quiet:
    """numpy's warnings (overflow, invalid, mean of empty slice) are results, not news."""

    def __enter__(self):
        self._errstate = np.errstate(all="ignore")
        self._errstate.__enter__()
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        return self._errstate.__exit__(*exc)


def _operand(info: Info):
    """What the error rules see: float64 for floats (exactly widened), ints as they are."""
    a = info.array
    return a.astype(np.float64) if is_float(a.dtype) else a


def evaluate(node: Node, infos: dict[int, Info], inputs: list) -> Info:
    """node's Info; raises Fragile, or NumpyRaised."""
    if node.op == "input":
        value = inputs[node.param]
        return Info(value, np.zeros(np.shape(value)))
    args = [infos[a.uid] for a in node.args]
    if node.op == "pow" and _python_int_power(node, [a.value for a in args]):
        raise Fragile("a Python int to a huge Python int power: a big-int computation")
    with quiet():
        try:
            value = apply(node, [a.value for a in args])
        except Exception as exc:        # noqa: BLE001 - numpy's verdict, whatever it is
            raise NumpyRaised(exc) from None
        v = native(value)
        if not all(a.supported for a in args):
            raise Fragile(f"{node.op} of a dtype pf does not have")
        if node.op == "where" and _scalar_before_bfloat16(args[1:]):
            raise Fragile("ml_dtypes: np.where(c, 2.0, bf16) is float32, (c, bf16, 2.0) bf16")
        xs = [_operand(a) for a in args]
        es = [a.error for a in args]
        if scalar_param(node):
            _, scalar, pos = node.param
            xs.insert(pos, np.asarray(scalar))
            es.insert(pos, np.zeros(()))
        error, fragile = OPS[node.op].rule(node, xs, es, v)
        error = np.broadcast_to(np.asarray(error, np.float64), v.shape)
        if np.any(fragile):
            raise Fragile(f"{node.op}: the result depends on rounding")
        if is_float(v.dtype):
            error = _check_range(node, args, v, error)
        if np.any(error < 0):
            raise AssertionError(f"fuzzer bug: a negative error bound from {node.op}")
    return Info(value, error)


def _python_int_power(node: Node, values: list) -> bool:
    """base ** exponent in Python's own integers (Python scalar arguments), with an
    exponent that makes a number too big to compute."""
    if scalar_param(node):
        values = list(values)
        values.insert(node.param[2], node.param[1])
    exact_ints = [type(v) is int for v in values]
    return all(exact_ints) and abs(values[1]) > 64


def _scalar_before_bfloat16(args: list[Info]) -> bool:
    python = [isinstance(a.value, (bool, int, float)) for a in args]
    return any(python) and any(a.array.dtype == BF16 for a in args)


def _check_range(node: Node, args: list[Info], v: np.ndarray, error: np.ndarray):
    """Overflow must not depend on rounding (nor on 16-bit intermediates staying float32):
    a new infinity or NaN must also come out of the op computed in float64, and finite
    results must stay clear of the dtype's largest value."""
    v64 = v.astype(np.float64)
    finite = np.isfinite(v64)
    largest = FLOAT_INFO[v.dtype][2]
    if np.any(finite & (error > 0) & (np.abs(v64) + 2 * error >= largest)):
        raise Fragile(f"{node.op}: a result within its error of overflow")
    if not finite.all():
        wide = np.asarray(apply(node, [_operand(a) for a in args]), np.float64)
        if np.any(~finite & np.isfinite(np.broadcast_to(wide, v.shape))):
            raise Fragile(f"{node.op}: an overflow that float64 does not have")
    error = np.where(finite, error, 0.0)
    return np.where(np.isnan(error), np.inf, error)


def _bool_power(node: Node, infos: dict[int, Info]) -> bool:
    """bool ** 2 is int8 for an array but int64 for a numpy scalar (a reduction's 0-d
    result): pf, whose 0-d results are arrays, may refuse bool powers (typed)."""
    return node.op in ("pow", "square") and bool(node.args) and \
        infos[node.args[0].uid].array.dtype == np.bool_


def _int_tensor_power(node: Node, infos: dict[int, Info], program: Program) -> bool:
    """An integer to the power of an integer tensor: numpy raises element by element for
    negative exponents, so pf refuses it (typed) and asks for a float."""
    if node.op != "pow":
        return False
    operands = [(infos[a.uid].array.dtype, not _scalars_only(a, program)) for a in node.args]
    if isinstance(node.param, tuple) and node.param[0] == "scalar":   # a Python scalar
        _, value, position = node.param
        operands.insert(position, (np.asarray(value).dtype, False))
    (base, _), (exponent, traced) = operands
    # a bool base (True ** a) is an int to pf too: numpy's result is the exponent's int
    return base.kind in "biu" and exponent.kind in "iu" and traced


def _scalars_only(output: Node, program: Program) -> bool:
    """The output is computed from Python scalar arguments alone: not a traced tensor."""
    inputs = {n.param for n in Program(program.inputs, [output]).nodes() if n.op == "input"}
    return all(program.inputs[k].layout == "python" for k in inputs)


def _concrete_array(node: Node, infos: dict, program: Program) -> bool:
    """A value of several elements made from Python scalars alone: a concrete numpy array
    inside the traced function, which pf refuses (typed) unless its elements share one
    address: it cannot tell one built there from an array the function closed over,
    whose later changes an embedded copy would miss (FINDINGS: F26)."""
    return node.op != "input" and np.size(infos[node.uid].array) > 1 \
        and _scalars_only(node, program)


def analyze(program: Program) -> Expected:
    """numpy's results for every output, or the exception it raises; Fragile if the
    program is not a valid test."""
    inputs = program.arrays()
    infos: dict[int, Info] = {}
    try:
        for node in program.nodes():
            infos[node.uid] = evaluate(node, infos, inputs)
    except NumpyRaised as raised:
        return Expected(None, raised.error)
    may_refuse = not all(i.supported for i in infos.values()) or any(
        _bool_power(n, infos) or _int_tensor_power(n, infos, program)
        or _concrete_array(n, infos, program) for n in program.nodes()) or any(
        _scalars_only(o, program) for o in program.outputs)
    return Expected([infos[o.uid] for o in program.outputs], None, may_refuse)
