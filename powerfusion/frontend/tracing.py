"""Tracing: run the user's function on symbolic tensors (frontend/tensor.py) and record
the graph it builds."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..dtypes import DType, as_dtype
from ..errors import UnsupportedError
from ..graph.graph import Graph, Node
from ..graph.ops import Op
from .tensor import Tensor, is_torch_tensor


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
