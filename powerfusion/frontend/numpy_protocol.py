"""numpy's functions on traced tensors, through `__array_ufunc__` and `__array_function__`.

So existing numpy code traces unchanged: `np.exp(x)`, `np.sum(x, axis=-1)`, `np.where`.
Each table entry maps a numpy name to the graph it means; anything not in a table
raises UnsupportedError naming the numpy function.
"""

from __future__ import annotations

import math

from ..errors import DTypeError, ShapeError, UnsupportedError
from ..graph.ops import Op
from . import build
from .tracing import Tensor, to_operand


def _float_fn(op: Op):
    return lambda x: build.unary_float(op, x)


def _reciprocal(x):
    if not x.dtype.is_float:
        raise DTypeError(f"numpy.reciprocal of a {x.dtype} tensor is integer division in "
                         "numpy; cast to a float dtype first")
    return build.binary(Op.DIV, 1, x)


def _power(a, b):
    if isinstance(b, (bool, int, float)) and not isinstance(a, (bool, int, float)):
        return build.power_scalar(a, b, ufunc=True)
    return build.binary(Op.POW, a, b)


def _invert(x):
    if not x.dtype.is_bool:
        raise DTypeError(f"numpy.invert of a {x.dtype} tensor (bitwise not) is not "
                         "supported; PowerFusion supports ~ on bool tensors only")
    return build.logical_not(x)


UFUNCS = {
    "add": lambda a, b: build.binary(Op.ADD, a, b),
    "subtract": lambda a, b: build.binary(Op.SUB, a, b),
    "multiply": lambda a, b: build.binary(Op.MUL, a, b),
    "true_divide": lambda a, b: build.binary(Op.DIV, a, b),
    "divide": lambda a, b: build.binary(Op.DIV, a, b),
    "remainder": lambda a, b: build.binary(Op.MOD, a, b),     # numpy.mod is remainder too
    "fmod": lambda a, b: build.binary(Op.FMOD, a, b),
    "power": _power,
    "maximum": lambda a, b: build.binary(Op.MAXIMUM, a, b),
    "minimum": lambda a, b: build.binary(Op.MINIMUM, a, b),
    "negative": build.negative,
    "positive": lambda x: x,
    "absolute": build.absolute,
    "square": build.square,
    "reciprocal": _reciprocal,
    "exp": _float_fn(Op.EXP),
    "log": _float_fn(Op.LOG),
    "sqrt": _float_fn(Op.SQRT),
    "tanh": _float_fn(Op.TANH),
    "sin": _float_fn(Op.SIN),
    "cos": _float_fn(Op.COS),
    "tan": _float_fn(Op.TAN),
    "log1p": _float_fn(Op.LOG1P),
    "expm1": _float_fn(Op.EXPM1),
    "log2": _float_fn(Op.LOG2),
    "log10": _float_fn(Op.LOG10),
    "exp2": _float_fn(Op.EXP2),
    "floor": lambda x: build.rounding(Op.FLOOR, x),
    "ceil": lambda x: build.rounding(Op.CEIL, x),
    "trunc": lambda x: build.rounding(Op.TRUNC, x),
    "rint": lambda x: build.rounding(Op.RINT, x),
    "sign": build.sign,
    "greater": lambda a, b: build.compare(Op.GT, a, b),
    "greater_equal": lambda a, b: build.compare(Op.GE, a, b),
    "less": lambda a, b: build.compare(Op.LT, a, b),
    "less_equal": lambda a, b: build.compare(Op.LE, a, b),
    "equal": lambda a, b: build.compare(Op.EQ, a, b),
    "not_equal": lambda a, b: build.compare(Op.NE, a, b),
    "logical_and": lambda a, b: build.logical(Op.AND, a, b),
    "logical_or": lambda a, b: build.logical(Op.OR, a, b),
    "logical_xor": lambda a, b: build.compare(Op.NE, build.to_bool(a), build.to_bool(b)),
    "logical_not": build.logical_not,
    "bitwise_and": lambda a, b: build.bitwise(Op.AND, a, b),
    "bitwise_or": lambda a, b: build.bitwise(Op.OR, a, b),
    "invert": _invert,
    "isnan": lambda x: build.compare(Op.NE, x, x),
    "isinf": lambda x: build.compare(Op.EQ, build.absolute(x), math.inf),
    "isfinite": lambda x: build.compare(Op.LT, build.absolute(x), math.inf),
}

_UFUNC_REDUCE = {"add": Op.SUM, "maximum": Op.MAX, "minimum": Op.MIN}
_UFUNC_DEFAULTS = {"where": True, "casting": "same_kind", "order": "K", "subok": True,
                   "dtype": None, "signature": None}


def array_ufunc(ufunc, method: str, inputs: tuple, kwargs: dict):
    name = f"numpy.{ufunc.__name__}"
    if "out" in kwargs:
        raise UnsupportedError(f"{name}(out=...) is not supported by PowerFusion tracing: "
                               "traced functions return new values; drop out=")
    if method == "reduce" and ufunc.__name__ in _UFUNC_REDUCE:
        axis = kwargs.pop("axis", 0)
        keepdims = kwargs.pop("keepdims", False)
        _reject(f"{name}.reduce", kwargs, _UFUNC_DEFAULTS)
        x = to_operand(inputs[0], what=f"{name}.reduce")
        return Tensor(build.reduce(_UFUNC_REDUCE[ufunc.__name__], x, axis, keepdims))
    if method != "__call__":
        raise UnsupportedError(f"{name}.{method} is not supported by PowerFusion tracing")
    fn = UFUNCS.get(ufunc.__name__)
    if fn is None:
        raise UnsupportedError(f"{name} is not supported by PowerFusion tracing")
    _reject(name, kwargs, _UFUNC_DEFAULTS)
    operands = [to_operand(x, what=f"{name} operand {k}") for k, x in enumerate(inputs)]
    return Tensor(fn(*operands))


def _reject(name: str, kwargs: dict, defaults: dict) -> None:
    for key, value in kwargs.items():
        if key not in defaults or value is not defaults[key] and value != defaults[key]:
            raise UnsupportedError(f"{name}({key}=...) is not supported by PowerFusion "
                                   "tracing")


def _node(x, what: str):
    o = to_operand(x, what=what)
    if not hasattr(o, "shape"):
        raise UnsupportedError(f"{what}: expected a tensor, got a Python scalar")
    return o


# -- array functions ---------------------------------------------------------------------
def _sum(a, axis=None, dtype=None, out=None, keepdims=False, **rest):
    _reject("numpy.sum", rest, {})
    return a.sum(axis, dtype, out, keepdims)


def _mean(a, axis=None, dtype=None, out=None, keepdims=False, **rest):
    _reject("numpy.mean", rest, {})
    return a.mean(axis, dtype, out, keepdims)


def _extreme(method: str):
    def fn(a, axis=None, out=None, keepdims=False, **rest):
        _reject(f"numpy.{method}", rest, {})
        return getattr(a, method)(axis, out, keepdims)
    return fn


def _var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **rest):
    _reject("numpy.var", rest, {})
    x = a if dtype is None else a.astype(dtype)
    centred = x - x.mean(axis, keepdims=True)
    if not centred.dtype.is_float:
        centred = centred.astype("float64")
    count = math.prod(a.shape[k] for k in build.normalize_axes(axis, a.shape))
    mean_square = (centred * centred).mean(axis, keepdims=keepdims)
    if ddof == 0:
        return mean_square
    # count <= ddof: numpy divides by zero. Its sum of squares is exactly 0 for a single
    # element, so NaN, though 16-bit intermediates here (kept in float32) may not cancel
    scale = count / (count - ddof) if count > ddof else math.nan if count == 1 else math.inf
    return mean_square * scale


def _std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **rest):
    return Tensor(build.unary_float(Op.SQRT, _var(a, axis, dtype, out, ddof, keepdims,
                                                  **rest).node))


def _where(condition, x=None, y=None):
    if x is None or y is None:
        raise UnsupportedError("numpy.where with one argument (nonzero) has a data-"
                               "dependent shape and is not supported by PowerFusion tracing")
    ops = [to_operand(v, what=f"numpy.where operand {k}") for k, v in
           enumerate((condition, x, y))]
    return Tensor(build.where(*ops))


def _reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    return _as_tensor(a, "numpy.reshape").reshape(shape if shape is not None else newshape,
                                                   order=order)


def _transpose(a, axes=None):
    return _as_tensor(a, "numpy.transpose").transpose(axes)


def _concatenate(arrays, axis=0, out=None, **rest):
    _reject("numpy.concatenate", dict(rest, out=out), {"out": None, "dtype": None,
                                                       "casting": "same_kind"})
    nodes = [_node(a, f"numpy.concatenate operand {k}") for k, a in enumerate(arrays)]
    if axis is None:
        nodes, axis = [build.reshape(n, (-1,)) for n in nodes], 0
    return Tensor(build.concatenate(nodes, axis))


def _stack(arrays, axis=0, out=None, **rest):
    _reject("numpy.stack", dict(rest, out=out), {"out": None, "dtype": None,
                                                 "casting": "same_kind"})
    nodes = [_node(a, f"numpy.stack operand {k}") for k, a in enumerate(arrays)]
    if not nodes or len({n.shape for n in nodes}) != 1:
        raise ShapeError("numpy.stack: all input tensors must have the same shape, got "
                         + ", ".join(str(n.shape) for n in nodes))
    ndim = len(nodes[0].shape) + 1
    axis = build.normalize_axis(axis, ndim, nodes[0].shape)
    grown = [build.reshape(n, n.shape[:axis] + (1,) + n.shape[axis:]) for n in nodes]
    return Tensor(build.concatenate(grown, axis))


def _expand_dims(a, axis):
    a = _as_tensor(a, "numpy.expand_dims")
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    ndim = a.ndim + len(axes)
    new = set(build.normalize_axes(axes, (1,) * ndim))
    it = iter(a.shape)
    return a.reshape(tuple(1 if k in new else next(it) for k in range(ndim)))


def _squeeze(a, axis=None):
    a = _as_tensor(a, "numpy.squeeze")
    axes = [k for k, n in enumerate(a.shape) if n == 1] if axis is None \
        else build.normalize_axes(axis, a.shape)
    for k in axes:
        if a.shape[k] != 1:
            raise ShapeError(f"cannot squeeze axis {k} of size {a.shape[k]} "
                             f"(tensor of shape {a.shape})")
    return a.reshape(tuple(n for k, n in enumerate(a.shape) if k not in axes))


def _swapaxes(a, axis1, axis2):
    a = _as_tensor(a, "numpy.swapaxes")
    perm = list(range(a.ndim))
    i, j = (build.normalize_axis(x, a.ndim, a.shape) for x in (axis1, axis2))
    perm[i], perm[j] = perm[j], perm[i]
    return a.transpose(perm)


def _clip(a, a_min=None, a_max=None, out=None, **rest):
    _reject("numpy.clip", dict(rest, out=out), {"out": None})
    x = to_operand(a, what="numpy.clip")
    if a_min is not None and not _beyond(x, a_min, -1):
        x = build.binary(Op.MAXIMUM, x, to_operand(a_min, what="numpy.clip a_min"))
    if a_max is not None and not _beyond(x, a_max, 1):
        x = build.binary(Op.MINIMUM, x, to_operand(a_max, what="numpy.clip a_max"))
    return Tensor(x)


def _beyond(x, bound, side: int) -> bool:
    """Is a Python int bound past the end of an int tensor's range on its own side (a
    lower bound below its least value, an upper one above its greatest)? numpy's clip
    leaves such a bound out; on the other side it raises, as the conversion here does."""
    if not (isinstance(bound, int) and not isinstance(bound, bool)
            and hasattr(x, "dtype") and x.dtype.is_int):
        return False
    bits = x.dtype.itemsize * 8
    return bound < -2**(bits - 1) if side < 0 else bound > 2**(bits - 1) - 1


def _broadcast_to(array, shape, subok=False):
    node = _node(array, "numpy.broadcast_to")
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if build.broadcast_shapes(node.shape, shape) != shape:
        raise ShapeError(f"cannot broadcast a tensor of shape {node.shape} to shape {shape}")
    return Tensor(build.expand(node, shape))


def _round(a, decimals=0, out=None):
    _reject("numpy.round", {"out": out}, {"out": None})
    return Tensor(build.round_decimals(_node(a, "numpy.round"), decimals))


def _as_tensor(a, what: str) -> Tensor:
    return a if isinstance(a, Tensor) else Tensor(_node(a, what))


FUNCTIONS = {
    "sum": _sum, "mean": _mean, "var": _var, "std": _std,
    "max": _extreme("max"), "amax": _extreme("max"),
    "min": _extreme("min"), "amin": _extreme("min"),
    "any": _extreme("any"), "all": _extreme("all"),
    "argmax": _extreme("argmax"), "argmin": _extreme("argmin"),
    "where": _where, "reshape": _reshape, "transpose": _transpose,
    "concatenate": _concatenate, "stack": _stack, "expand_dims": _expand_dims,
    "squeeze": _squeeze, "swapaxes": _swapaxes, "clip": _clip,
    "broadcast_to": _broadcast_to, "round": _round, "around": _round,
    "astype": lambda x, dtype, /, *, copy=True: _as_tensor(x, "numpy.astype").astype(dtype),
    "ravel": lambda a, order="C": _as_tensor(a, "numpy.ravel").reshape(-1, order=order),
    "shape": lambda a: a.shape, "ndim": lambda a: a.ndim,
    "size": lambda a, axis=None: a.size if axis is None else a.shape[axis],
}


def array_function(func, args: tuple, kwargs: dict):
    module = func.__module__ or "numpy"
    name = f"{module}.{func.__name__}"
    impl = FUNCTIONS.get(func.__name__) if module == "numpy" else None
    if impl is None:
        raise UnsupportedError(f"{name} is not supported by PowerFusion tracing")
    return impl(*args, **kwargs)
