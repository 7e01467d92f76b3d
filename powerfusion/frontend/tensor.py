"""The traced tensor: an array whose shape and dtype are known and whose values are not.

Its operators and methods follow numpy (they build nodes through `build`), and numpy's
own functions reach it through `__array_ufunc__` / `__array_function__`, so existing
numpy code traces unchanged: `np.exp(x)`, `np.sum(x, axis=-1)`, `np.where`. Each table
entry maps a numpy name to the graph it means; anything not in a table raises
UnsupportedError naming the numpy function.
"""

from __future__ import annotations

import math

import numpy as np

from ..dtypes import as_dtype
from ..errors import DTypeError, ShapeError, UnsupportedError
from ..graph.graph import Node
from ..graph.ops import Op
from . import build
from .numpy_ufuncs import UFUNC_DEFAULTS, UFUNC_REDUCE, UFUNCS

_CONTROL_FLOW = ("the value of a traced tensor is unknown while PowerFusion traces the "
                 "function, so it cannot decide Python control flow (if/while/and/or), "
                 "become a Python number or index a list. Data-dependent control flow "
                 "can't be traced: express it with pf.where, pf.maximum or pf.minimum")


def is_torch_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "dtype") \
        and hasattr(x, "stride")


def to_operand(x, *, what: str = "operand") -> build.Operand:
    """A Tensor's node, a Python scalar, or a numpy scalar as a typed constant."""
    if isinstance(x, Tensor):
        return x.node
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        return x
    if isinstance(x, np.generic) or (isinstance(x, np.ndarray) and x.ndim == 0):
        value = np.asarray(x)
        return build.const(value.item(), as_dtype(value.dtype, what=what))
    if isinstance(x, np.ndarray) and _one_value(x):
        # np.broadcast_to(2.0, shape), np.expand_dims(b, 0): a scalar with a shape,
        # a constant read at trace time as 0-d arrays are
        value = x.reshape(-1)[0] if x.size else np.zeros((), x.dtype)
        return build.full(value.item(), as_dtype(x.dtype, what=what), tuple(x.shape))
    if is_torch_tensor(x) and x.device.type == "cpu" and (
            x.numel() <= 1 or all(s == 0 or n == 1 for s, n in zip(x.stride(), x.shape))):
        from .torch_storage import TORCH_TO_DTYPE       # torch is loaded: x is a tensor

        if x.dtype not in TORCH_TO_DTYPE:
            raise DTypeError(f"{what}: torch dtype {x.dtype} has no PowerFusion dtype")
        value = x.detach().reshape(-1)[0].item() if x.numel() else 0
        dtype = TORCH_TO_DTYPE[x.dtype]
        return build.const(value, dtype) if x.dim() == 0 else \
            build.full(value, dtype, tuple(x.shape))
    if isinstance(x, np.ndarray) or is_torch_tensor(x):
        raise UnsupportedError(
            f"{what}: a concrete array of shape {tuple(x.shape)} appears inside the traced "
            "function; PowerFusion embeds only arrays of one value in memory (0-d arrays, "
            "np.broadcast_to of a scalar) as constants: pass it as an argument of the "
            "jitted function instead")
    raise DTypeError(f"{what}: expected a traced tensor, a numpy array argument or a Python "
                     f"scalar, got {type(x).__name__}")


def _one_value(x: np.ndarray) -> bool:
    """Every element of x is the same element in memory (or x has none)."""
    return x.size <= 1 or all(stride == 0 or n == 1 for stride, n in zip(x.strides, x.shape))


def _operand_or_none(x):
    """to_operand, or None for types the Python operator protocol should hand back."""
    try:
        return to_operand(x)
    except DTypeError:
        return None


class Tensor:
    """A symbolic array of the traced function: shape and dtype, no values."""

    __slots__ = ("node",)
    __array_priority__ = 1000        # ndarray op Tensor defers to the Tensor

    def __init__(self, node: Node):
        self.node = node

    # -- static facts -------------------------------------------------------------------
    shape = property(lambda self: self.node.shape)
    dtype = property(lambda self: self.node.dtype)
    ndim = property(lambda self: len(self.node.shape))
    size = property(lambda self: self.node.size)
    T = property(lambda self: self.transpose())

    def __repr__(self) -> str:
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, traced)"

    def __len__(self) -> int:       # the shape is static, so len() is too
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # -- what tracing cannot do --------------------------------------------------------
    def _concrete(self, *_args):
        raise UnsupportedError(_CONTROL_FLOW)

    __bool__ = __int__ = __float__ = __index__ = __complex__ = _concrete
    item = tolist = _concrete

    def __array__(self, *_args, **_kwargs):
        raise UnsupportedError("a traced tensor cannot become a concrete numpy array "
                               "(np.asarray, np.array, or a numpy function without "
                               "PowerFusion support was applied to it); " + _CONTROL_FLOW)

    __hash__ = object.__hash__

    # -- arithmetic ---------------------------------------------------------------------
    def _binary(self, other, fn, op, reflected=False):
        o = _operand_or_none(other)
        if o is None:
            return NotImplemented
        a, b = (o, self.node) if reflected else (self.node, o)
        return Tensor(fn(op, a, b))

    def __add__(self, o): return self._binary(o, build.binary, Op.ADD)
    def __radd__(self, o): return self._binary(o, build.binary, Op.ADD, True)
    def __sub__(self, o): return self._binary(o, build.binary, Op.SUB)
    def __rsub__(self, o): return self._binary(o, build.binary, Op.SUB, True)
    def __mul__(self, o): return self._binary(o, build.binary, Op.MUL)
    def __rmul__(self, o): return self._binary(o, build.binary, Op.MUL, True)
    def __truediv__(self, o): return self._binary(o, build.binary, Op.DIV)
    def __rtruediv__(self, o): return self._binary(o, build.binary, Op.DIV, True)
    def __mod__(self, o): return self._binary(o, build.binary, Op.MOD)
    def __rmod__(self, o): return self._binary(o, build.binary, Op.MOD, True)
    def __lt__(self, o): return self._binary(o, build.compare, Op.LT)
    def __le__(self, o): return self._binary(o, build.compare, Op.LE)
    def __gt__(self, o): return self._binary(o, build.compare, Op.GT)
    def __ge__(self, o): return self._binary(o, build.compare, Op.GE)
    def __eq__(self, o): return self._binary(o, build.compare, Op.EQ)
    def __ne__(self, o): return self._binary(o, build.compare, Op.NE)
    def __and__(self, o): return self._binary(o, build.bitwise, Op.AND)
    def __rand__(self, o): return self._binary(o, build.bitwise, Op.AND, True)
    def __or__(self, o): return self._binary(o, build.bitwise, Op.OR)
    def __ror__(self, o): return self._binary(o, build.bitwise, Op.OR, True)

    def __matmul__(self, _o):
        raise UnsupportedError("matmul (@) is not supported by PowerFusion tracing: "
                               "PowerFusion compiles memory-bound operators; call the "
                               "matmul outside the jitted function")

    __rmatmul__ = __matmul__

    def __floordiv__(self, _o):
        raise UnsupportedError("floor division (//) is not supported by PowerFusion tracing")

    __rfloordiv__ = __floordiv__

    def __neg__(self): return Tensor(build.negative(self.node))
    def __pos__(self): return self
    def __abs__(self): return Tensor(build.absolute(self.node))

    def __invert__(self):
        if not self.dtype.is_bool:
            raise DTypeError(f"~ on a {self.dtype} tensor: PowerFusion supports it on bool "
                             "tensors only (logical not)")
        return Tensor(build.logical_not(self.node))

    def __pow__(self, exponent):
        if isinstance(exponent, np.generic):
            exponent = exponent.item()          # a scalar exponent picks the cheapest op
        if isinstance(exponent, (bool, int, float)):
            if exponent == 2 and not isinstance(exponent, float):
                return Tensor(build.square(self.node))      # numpy's x ** 2 is square(x)
            return Tensor(build.power_scalar(self.node, exponent))
        o = _operand_or_none(exponent)
        return NotImplemented if o is None else Tensor(build.binary(Op.POW, self.node, o))

    def __rpow__(self, base):
        return self._binary(base, build.binary, Op.POW, True)

    # -- methods --------------------------------------------------------------------------
    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        _no_out("Tensor.sum", out)
        x = self if dtype is None else self.astype(dtype)
        return Tensor(build.reduce(Op.SUM, x.node, axis, keepdims))

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        _no_out("Tensor.mean", out)
        x = self if dtype is None else self.astype(dtype)
        return Tensor(build.mean(x.node, axis, keepdims))

    def max(self, axis=None, out=None, keepdims=False):
        _no_out("Tensor.max", out)
        return Tensor(build.reduce(Op.MAX, self.node, axis, keepdims))

    def min(self, axis=None, out=None, keepdims=False):
        _no_out("Tensor.min", out)
        return Tensor(build.reduce(Op.MIN, self.node, axis, keepdims))

    def any(self, axis=None, out=None, keepdims=False):
        _no_out("Tensor.any", out)
        return Tensor(build.any_all(Op.MAX, self.node, axis, keepdims))

    def all(self, axis=None, out=None, keepdims=False):
        _no_out("Tensor.all", out)
        return Tensor(build.any_all(Op.MIN, self.node, axis, keepdims))

    def argmax(self, axis=None, out=None, keepdims=False):
        _no_out("Tensor.argmax", out)
        return Tensor(build.arg_extreme(Op.MAX, self.node, axis, keepdims))

    def argmin(self, axis=None, out=None, keepdims=False):
        _no_out("Tensor.argmin", out)
        return Tensor(build.arg_extreme(Op.MIN, self.node, axis, keepdims))

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return FUNCTIONS["var"](self, axis, dtype, out, ddof, keepdims)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return FUNCTIONS["std"](self, axis, dtype, out, ddof, keepdims)

    def clip(self, min=None, max=None, out=None):     # noqa: A002 - numpy's names
        return FUNCTIONS["clip"](self, min, max, out)

    def round(self, decimals=0, out=None):
        return FUNCTIONS["round"](self, decimals, out)

    def swapaxes(self, axis1, axis2):
        return FUNCTIONS["swapaxes"](self, axis1, axis2)

    def squeeze(self, axis=None):
        return FUNCTIONS["squeeze"](self, axis)

    def __getattr__(self, name: str):
        # an ndarray method tracing lacks is named, not an AttributeError from deep inside
        if not name.startswith("_") and hasattr(np.ndarray, name):
            raise UnsupportedError(f"ndarray.{name} is not supported by PowerFusion tracing")
        raise AttributeError(f"'Tensor' object has no attribute {name!r}")

    def reshape(self, *shape, order="C"):
        if order != "C":
            raise UnsupportedError(f"reshape with order={order!r}: only 'C' is supported")
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Tensor(build.reshape(self.node, shape))

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return Tensor(build.permute(self.node, axes or None))

    def astype(self, dtype, copy=True):
        return Tensor(build.cast(self.node, as_dtype(dtype, what="astype")))

    def flatten(self):
        return self.reshape(-1)

    ravel = flatten

    def __getitem__(self, index):
        items = index if isinstance(index, tuple) else (index,)
        if any(isinstance(it, (Tensor, np.ndarray, list)) for it in items):
            raise UnsupportedError("indexing with a tensor, array or list (advanced or "
                                   "boolean indexing) is not supported by PowerFusion "
                                   "tracing; use ints, slices, None and ... (or pf.where)")
        return Tensor(build.getitem(self.node, index))

    # -- numpy protocols -------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return array_function(func, args, kwargs)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        # torch's API checks its arguments for this hook before anything else: without
        # it a torch op on a traced value fails with "must be Tensor, not Tensor"
        from torch.overrides import resolve_name

        import torch

        name = resolve_name(func) or getattr(func, "__name__", repr(func))
        if name.startswith("torch.Tensor.") and any(
                isinstance(a, torch.Tensor) for a in (*args, *(kwargs or {}).values())):
            # an operator of a torch tensor with a traced value on its right (t + x):
            # declined, Python tries x.__radd__, whose error names the real problem
            return NotImplemented
        raise UnsupportedError(
            f"{name} was called on a value "
            "PowerFusion is tracing: pf.jit and pf.explain take numpy-style code (numpy "
            "functions, operators, pf.gelu, pf.softmax, ...); for PyTorch models and "
            "functions use torch.compile(fn, backend=\"powerfusion\")")


def _no_out(name: str, out) -> None:
    if out is not None:
        raise UnsupportedError(f"{name}(out=...): traced functions return new values; "
                               "drop out= and use the result")


# -- numpy's ufuncs and functions on traced tensors ----------------------------------------
def array_ufunc(ufunc, method: str, inputs: tuple, kwargs: dict):
    name = f"numpy.{ufunc.__name__}"
    if "out" in kwargs:
        raise UnsupportedError(f"{name}(out=...) is not supported by PowerFusion tracing: "
                               "traced functions return new values; drop out=")
    if method == "reduce" and ufunc.__name__ in UFUNC_REDUCE:
        axis = kwargs.pop("axis", 0)
        keepdims = kwargs.pop("keepdims", False)
        _reject(f"{name}.reduce", kwargs, UFUNC_DEFAULTS)
        x = to_operand(inputs[0], what=f"{name}.reduce")
        return Tensor(build.reduce(UFUNC_REDUCE[ufunc.__name__], x, axis, keepdims))
    if method != "__call__":
        raise UnsupportedError(f"{name}.{method} is not supported by PowerFusion tracing")
    fn = UFUNCS.get(ufunc.__name__)
    if fn is None:
        raise UnsupportedError(f"{name} is not supported by PowerFusion tracing")
    _reject(name, kwargs, UFUNC_DEFAULTS)
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
