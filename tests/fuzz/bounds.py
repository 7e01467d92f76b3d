"""How far two correct implementations of an op may differ: a first-order forward error
bound per op, propagated node by node, and where an op is discontinuous.

`rule(node, xs, es, v)` gets the operands' values `xs` (float64 or int), their error
bounds `es` (float64 arrays; 0 where a value is exact) and the op's numpy result `v`,
and returns `(e, fragile)`: the bound on how far any correct implementation's result
may be from the exact one, and a mask (or bool) of elements where the result is
*discontinuous* within the operands' error bounds (a comparison of nearly equal values,
a float truncated to an integer next to one, a log of a value that may change sign):
programs must not depend on those.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
# unit roundoff, smallest subnormal, largest finite
FLOAT_INFO = {
    np.dtype(np.float64): (2.0 ** -53, 2.0 ** -1074, float(np.finfo(np.float64).max)),
    np.dtype(np.float32): (2.0 ** -24, 2.0 ** -149, float(np.finfo(np.float32).max)),
    np.dtype(np.float16): (2.0 ** -11, 2.0 ** -24, 65504.0),
    BF16: (2.0 ** -8, 2.0 ** -133, float(ml_dtypes.finfo(BF16).max)),
}
TRANSCENDENTAL_ULPS = 8         # pf's vectorised exp/log/tanh/sin/cos: a few ULP each
SIN_COS_DOMAIN = 1e5            # pf's sin/cos are tested for |x| <= 1e6 (pf_math.h)


def is_float(dtype) -> bool:
    return np.dtype(dtype) in FLOAT_INFO


def rounding(v: np.ndarray, ulps: float = 1.0) -> np.ndarray:
    """The error of rounding v to its own dtype (0 for ints and bools)."""
    info = FLOAT_INFO.get(np.asarray(v).dtype)
    if info is None:
        return np.zeros(np.shape(v))
    u, tiny, _ = info
    return ulps * (u * np.abs(np.asarray(v, np.float64)) + tiny)


def near(x, es, margin: float = 0.0):
    """Elements where x (a distance to a discontinuity) is within twice the error."""
    return (es > 0) & (np.abs(x) <= 2 * es + margin)


def on_errors(node, es):
    """A view, select or concatenation applied to the error arrays as to the values."""
    from .ops import apply
    return np.asarray(apply(node, es), np.float64)


# -- rules ----------------------------------------------------------------------------------
def exact(node, xs, es, v):
    return np.zeros(np.shape(v)), False


def carried(node, xs, es, v):      # views, concatenation: errors move with the values
    return on_errors(node, es), False


def same(node, xs, es, v):         # neg, abs: errors stay as they were
    return es[0], False


def _b(*arrays):
    return np.broadcast_arrays(*arrays)


def _f(*arrays):
    """Broadcast, as float64 (|INT64_MIN| overflows in int64)."""
    return np.broadcast_arrays(*(np.asarray(a, np.float64) for a in arrays))


def add_rule(node, xs, es, v):
    ea, eb = _b(*es)
    return ea + eb + rounding(v), False


def mul_rule(node, xs, es, v):
    a, b = (np.abs(x) for x in _f(*xs))
    ea, eb = _b(*es)
    return b * ea + a * eb + ea * eb + rounding(v), False


def div_rule(node, xs, es, v):
    a, b = _f(*xs)
    ea, eb = _b(*es)
    den = np.abs(b) - eb
    with np.errstate(all="ignore"):
        e = np.where(den > 0, (ea + np.abs(np.asarray(v, np.float64)) * eb) / den, np.inf)
    return e + rounding(v), False


def mod_rule(node, xs, es, v):
    """fmod and remainder (%): exact on exact operands. An error in a moves the result
    as much; one in b moves it trunc(a / b) times as much. Both are steps where a is a
    multiple of b (remainder at 0 too): fragile where the result is within its error of
    0 or of +-b. Integers: exact (x % 0 is 0 in numpy and pf alike)."""
    if not is_float(np.asarray(v).dtype):
        return np.zeros(np.shape(v)), False
    a, b = _f(*xs)
    ea, eb = _b(*es)
    with np.errstate(all="ignore"):
        q = np.abs(np.trunc(a / b))
        e = ea + np.where(eb > 0, q * eb, 0)
        e = np.where(np.isfinite(e), e, np.inf)
        m = np.abs(np.fmod(a, b))
        step = np.minimum(m, np.abs(np.abs(b) - m))
    fragile = near(np.where(np.isnan(step), np.inf, step), e)
    return e + rounding(v), fragile


def _zeros_of_both_signs(a, b):
    """Where max/min choose between +0.0 and -0.0: numpy's choice is its loop's."""
    a, b = (np.asarray(x, np.float64) for x in _b(a, b))
    return (a == 0) & (b == 0) & (np.signbit(a) != np.signbit(b))


def select_rule(node, xs, es, v):     # maximum, minimum, clip: errors never grow
    if node.op == "clip":
        lo, hi = node.param
        x = xs[0]
        return es[0], _zeros_of_both_signs(x, float(lo)) | _zeros_of_both_signs(x, float(hi))
    return np.maximum(*_b(*es)), _zeros_of_both_signs(*xs)


def pow_rule(node, xs, es, v):
    if not is_float(np.asarray(v).dtype):      # numpy rejects int ** -k unless it is empty
        return np.zeros(np.shape(v)), bool(np.any(np.asarray(xs[1]) < 0))
    x, y = _f(*xs)
    ex, ey = _b(*es)
    av = np.abs(np.asarray(v, np.float64))
    with np.errstate(all="ignore"):
        e = av * (np.abs(y) * ex / np.abs(x) + np.abs(np.log(np.abs(x))) * ey)
    fragile = near(x, ex) | ((x < 0) & (ey > 0))
    e = np.where(ex + ey > 0, e, 0)
    return e + rounding(v, 4 + np.abs(y).clip(0, 16)), fragile


def transcendental(derivative):
    def rule(node, xs, es, v):
        x, ex = xs[0], es[0]
        with np.errstate(all="ignore"):
            d = np.abs(derivative(np.asarray(x, np.float64), np.asarray(v, np.float64)))
            e = np.where(ex > 0, d * ex, 0)
        return e + rounding(v, TRANSCENDENTAL_ULPS), False
    return rule


def domain_rule(derivative):        # log, sqrt: NaN below 0, so the sign must be certain
    inner = transcendental(derivative)

    def rule(node, xs, es, v):
        e, _ = inner(node, xs, es, v)
        return e, near(xs[0], es[0])
    return rule


def periodic(node, xs, es, v):      # sin, cos: absolute error grows with |x|
    x = np.abs(np.asarray(xs[0], np.float64))
    u = FLOAT_INFO[np.asarray(v).dtype][0]
    e = es[0] + TRANSCENDENTAL_ULPS * u * (1 + np.where(np.isfinite(x), x, 0))
    return e, np.isfinite(x) & (x > SIN_COS_DOMAIN)


def rounding_rule(node, xs, es, v):
    """floor ceil trunc rint round: exact, but a step where x is within its error of an
    integer (floor ceil trunc) or of a half-integer (rint round, ties to even). Where x
    is big enough that every float is an integer, any error reaches a step: fragile."""
    x, e = np.asarray(xs[0]), es[0]
    if not is_float(x.dtype):
        return np.zeros(np.shape(v)), False          # ints: themselves, or converted
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if node.op in ("rint", "round"):
            step = x - np.floor(x) - 0.5
        else:
            step = x - np.round(x)
    return np.zeros(np.shape(v)), near(np.where(np.isnan(step), np.inf, step), e)


def sign_rule(node, xs, es, v):
    """-1, 0, 1 (NaN stays): exact, but a step at 0. ml_dtypes' bfloat16 sign keeps -0
    where numpy's float sign (and pf) give +0: a -0 operand there is not a valid test."""
    x = np.asarray(xs[0], np.float64)
    minus_zero = (np.asarray(v).dtype == BF16) & (x == 0) & np.signbit(x)
    return np.zeros(np.shape(v)), near(np.where(np.isnan(x), np.inf, x), es[0]) | minus_zero


def log1p_rule(node, xs, es, v):    # NaN below -1: the side of -1 must be certain
    e, _ = transcendental(lambda x, v: 1 / (1 + x))(node, xs, es, v)
    return e, near(np.asarray(xs[0], np.float64) + 1, es[0])


def tan_rule(node, xs, es, v):
    """tan's error grows as 1 + tan^2 and is unbounded at the poles: fragile where x is
    within its error of one (|cos x| is about the distance), and past the domain
    sin and cos are tested on."""
    x = np.asarray(xs[0], np.float64)
    with np.errstate(all="ignore"):
        d = 1 + np.asarray(v, np.float64) ** 2
        e = np.where(es[0] > 0, d * es[0], 0)
        fragile = np.isfinite(x) & ((np.abs(x) > SIN_COS_DOMAIN) | near(np.cos(x), es[0]))
    return e + rounding(v, TRANSCENDENTAL_ULPS), fragile


def compare_rule(node, xs, es, v):
    a, b = _b(*xs)
    ea, eb = _b(*es)
    with np.errstate(all="ignore"):
        d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.zeros(np.shape(v)), near(np.where(np.isnan(d), np.inf, d), ea + eb)


def truth_rule(node, xs, es, v):    # logical ops, any/all, where's condition: x != 0
    fragile = False
    for x, e in zip(xs, es):
        fragile = fragile | np.any(near(np.asarray(x, np.float64), e))
    return np.zeros(np.shape(v)), fragile


def where_rule(node, xs, es, v):
    c, _, _ = _b(*xs)
    _, ea, eb = _b(*es)
    _, fragile = truth_rule(node, xs[:1], es[:1], v)
    return np.where(c.astype(bool), ea, eb), fragile


def cast_rule(node, xs, es, v):
    x, ex = np.asarray(xs[0]), es[0]
    out = np.asarray(v).dtype
    if not is_float(x.dtype):
        return np.zeros(np.shape(v)), False           # ints and bools convert exactly
    x = x.astype(np.float64)
    if out.kind == "b":
        return np.zeros(np.shape(v)), near(x, ex)
    if out.kind in "iu":
        bound = 2.0 ** (8 * out.itemsize - 1)
        with np.errstate(all="ignore"):
            outside = ~np.isfinite(x) | (np.trunc(x) < -bound) | (np.trunc(x) >= bound)
            return np.zeros(np.shape(v)), outside | near(x - np.rint(x), ex)
    return np.where(ex > 0, ex + rounding(v), 0), False   # exact values round correctly


def reduce_rule(node, xs, es, v):
    """sum and mean: the terms' errors plus (n-1) roundings of the running sum."""
    x = np.asarray(xs[0])
    if not is_float(np.asarray(v).dtype):
        return exact(node, xs, es, v)
    size = np.size(v)
    n = x.size // size if size else 0
    u = FLOAT_INFO[np.asarray(v).dtype][0]
    with np.errstate(all="ignore"):
        magnitude = on_errors(node, [np.abs(x.astype(np.float64))])
        e = on_errors(node, es) + max(n - 1, 0) * u * magnitude
    return e + 2 * rounding(v), False


def extreme_rule(node, xs, es, v):    # max, min over axes: one of the terms, with its error
    """The largest error over the reduced terms: the min of the errors (what the op
    itself gives on them, for min) may belong to a term that was not chosen."""
    x = np.asarray(xs[0], np.float64)
    zeros = np.signbit(x[x == 0])
    axis, keepdims = node.param[:2]
    e = np.broadcast_to(es[0], x.shape)
    e = np.max(e, axis=axis, keepdims=keepdims) if e.size else on_errors(node, es)
    return e, bool(zeros.size) and zeros.any() and not zeros.all()


def spread_rule(node, xs, es, v):
    """var and std: x - mean, squared, averaged (and square-rooted)."""
    axis, keepdims, ddof = node.param
    x = np.asarray(xs[0]).astype(np.float64)
    v64 = np.asarray(v, np.float64)
    u = FLOAT_INFO[np.asarray(v).dtype][0]
    n = x.size // max(np.size(v), 1)
    with np.errstate(all="ignore"):
        mu = np.mean(x, axis=axis, keepdims=True)
        e_mu = np.mean(es[0], axis=axis, keepdims=True) + n * u * np.mean(
            np.abs(x), axis=axis, keepdims=True)
        d = np.abs(x - mu)
        ed = es[0] + e_mu + u * np.abs(x)
        e_var = np.mean(2 * d * ed + ed * ed + (n + 2) * u * d * d, axis=axis,
                        keepdims=keepdims) * (n / max(n - ddof, 1))
        if node.op == "std":          # |sqrt(a) - sqrt(b)| <= sqrt(|a - b|) near 0
            e_var = np.where(e_var > 0, np.minimum(e_var / (2 * v64), np.sqrt(e_var)), 0)
    return np.where(np.isnan(e_var), np.inf, e_var) + 2 * rounding(v), False


def arg_rule(node, xs, es, v):       # argmax, argmin: ties within the error are fragile
    return np.zeros(np.shape(v)), bool(np.any(es[0] > 0))


