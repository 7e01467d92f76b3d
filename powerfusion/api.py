"""The public entry points: `pf.jit` and `pf.explain`.

`jit` traces and compiles once per call signature (kind, shape, dtype and element
strides of every tensor argument, value and type of every scalar) and keeps the
executable in memory; the compiler keeps the binaries on disk.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import options
from .compiler import compile_graph, explain_graph
from .dtypes import DType, as_dtype
from .errors import DTypeError, PowerFusionError, UnsupportedError
from .frontend.tensor import is_torch_tensor
from .frontend.tracing import TensorSpec, flatten_arguments, trace_bound
from .targets import TARGETS


@dataclass
class _TensorArg:
    """A tensor argument made ready for the executable: storage array and layout."""

    kind: str                    # "numpy", "torch" or "torch_cuda"
    storage: Any                 # what exe.run takes: a numpy array (bfloat16 as uint16),
                                 # or for "torch_cuda" the CUDA tensor itself
    dtype: DType
    strides: tuple[int, ...]     # in elements

    @property
    def key(self) -> tuple:
        return (self.kind, tuple(self.storage.shape), self.dtype, self.strides)

    @property
    def spec(self) -> TensorSpec:
        return TensorSpec(tuple(self.storage.shape), self.dtype)


def _static_key(value, label: str):
    """A hashable key for a scalar argument; its type and value are in the signature.
    None is accepted too, for optional arguments left out."""
    if isinstance(value, (bool, int, float, type(None))) and not isinstance(value, np.generic):
        return (type(value).__name__, repr(value))
    raise DTypeError(f"{label}: expected a numpy array, a CPU torch tensor or a Python "
                     f"scalar (bool, int, float), got {type(value).__name__}")


def _numpy_arg(array: np.ndarray, label: str) -> _TensorArg:
    if isinstance(array, np.generic):
        array = np.asarray(array)
    elif type(array) is np.memmap:          # an array in a file: plain array semantics
        array = array.view(np.ndarray)
    elif type(array) is not np.ndarray:
        # np.matrix, masked arrays, ... change what operators mean and what comes back
        raise UnsupportedError(f"{label}: a {type(array).__module__}.{type(array).__name__}"
                               " (an ndarray subclass, whose operators mean something else)"
                               "; PowerFusion takes plain arrays: pass np.asarray(...) if "
                               "plain array semantics are what you want")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    dtype = as_dtype(array.dtype, what=label)
    item = array.dtype.itemsize
    if any(s % item for s in array.strides) or array.ctypes.data % item:
        array = array.copy(order="C")     # byte strides not whole elements (0-d stays 0-d)
    storage = array.view(np.uint16) if dtype is DType.bfloat16 else array
    return _TensorArg("numpy", storage, dtype, tuple(s // item for s in array.strides))


def _torch_arg(tensor, label: str, target: str) -> _TensorArg:
    from .frontend.torch_storage import resolved, to_storage

    dtype = as_dtype(tensor.dtype, what=label)
    tensor = resolved(tensor)
    if tensor.device.type == "cuda" and target == "cuda":
        return _TensorArg("torch_cuda", tensor, dtype, tuple(tensor.stride()))
    if tensor.device.type != "cpu":
        hint = ("; move it with .cpu()" if target != "cuda"
                else "; target 'cuda' takes CUDA tensors and host arrays")
        raise UnsupportedError(f"{label}: a torch tensor on {tensor.device}, but this "
                               f"function compiles for target {target!r}{hint}")
    return _TensorArg("torch", to_storage(tensor), dtype, tuple(tensor.stride()))


def _is_host_tensor(value) -> bool:
    if is_torch_tensor(value):
        return value.device.type != "cuda"
    return isinstance(value, (np.ndarray, np.generic))


def prepare_arguments(labels: list[str], values: list, target: str):
    """(tensor args, signature key) for a call's flattened arguments."""
    tensors, key = [], []
    for label, value in zip(labels, values):
        if isinstance(value, (np.ndarray, np.generic)):
            arg = _numpy_arg(value, label)
        elif is_torch_tensor(value):
            arg = _torch_arg(value, label, target)
        else:
            key.append(("static", _static_key(value, label)))
            continue
        tensors.append(arg)
        key.append(arg.key)
    kinds = {t.kind == "torch_cuda" for t in tensors}
    if len(kinds) > 1:
        host = next(lab for lab, v in zip(labels, values) if _is_host_tensor(v))
        raise UnsupportedError(f"{host}: a host array among CUDA tensors; pass every "
                               "tensor argument on the CUDA device, or none")
    return tensors, tuple(key)


def _result(storage: np.ndarray, dtype: DType, kind: str):
    """An executable's storage array as the kind of array that came in, zero-copy."""
    if kind == "torch_cuda":
        return storage                  # the CUDA runtime returns torch tensors already
    if kind == "torch":
        from .frontend.torch_storage import from_storage

        return from_storage(storage, dtype)
    return storage.view(dtype.to_numpy()) if dtype is DType.bfloat16 else storage


@dataclass
class _Compiled:
    executable: Any
    structure: str               # "single", "tuple" or "list"
    out_dtypes: tuple[DType, ...]


class JitFunction:
    """A function compiled per call signature; call it like the original."""

    def __init__(self, fn, target: str = "cpu", tune: bool = False):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.target = target
        self.tune = tune
        self.cache: dict[tuple, _Compiled] = {}
        self.traces = 0          # how many times fn was traced (tests read it)
        self.device_calls: dict[tuple, _Compiled] = {}   # all-CUDA-tensor calls, by _device_key
        # all-numpy-array calls, by _host_key: (compiled, which arguments are bfloat16)
        self.host_calls: dict[tuple, tuple[_Compiled, tuple[bool, ...]]] = {}
        self._lock = threading.Lock()                      # guards _compiling
        self._compiling: dict[tuple, threading.Lock] = {}  # a lock per signature in flight

    def __repr__(self) -> str:
        return f"<pf.jit {getattr(self.fn, '__name__', self.fn)!r} target={self.target!r}>"

    def __call__(self, *args, **kwargs):
        if self.device_calls and not kwargs:
            compiled = self.device_calls.get(_device_key(args))
            if compiled is not None:
                return _structured(compiled, compiled.executable.run_device(list(args)))
        host_key = None if kwargs else _host_key(args)
        if host_key is not None and self.host_calls:
            hit = self.host_calls.get(host_key)
            if hit is not None:
                compiled, bf16 = hit
                outs = compiled.executable.run([a.view(np.uint16) if b else a
                                                for a, b in zip(args, bf16)])
                return _structured(compiled, [_result(o, d, "numpy")
                                              for o, d in zip(outs, compiled.out_dtypes)])
        bound = flatten_arguments(self.fn, args, kwargs)
        tensors, key = prepare_arguments(bound.labels, bound.values, self.target)
        compiled = self.cache.get(key) or self._compile(key, bound, tensors)
        if not kwargs and tensors and len(tensors) == len(args) and \
                all(t.kind == "torch_cuda" for t in tensors):
            self.device_calls[_device_key(args)] = compiled
        if host_key is not None:        # arguments used as they are: none was copied
            self.host_calls[host_key] = (compiled, tuple(t.dtype is DType.bfloat16
                                                         for t in tensors))
        outs = compiled.executable.run([t.storage for t in tensors])
        kind = tensors[0].kind if tensors else "numpy"
        return _structured(compiled, [_result(o, d, kind)
                                      for o, d in zip(outs, compiled.out_dtypes)])


    def _compile(self, key: tuple, bound, tensors: list[_TensorArg]) -> _Compiled:
        """Trace and compile a new signature, once even when threads call it together."""
        with self._lock:
            lock = self._compiling.setdefault(key, threading.Lock())
        try:
            with lock:
                compiled = self.cache.get(key)
                if compiled is None:
                    graph, structure = _trace_prepared(self.fn, bound, tensors)
                    self.traces += 1
                    tuning = {"tune_with": [t.storage for t in tensors]} if self.tune else {}
                    exe = compile_graph(graph, target=self.target, **tuning,
                                        input_strides=tuple(t.strides for t in tensors))
                    compiled = _Compiled(exe, structure, tuple(o.dtype for o in graph.outputs))
                    self.cache[key] = compiled
                return compiled
        finally:
            with self._lock:
                self._compiling.pop(key, None)


def _device_key(args: tuple):
    """The signature of a call whose arguments are all plain CUDA tensors (None if not):
    such calls skip argument preparation once compiled (kernels are microseconds)."""
    try:
        if all(a.is_cuda and not a.is_neg() for a in args):
            return tuple((a.dtype, a.shape, a.stride()) for a in args)
    except AttributeError:
        pass
    return None


def _host_key(args: tuple):
    """The signature of a call whose arguments are all numpy arrays that need no
    preparation (native byte order, element-aligned data and strides), None if not:
    such calls skip argument preparation once compiled (~15 us of a small call)."""
    key = []
    for a in args:
        if type(a) is not np.ndarray or not a.flags.aligned or not a.dtype.isnative \
                or a.dtype.alignment != a.dtype.itemsize:
            return None
        key.append((a.dtype, a.shape, a.strides))
    return tuple(key)


def _structured(compiled: _Compiled, results: list):
    if compiled.structure == "single":
        return results[0]
    return list(results) if compiled.structure == "list" else tuple(results)


def _trace_prepared(fn, bound, tensors: list[_TensorArg]):
    """trace() on the already flattened call: tensor values replaced by their specs."""
    specs = iter(t.spec for t in tensors)
    values = [next(specs) if isinstance(v, (np.ndarray, np.generic)) or is_torch_tensor(v)
              else v for v in bound.values]
    return trace_bound(fn, bound, values)


def default_target() -> str:
    """$POWERFUSION_TARGET, else "cpu": lets a whole test suite run on another backend."""
    return options.get("POWERFUSION_TARGET")


def _checked_target(target: str | None) -> str:
    target = target or default_target()
    if target not in TARGETS:
        raise UnsupportedError(f"target: expected one of {', '.join(TARGETS)}, got {target!r}")
    return target


def jit(fn=None, *, target: str | None = None, tune: bool = False):
    """Compile fn on first call per signature: `@pf.jit` or `@pf.jit(target="cpu")`.

    target: "cpu" (C + OpenMP), "opencl", "cuda" or "hip"; default $POWERFUSION_TARGET
    or "cpu". tune: on the first call per signature, time the cost model's top
    candidates on the real inputs and keep the winner in the tuning database (the
    next run, in any process, starts tuned).
    """
    target = _checked_target(target)
    if fn is None:
        return lambda f: JitFunction(f, target, tune)
    return JitFunction(_checked_function(fn, "pf.jit"), target, tune)


def _checked_function(fn, what: str):
    if not callable(fn):
        raise PowerFusionError(f"{what} expects a function, got {type(fn).__name__}")
    return fn


def explain(fn, *args, target: str | None = None, **kwargs):
    """The compiler's report (GIR, generated code, bytes moved) for fn on these args."""
    own = getattr(type(fn), "__pf_explain__", None)   # a loaded model explains its regions
    if own is not None:
        return own(fn, *args, target=target, **kwargs)
    if isinstance(fn, JitFunction):
        target = target or fn.target
        fn = fn.fn
    target = _checked_target(target)
    bound = flatten_arguments(_checked_function(fn, "pf.explain"), args, kwargs)
    tensors, _ = prepare_arguments(bound.labels, bound.values, target)
    graph, _ = _trace_prepared(fn, bound, tensors)
    return explain_graph(graph, input_strides=tuple(t.strides for t in tensors),
                         target=target)
