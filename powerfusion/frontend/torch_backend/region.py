"""A region of aten ops as one callable: on its first call with a given signature
(shape, strides, dtype and device of every tensor argument) a `Region` replays the
ops on frontend Tensors through their handlers, so numpy's shape rules from
`frontend.build` apply once and torch's dtype rules are enforced by casting to the dtype
each aten node's metadata records; it compiles the resulting Graph with `compile_graph`
and runs it on the torch tensors' memory, zero-copy, laying results out as PyTorch does.

Never break the user's model: a region that fails to trace, compile or run falls back
to PyTorch's eager aten calls for good, with one warning naming the op and the reason.
"""

from __future__ import annotations

import ctypes
import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx

from ... import compiler
from ...graph.graph import Graph, Node
from ...graph.ops import Op
from ...runtime.cpu_executable import Executable
from .. import build
from .. import torch_stats as stats
from ..torch_storage import DTYPE_TO_TORCH, from_storage, resolved, to_storage
from ..tensor import Tensor
from .registry import HANDLERS
from .tensor_pool import own_pool
from .support import DEVICES, _op_name, _warn
from .values import (Ctx, Splat, _concrete, _dt, _Fallback, _finish, _no_elements, _tensor,
                     _zeros_like_meta)


try:
    from torch._C._dynamo.guards import TensorGuards as _TensorGuards
except ImportError:                      # pragma: no cover - another torch
    _TensorGuards = None


def _signature(args) -> tuple:
    key = []
    for a in args:
        if isinstance(a, torch.Tensor):
            key.append((tuple(a.shape), a.stride(), a.dtype, a.device.type))
        elif isinstance(a, (list, tuple)):
            key.append(_signature(a))
        else:
            key.append((type(a).__name__, repr(a)))
    return tuple(key)


def _flat_tensors(args, out: list) -> list:
    """The tensors among args (lists and tuples of tensors opened), in order."""
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            _flat_tensors(a, out)
    return out


def _device_of(flat: list) -> torch.device:
    return flat[0].device if flat else torch.device("cpu")


class _CpuLaunch:
    """A region's kernels run straight on torch CPU tensors: pointers from data_ptr(),
    outputs and temps from torch's allocator (bfloat16 as itself), no
    numpy views; a pool (`own_pool`) hands back the memory of earlier calls that
    nobody holds any more. Everything a call needs is resolved once, from the plan's
    launch sequence, into positions in one list of pointers (the inputs', then the
    allocations'); a call only fills that list and launches."""

    def __init__(self, executable):
        plan = executable.plan
        sequence = plan.sequence
        slot = {name: k for k, name in enumerate(plan.input_names)}
        final = {}                       # buffer -> the shape its single output has
        for spec, shape in zip(plan.outputs, plan.out_shapes):
            if spec[0] == "buffer":
                final[spec[1]] = None if spec[1] in final else tuple(shape)
        self.allocations = []
        for name, shape, dtype in sequence.allocations:
            slot[name] = len(slot)
            want = final.get(name)       # allocated in its output's shape: no view later
            shape = want if want is not None and math.prod(want) == math.prod(shape) else shape
            self.allocations.append((tuple(shape), DTYPE_TO_TORCH[dtype]))
        self.pool = own_pool(self.allocations)
        self.launches = tuple(
            (executable.kernels[program.name].c_function, ctypes.c_void_p * len(names),
             tuple(slot[n] for n in names)) for program, names in sequence.launches)
        n_inputs = len(plan.input_names)
        self.outputs, returned = [], set()
        for spec, shape in zip(plan.outputs, plan.out_shapes):
            shape = tuple(shape)
            if spec[0] == "buffer":
                k = slot[spec[1]] - n_inputs
                again = spec[1] in returned          # one value twice: two tensors
                returned.add(spec[1])
                self.outputs.append(("buffer", k, None if self.allocations[k][0] == shape
                                     else shape, again))
            else:
                self.outputs.append((spec[0], spec, shape, False))

    def __call__(self, tensors: list) -> list:
        pointers = [t.data_ptr() for t in tensors]
        made = self.pool.take()
        pointers += [t.data_ptr() for t in made]
        for function, array, slots in self.launches:
            function(array(*[pointers[k] for k in slots]))     # releases the GIL
        outs = []
        for kind, k, shape, again in self.outputs:
            if kind == "buffer":
                t = made[k] if shape is None else made[k].view(shape)
                outs.append(t.clone() if again else t)
            elif kind == "input":
                outs.append(tensors[k[1]].reshape(shape).clone(
                    memory_format=torch.contiguous_format))
            else:
                outs.append(torch.full(shape, k[1], dtype=DTYPE_TO_TORCH[k[2]], device="cpu"))
        return outs


class _LeanResults:
    """How the lean path makes each of a region's results when every argument is a
    tensor (no lists): a kernel's output, an argument returned as it is, or a copy of
    one or a constant in memory of its own. The copies and constants are pooled like
    the kernels' outputs: a backward's zero gradient of an embedding table (16 MB,
    filled every step) otherwise maps fresh pages each step, a page fault per 4 KB.

    `recipe`, one per result: ("kernel", j, inverse) (the launch's output j),
    ("arg", k), ("copy", k, m, inverse) or ("full", value, m, inverse), m the pooled
    tensor's index; inverse: the permutation back from the memory order PyTorch
    gives that result (None: in order)."""

    def __init__(self, outputs: tuple, args: tuple):
        recipe, pooled = [], []
        for spec in outputs:
            if spec[0] == "graph":
                _, k, _, order = spec
                recipe.append(("kernel", k, None if order is None else _inverse(order)))
            elif spec[0] == "arg":
                recipe.append(("arg", spec[1]))
            else:
                if spec[0] == "copy":
                    _, k, order = spec
                    shape, dtype, what = tuple(args[k].shape), args[k].dtype, k
                else:
                    _, what, dtype, shape, order = spec
                    dtype = DTYPE_TO_TORCH[dtype]
                recipe.append((spec[0], what, len(pooled), order and _inverse(order)))
                pooled.append((tuple(shape[d] for d in order or range(len(shape))), dtype))
        self.recipe = tuple(recipe)
        self.pool = own_pool(pooled) if pooled else None

    def __call__(self, args, outs: list) -> list:
        made = self.pool.take() if self.pool is not None else ()
        results = []
        for kind, what, *rest in self.recipe:
            if kind == "kernel":
                t = outs[what]
                results.append(t if rest[0] is None else t.permute(rest[0]))
            elif kind == "arg":
                results.append(args[what])
            else:
                m, inverse = rest
                t = made[m] if inverse is None else made[m].permute(inverse)
                results.append(t.copy_(args[what]) if kind == "copy" else t.fill_(what))
        return results


@dataclass
class _Compiled:
    executable: Any                  # None when every output is a constant
    tensor_args: tuple[int, ...]     # which of the flattened tensors are graph inputs
    outputs: tuple                   # ("graph", k, dtype, order), ("arg", k)
                                     # (flattened tensor k, returned as it is),
                                     # ("copy", k, order) (a copy of it) or
                                     # ("full", value, dtype, shape, order); order:
                                     # the layout PyTorch gives that result
    cpu_launch: _CpuLaunch | None = None   # the CPU executable, on torch tensors
    # the common case, run with least work: on the CPU (kernels, or none at all) with
    # every argument a tensor
    fast: _LeanResults | None = None


def _layout_order(meta) -> tuple[int, ...] | None:
    """The order of meta's dims from outermost to innermost in memory (by decreasing
    stride; size-1 dims keep their place), or None when that is the logical order."""
    if not isinstance(meta, torch.Tensor):
        return None
    shape, strides = _concrete(meta.shape), _concrete(meta.stride())
    if shape is None or strides is None:
        return None
    big = [d for d in range(len(shape)) if shape[d] != 1]
    ranked = iter(sorted(big, key=lambda d: (-strides[d], d)))
    order = tuple(next(ranked) if shape[d] != 1 else d for d in range(len(shape)))
    return None if order == tuple(range(len(shape))) else order


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(order)
    for k, d in enumerate(order):
        inv[d] = k
    return tuple(inv)


def _passes_through(fx: torch.fx.Node) -> bool:
    """Whether the region returns this value as PyTorch would: the very argument."""
    while fx.op == "call_function" and fx.target is operator.getitem:
        fx = fx.args[0]
    return fx.op == "placeholder"


def _guard_of(args):
    """One C++ call checking that tensors have args' shapes, strides, dtypes, devices
    and dispatch keys (a lazily negated view has others), as TorchDynamo checks a
    frame's inputs; None where this torch has no such check. A region's lean path
    runs between library calls that leave the caches cold, where each Python-level
    check costs microseconds."""
    if _TensorGuards is None:
        return None
    try:
        return _TensorGuards(*args, dynamic_dims_sizes=[list(a.shape) for a in args],
                             dynamic_dims_strides=[list(a.stride()) for a in args]).check
    except Exception:                    # noqa: BLE001 - the Python checks then
        return None


class Region(torch.nn.Module):
    """A run of aten ops compiled by PowerFusion per call signature; the original
    aten calls (`self.eager`) are kept to fall back on."""

    def __init__(self, eager: torch.fx.GraphModule, label: str):
        super().__init__()
        self.eager = eager
        self.label = label
        self.ops = [_op_name(n) for n in eager.graph.nodes
                    if n.op == "call_function" and n.target is not operator.getitem]
        out = next(n for n in eager.graph.nodes if n.op == "output")
        self.single = not isinstance(out.args[0], (tuple, list))
        self.cache: dict[tuple, _Compiled] = {}
        self.failed = False
        # (layout of each argument, compiled) of the last call when that took the lean
        # path: every argument a tensor, every result a kernel's
        self.hot: tuple | None = None

    def __call__(self, *args):
        # what nn.Module.__call__ adds (hooks, tracing state) a region never uses; the
        # graph calls its regions on every step. (An FX retrace of the partitioned graph
        # would now trace into forward instead of keeping the region a leaf: nothing
        # retraces it.)
        return self.forward(*args)

    def forward(self, *args):
        hot = self.hot
        if hot is not None:              # the last signature's lean path, if it is one
            layouts, compiled, _ = hot
            if len(args) == len(layouts):
                for a, (shape, stride, dtype) in zip(args, layouts):
                    if a.shape != shape or a.stride() != stride or a.dtype != dtype \
                            or a.is_neg():
                        break
                else:
                    try:
                        launch = compiled.cpu_launch
                        results = compiled.fast(args, launch(args) if launch else ())
                    except Exception as e:   # noqa: BLE001 - never break the model
                        self.give_up_running(e)
                        return self.eager(*args)
                    return results[0] if self.single else tuple(results)
        if self.failed:
            return self.eager(*args)
        key = _signature(args)
        compiled = self.cache.get(key)
        if compiled is None:
            compiled = self._compile(args)
            if compiled is None:
                return self.eager(*args)
            self.cache[key] = compiled
        # the lean path checks shape, strides and dtype (a graph's values keep theirs
        # from call to call, but a region called on its own may not)
        self.hot = None if compiled.fast is None else (
            tuple((a.shape, a.stride(), a.dtype) for a in args), compiled, _guard_of(args))
        try:
            return self._run(compiled, args)
        except Exception as e:           # noqa: BLE001 - never break the model
            self.give_up_running(e)
            return self.eager(*args)

    def give_up_running(self, e: Exception) -> None:
        """Running the compiled kernels raised e: PyTorch's aten calls from now on."""
        self._give_up(", ".join(dict.fromkeys(self.ops)),
                      f"running the compiled kernels failed: {type(e).__name__}: {e}")

    def _run(self, compiled: _Compiled, args):
        outs = []
        flat = _flat_tensors(args, [])
        device = _device_of(flat)
        on_gpu = device.type == "cuda"
        if compiled.executable is not None:
            if on_gpu:          # torch tensors in and out, on torch's current stream
                outs = compiled.executable.run_device([flat[k] for k in compiled.tensor_args])
            elif compiled.cpu_launch is not None and not any(
                    flat[k].is_neg() or flat[k].is_conj() for k in compiled.tensor_args):
                outs = compiled.cpu_launch([flat[k] for k in compiled.tensor_args])
            else:
                outs = compiled.executable.run([to_storage(resolved(flat[k]))
                                                for k in compiled.tensor_args])
        results = []
        for spec in compiled.outputs:
            if spec[0] == "graph":
                _, k, dtype, order = spec
                if on_gpu:
                    t = outs[k].contiguous()
                elif isinstance(outs[k], torch.Tensor):      # the CPU launch's: contiguous
                    t = outs[k]
                else:
                    out = outs[k]
                    if not out.flags.c_contiguous:   # a copied input keeps its layout
                        out = np.ascontiguousarray(out)
                    t = from_storage(out, dtype)
                results.append(t if order is None else t.permute(_inverse(order)))
            elif spec[0] == "arg":
                results.append(flat[spec[1]])
            elif spec[0] == "copy":
                _, k, order = spec
                src = flat[k]
                results.append(torch.empty_permuted(
                    src.shape, order or tuple(range(src.dim())), dtype=src.dtype,
                    device=device).copy_(src))
            else:
                _, value, dtype, shape, order = spec
                results.append(torch.empty_permuted(
                    shape, order or tuple(range(len(shape))), dtype=DTYPE_TO_TORCH[dtype],
                    device=device).fill_(value))
        return results[0] if self.single else tuple(results)

    def _compile(self, args) -> _Compiled | None:
        try:
            graph, tensor_args, outputs = self._trace(args)
            flat = _flat_tensors(args, [])
            exe = None
            if graph.outputs:
                exe = compiler.compile_graph(graph, input_strides=tuple(
                    tuple(flat[k].stride()) for k in tensor_args),
                    target=DEVICES[_device_of(flat).type])
        except _Fallback as e:
            self._give_up(e.args[1] if len(e.args) > 1 else ", ".join(self.ops), e.args[0])
            return None
        except Exception as e:           # noqa: BLE001 - never break the model
            op = getattr(e, "powerfusion_op", None) or ", ".join(dict.fromkeys(self.ops))
            self._give_up(op, f"{type(e).__name__}: {e}")
            return None
        stats.count("compiles")
        if exe is not None:
            stats.count("kernels", len(exe.plan.kernels))
        cpu_launch = _CpuLaunch(exe) if isinstance(exe, Executable) else None
        fast = None
        if (cpu_launch is not None or (exe is None and _device_of(flat).type == "cpu")) \
                and all(isinstance(a, torch.Tensor) for a in args):
            fast = _LeanResults(outputs, args)
        return _Compiled(exe, tensor_args, outputs, cpu_launch, fast)

    def _trace(self, args):
        env: dict[torch.fx.Node, Any] = {}
        inputs, tensor_args, flat_of = [], [], {}
        nodes = list(self.eager.graph.nodes)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        counter = iter(range(1 << 62))

        def symbolic(a):
            if isinstance(a, torch.Tensor):
                k = next(counter)
                node = Node(Op.INPUT, (), tuple(a.shape), _dt(a.dtype), len(inputs))
                inputs.append(node)
                tensor_args.append(k)
                flat_of[id(node)] = k
                return Tensor(node)
            if isinstance(a, (list, tuple)):
                return type(a)(symbolic(b) for b in a)
            return a

        for ph, a in zip(placeholders, args):
            env[ph] = symbolic(a)
        result = None
        for n in nodes:
            if n.op == "call_function":
                a = torch.fx.node.map_arg(n.args, lambda x: env[x])
                kw = torch.fx.node.map_arg(n.kwargs, lambda x: env[x])
                if n.target is operator.getitem:
                    env[n] = a[0][a[1]]
                    continue
                try:
                    meta = n.meta.get("val")
                    if _no_elements(meta):       # nothing to compute, whatever the op
                        env[n] = _finish(_zeros_like_meta(meta), meta)
                    else:
                        env[n] = _finish(HANDLERS[n.target](Ctx(n), *a, **kw), meta)
                except _Fallback as e:
                    raise _Fallback(e.args[0], _op_name(n)) from e
                except Exception as e:
                    e.powerfusion_op = _op_name(n)
                    raise
            elif n.op == "output":
                result = torch.fx.node.map_arg(n.args[0], lambda x: env[x])
                out_nodes = n.args[0]
        values = [result] if self.single else list(result)
        out_nodes = [out_nodes] if self.single else list(out_nodes)
        graph_outputs, outputs = [], []
        for v, fx in zip(values, out_nodes):
            # results are laid out as PyTorch lays them out (the order of their
            # strides): aten views downstream may rely on it
            order = _layout_order(fx.meta.get("val"))
            if isinstance(v, Splat):
                outputs.append(("full", v.value, v.dtype, v.shape, order))
            elif isinstance(v, Tensor) and v.node.op is Op.INPUT and _passes_through(fx):
                # an argument (or an item of a list argument) returned as it is
                outputs.append(("arg", flat_of[id(v.node)]))
            elif isinstance(v, Tensor) and v.node.op is Op.INPUT:
                outputs.append(("copy", flat_of[id(v.node)], order))     # a clone
            elif isinstance(v, Tensor) and 0 in v.shape:
                outputs.append(("full", 0, v.dtype, v.shape, order))     # no elements
            else:
                v = _tensor(v, "region output")
                outputs.append(("graph", len(graph_outputs), v.dtype, order))
                graph_outputs.append(v.node if order is None else
                                     build.permute(v.node, order))
        graph = Graph(tuple(inputs), tuple(graph_outputs), {"name": self.label})
        return graph, tuple(tensor_args), tuple(outputs)

    def _give_up(self, op: str, reason: str) -> None:
        self.hot = None
        if not self.failed:
            self.failed = True
            stats.count("failed_regions")
            stats.count_ops("fused_ops", self.ops, -1)
            stats.count_ops("fallback_ops", self.ops)
        _warn(op, reason)
