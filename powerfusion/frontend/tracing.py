"""Tracing: run the user's function on symbolic tensors and record the graph it builds.

A `Tensor` stands for an array whose shape and dtype are known and whose values are
not. Its operators and methods follow numpy (they build nodes through `build`), and
numpy's own functions reach it through `__array_ufunc__` / `__array_function__`.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..dtypes import DType, as_dtype
from ..errors import DTypeError, UnsupportedError
from ..graph.graph import Graph, Node
from ..graph.ops import Op
from . import build

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
        from .numpy_protocol import FUNCTIONS
        return FUNCTIONS["var"](self, axis, dtype, out, ddof, keepdims)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        from .numpy_protocol import FUNCTIONS
        return FUNCTIONS["std"](self, axis, dtype, out, ddof, keepdims)

    def clip(self, min=None, max=None, out=None):     # noqa: A002 - numpy's names
        from .numpy_protocol import FUNCTIONS
        return FUNCTIONS["clip"](self, min, max, out)

    def round(self, decimals=0, out=None):
        from .numpy_protocol import FUNCTIONS
        return FUNCTIONS["round"](self, decimals, out)

    def swapaxes(self, axis1, axis2):
        from .numpy_protocol import FUNCTIONS
        return FUNCTIONS["swapaxes"](self, axis1, axis2)

    def squeeze(self, axis=None):
        from .numpy_protocol import FUNCTIONS
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
        from .numpy_protocol import array_ufunc
        return array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from .numpy_protocol import array_function
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


# -- arguments ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a tensor argument, without its data."""

    shape: tuple[int, ...]
    dtype: DType


@dataclass
class Arguments:
    """A call's arguments flattened in parameter order, with labels for messages."""

    labels: list[str]
    values: list[Any]
    call: Callable[[list], Any]       # calls the function with replaced values


@functools.lru_cache(maxsize=512)
def _signature(fn) -> inspect.Signature | None:
    """fn's signature, worked out once per function (every jitted call binds to it)."""
    if inspect.isfunction(inspect.unwrap(fn)) or inspect.ismethod(fn):
        try:
            return inspect.signature(fn)
        except (TypeError, ValueError):
            pass                      # no usable signature: name arguments by position
    return None


def flatten_arguments(fn, args: tuple, kwargs: dict) -> Arguments:
    """Bind args to fn's signature; each value gets a label like "argument 1 ('w')"
    that error messages can name."""
    sig = _signature(fn)
    if sig is None:
        names = [f"argument {k}" for k in range(len(args))] + [repr(k) for k in kwargs]

        def call_positional(values):
            return fn(*values[:len(args)], **dict(zip(kwargs, values[len(args):])))
        return Arguments(names, list(args) + list(kwargs.values()), call_positional)
    bound = sig.bind(*args, **kwargs)     # defaults stay implicit: fn applies them
    names, values, layout = [], [], []
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            layout.append((name, "tuple", len(value)))
            names += [f"{name}[{i}]" for i in range(len(value))]
            values += list(value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            layout.append((name, "dict", list(value)))
            names += list(value)
            values += list(value.values())
        else:
            layout.append((name, "one", None))
            names.append(name)
            values.append(value)
    labels = [f"argument {k} ({n!r})" for k, n in enumerate(names)]

    def call(new_values):
        it = iter(new_values)
        arguments = {}
        for name, kind, extra in layout:
            if kind == "tuple":
                arguments[name] = tuple(next(it) for _ in range(extra))
            elif kind == "dict":
                arguments[name] = {key: next(it) for key in extra}
            else:
                arguments[name] = next(it)
        rebound = inspect.BoundArguments(sig, arguments)
        return fn(*rebound.args, **rebound.kwargs)
    return Arguments(labels, values, call)


def is_tensor_argument(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, TensorSpec)) or is_torch_tensor(x)


def _spec_of(x, what: str) -> TensorSpec:
    if isinstance(x, TensorSpec):
        return x
    if isinstance(x, np.generic):
        x = np.asarray(x)
    return TensorSpec(tuple(int(n) for n in x.shape), as_dtype(x.dtype, what=what))


def trace(fn, args: tuple | list, kwargs: dict | None = None) -> tuple[Graph, str]:
    """Run fn on symbolic tensors. Tensor arguments (numpy arrays, torch tensors,
    TensorSpecs) become INPUT nodes numbered in parameter order; Python scalars and
    other static values are passed as they are. Returns the graph and the output
    structure: "single", "tuple" or "list"."""
    bound = flatten_arguments(fn, tuple(args), dict(kwargs or {}))
    return trace_bound(fn, bound, bound.values)


def trace_bound(fn, bound: Arguments, values: list) -> tuple[Graph, str]:
    """trace() on a call already flattened, with `values` in place of bound.values."""
    inputs, traced_values = [], []
    for label, value in zip(bound.labels, values):
        if is_tensor_argument(value):
            spec = _spec_of(value, label)
            node = Node(Op.INPUT, (), spec.shape, spec.dtype, len(inputs))
            inputs.append(node)
            value = Tensor(node)
        traced_values.append(value)
    result = bound.call(traced_values)
    name = getattr(fn, "__name__", type(fn).__name__)
    if isinstance(result, (tuple, list)):
        structure, items = type(result).__name__, list(result)
    else:
        structure, items = "single", [result]
    for k, item in enumerate(items):
        if not isinstance(item, Tensor):
            where = f"result {k}" if structure != "single" else "its result"
            raise UnsupportedError(
                f"{name} returned {type(item).__name__} as {where}; a traced function "
                "must return a tensor computed from its tensor arguments, or a tuple or "
                "list of them")
    graph = Graph(tuple(inputs), tuple(t.node for t in items), {"name": name})
    return graph, structure
