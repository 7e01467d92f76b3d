"""An ONNX model as a callable: claimed ops as PowerFusion kernels, the rest as library.

Loading reads the model once: constants (initializers, Constant nodes), the dtypes
ONNX's shape inference gives every value, and for each node whether PowerFusion
claims it (`onnx_ops.RULES`). Consecutive claimed nodes form a `Region`, one
function compiled by `pf.jit` per call signature, so dynamic dims bind at the first
call per shape; consecutive unclaimed nodes form a `LibraryStep` (onnxruntime).

A claimed op reads some inputs as values while tracing (a Reshape's shape, a
Slice's bounds): those are constants, or outputs of an earlier step, known when the
region runs; each set of such values gets its own compiled function. A node whose
output is read that way is left to the library, so it never sits in the region
that needs its value.
"""

from __future__ import annotations

import heapq
import logging
import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import api
from ..errors import DTypeError, PowerFusionError, ShapeError, UnsupportedError
from ..gir.dataflow import programs_to_dot
from ..graph.graph import Node
from ..graph.ops import Op
from . import build
from . import onnx_layout, onnx_reductions  # noqa: F401 - they register their rules
from .onnx_library import LibraryStep, used_names
from .onnx_ops import ELEM_DTYPES, RULES, Delegate, NodeInfo, OpContext
from .tensor import Tensor

logger = logging.getLogger("powerfusion")
MIN_OPSET = 13                   # the first opset whose semantics the rules follow


def _as_model(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if isinstance(model, (str, os.PathLike)):
        if not os.path.exists(model):
            raise UnsupportedError(f"pf.onnx.load: no such file {os.fspath(model)!r}")
        try:
            return onnx.load(os.fspath(model))
        except Exception as e:          # noqa: BLE001 - protobuf's errors, typed here
            raise UnsupportedError(f"pf.onnx.load: {os.fspath(model)!r} is not an ONNX "
                                   f"model ({type(e).__name__}: {e})") from e
    raise UnsupportedError(f"pf.onnx.load expects a path, bytes or an onnx.ModelProto, "
                           f"got {type(model).__name__}")


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """A Constant node's value as an array (None for string and sparse values)."""
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats"):
            return np.asarray(helper.get_attribute_value(attr), np.float32)
        if attr.name in ("value_int", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr), np.int64)
    return None


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        out[attr.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
               default=1)


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every value's type that ONNX's shape inference can tell."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:                   # noqa: BLE001 - inference is a best effort
        inferred = model
    g = inferred.graph
    return {v.name: v for v in list(g.input) + list(g.value_info) + list(g.output)
            if v.type.WhichOneof("value") is not None}


_UNSUPPORTED = object()         # a known element type PowerFusion has no DType for


def _dtype(types: dict[str, int], name: str):
    if not types.get(name):
        return None                      # not inferred
    return ELEM_DTYPES.get(types[name], _UNSUPPORTED)


def _claim_reason(info: NodeInfo, domain: str, node: onnx.NodeProto) -> str | None:
    """None when PowerFusion claims the node, else why not."""
    if domain not in ("", "ai.onnx") or info.op_type not in RULES:
        return "not a PowerFusion op"
    if info.opset < MIN_OPSET:
        return f"opset {info.opset} < {MIN_OPSET}"
    if any(d is _UNSUPPORTED for d in info.in_dtypes + info.out_dtypes):
        return "a dtype PowerFusion does not have"
    check = RULES[info.op_type].check
    return check(info) if check else None


def _clustered_order(nodes: list[onnx.NodeProto], claimed: list[bool]) -> list[int]:
    """A topological order of the nodes that keeps claimed and unclaimed nodes together
    where the dependencies allow: exporters interleave them (each projection's MatMul,
    then its bias, reshape and transpose), and each switch costs a sub-model or region
    call. Ties go to the earlier node, so an order with no switch to save is kept."""
    producer = {out: k for k, node in enumerate(nodes) for out in node.output if out}
    users: list[list[int]] = [[] for _ in nodes]
    waiting = [0] * len(nodes)
    for k, node in enumerate(nodes):
        for src in {producer[n] for n in used_names(node) if n in producer}:
            users[src].append(k)
            waiting[k] += 1
    ready: dict[bool, list[int]] = {True: [], False: []}
    for k in range(len(nodes)):
        if not waiting[k]:
            heapq.heappush(ready[claimed[k]], k)
    order: list[int] = []
    kind = bool(nodes) and claimed[0]
    while ready[True] or ready[False]:
        if not ready[kind]:
            kind = not kind              # this kind has nothing ready: switch
        k = heapq.heappop(ready[kind])
        order.append(k)
        for user in users[k]:
            waiting[user] -= 1
            if not waiting[user]:
                heapq.heappush(ready[claimed[user]], user)
    if len(order) < len(nodes):
        stuck = nodes[min(set(range(len(nodes))) - set(order))]
        raise UnsupportedError(f"node {stuck.name or '?'!r} ({stuck.op_type}) reads a value "
                               "that depends on its own result: the graph has a cycle")
    return order


@dataclass
class _Value:
    """Where a value a step reads comes from: the caller, a constant, or a step."""

    producer: int | None         # index of the step that makes it; None: input/constant


class Region:
    """Consecutive claimed nodes, compiled by pf.jit per set of static values."""

    def __init__(self, index: int, infos: list[NodeInfo], inputs: list[str],
                 statics: list[str], outputs: list[str], constants: dict[str, np.ndarray],
                 target: str | None, library: LibraryStep):
        self.index, self.infos, self.library = index, infos, library
        self.inputs, self.statics, self.outputs = inputs, statics, outputs
        self.constants, self.target = constants, target
        self.jits: dict[tuple, object] = {}

    @property
    def label(self) -> str:
        return f"region {self.index} ({', '.join(dict.fromkeys(i.op_type for i in self.infos))})"

    def describe(self) -> list[str]:
        return [f"{i.name} ({i.op_type})" for i in self.infos]

    def function(self, env: dict[str, np.ndarray]):
        """The jitted function for the static values in env (None: they are
        delegated to the library)."""
        statics = {n: np.asarray(env[n]) for n in self.statics}
        key = tuple((a.dtype.str, a.shape, a.tobytes()) for a in statics.values())
        if key not in self.jits:
            self.jits[key] = api.jit(self._traced({**self.constants, **statics}),
                                 target=self.target)
        return self.jits[key], key

    def run(self, env: dict[str, np.ndarray]) -> None:
        if not self.outputs:
            return                       # nothing it computes is used
        fn, key = self.function(env)
        if fn is not None:
            try:
                env.update(zip(self.outputs, fn(*(env[n] for n in self.inputs))))
                return
            except Delegate as e:
                logger.info("PowerFusion: %s runs in the library: %s", self.label, e)
                self.jits[key] = None
        self.library.run(env)

    def _traced(self, known: dict[str, np.ndarray]):
        def region(*tensors):
            nodes: dict[str, Node] = {n: t.node for n, t in zip(self.inputs, tensors)}
            for info in self.infos:
                _replay(info, nodes, known)
            return tuple(Tensor(nodes[n]) for n in self.outputs)
        region.__name__ = region.__qualname__ = f"onnx_region_{self.index}"
        return region


def _replay(info: NodeInfo, nodes: dict[str, Node], known: dict[str, np.ndarray]) -> None:
    """Add one claimed node's results to nodes; errors name the node."""
    try:
        results = RULES[info.op_type].handler(OpContext(info, nodes, known))
    except (ShapeError, DTypeError, UnsupportedError) as e:
        raise type(e)(f"{info.label}: {e}") from e
    for name, node, dtype in zip(info.outputs, results, info.out_dtypes):
        if name and node is not None:
            if node.op is Op.CONST:
                raise UnsupportedError(f"{info.label}: a result computed only from "
                                       "constants (fold it before export)")
            nodes[name] = build.cast(node, dtype) if dtype is not None else node


class OnnxModel:
    """An ONNX model compiled by PowerFusion: call it with numpy arrays, one per
    declared input (positionally or by name); it returns one array per output (a
    single array when the model has one output)."""

    def __init__(self, model: onnx.ModelProto, target: str | None = None):
        self.proto = model
        g = model.graph
        self.opset = _opset(model)
        init_names = {t.name for t in g.initializer}
        self.inputs = [v for v in g.input if v.name not in init_names]
        self.input_names = [v.name for v in self.inputs]
        self.output_names = [v.name for v in g.output]
        self.constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self._protos = {t.name: t for t in g.initializer}
        nodes = []
        for node in g.node:
            standard = node.domain in ("", "ai.onnx")
            value = _constant_value(node) if node.op_type == "Constant" and standard else None
            if value is not None:
                self.constants[node.output[0]] = value
                self._protos[node.output[0]] = numpy_helper.from_array(value, node.output[0])
            elif node.op_type == "Identity" and standard and node.input[0] in self.constants \
                    and node.output[0] not in self.output_names:
                # exporters alias shared weights this way: a name for the same constant,
                # not a copy per call
                self.constants[node.output[0]] = self.constants[node.input[0]]
                self._protos[node.output[0]] = numpy_helper.from_array(
                    self.constants[node.input[0]], node.output[0])
            else:
                nodes.append(node)
        self._infos = _value_infos(model)
        types = {t.name: t.data_type for t in g.initializer}
        # a sequence, map or optional is a type PowerFusion does not have (-1)
        types.update((n, v.type.tensor_type.elem_type if v.type.HasField("tensor_type")
                      else -1) for n, v in self._infos.items())
        self.steps = self._partition(nodes, types, target)

    # -- partitioning ---------------------------------------------------------------------
    def _partition(self, nodes: list[onnx.NodeProto], types: dict[str, int], target):
        infos, claimed = [], []
        for k, node in enumerate(nodes):
            info = NodeInfo(node.name or f"#{k}", node.op_type, list(node.input),
                            list(node.output), _attrs(node), self.opset,
                            [_dtype(types, n) if n else None for n in node.input],
                            [_dtype(types, n) if n else None for n in node.output],
                            {i: self.constants[n] for i, n in enumerate(node.input)
                             if n in self.constants})
            infos.append(info)
            claimed.append(_claim_reason(info, node.domain, node) is None)
        # a value read as a static must exist before its reader's region runs
        producer = {out: k for k, node in enumerate(nodes) for out in node.output}
        for k, info in enumerate(infos):
            if claimed[k]:
                for i in RULES[info.op_type].static:
                    src = producer.get(info.inputs[i]) if i < len(info.inputs) else None
                    if src is not None:
                        claimed[src] = False
        groups: list[tuple[bool, list[int]]] = []
        for k in _clustered_order(nodes, claimed):
            if groups and groups[-1][0] == claimed[k]:
                groups[-1][1].append(k)
            else:
                groups.append((claimed[k], [k]))
        needed_after = self._needed_after(nodes, groups)
        steps = []
        for (is_region, members), later in zip(groups, needed_after):
            made = {o for k in members for o in nodes[k].output if o}
            reads = list(dict.fromkeys(n for k in members for n in used_names(nodes[k])
                                       if n not in made))
            outputs = [o for k in members for o in nodes[k].output if o and o in later]
            protos = {n: self._protos[n] for n in reads if n in self._protos}
            library = LibraryStep(self.proto, [nodes[k] for k in members],
                                  [n for n in reads if n not in protos], outputs, protos,
                                  self._infos)
            if is_region:
                statics = list(dict.fromkeys(
                    infos[k].inputs[i] for k in members for i in RULES[infos[k].op_type].static
                    if i < len(infos[k].inputs) and infos[k].inputs[i]))
                tensor_reads = [n for n in reads if any(
                    n == name for k in members for i, name in enumerate(infos[k].inputs)
                    if i not in RULES[infos[k].op_type].static)]
                consts = {n: self.constants[n] for n in reads if n in self.constants}
                steps.append(Region(len([s for s in steps if isinstance(s, Region)]) + 1,
                                    [infos[k] for k in members], tensor_reads, statics,
                                    outputs, consts, target, library))
            else:
                steps.append(library)
        return steps

    def _needed_after(self, nodes, groups) -> list[set[str]]:
        """For each group, the values read by later groups or returned."""
        out, later = [], set(self.output_names)
        for _, members in reversed(groups):
            out.append(set(later))
            for k in members:
                later |= set(used_names(nodes[k]))
        return out[::-1]

    # -- calls ------------------------------------------------------------------------------
    def _feeds(self, args, kwargs) -> dict[str, np.ndarray]:
        if len(args) > len(self.inputs):
            raise ShapeError(f"the model takes {len(self.inputs)} inputs "
                             f"({', '.join(self.input_names)}), got {len(args)}")
        feeds = dict(zip(self.input_names, args))
        for name, value in kwargs.items():
            if name not in self.input_names:
                raise ShapeError(f"the model has no input {name!r}; its inputs: "
                                 f"{', '.join(self.input_names)}")
            if name in feeds:
                raise ShapeError(f"input {name!r} given twice")
            feeds[name] = value
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ShapeError(f"missing model input(s): {', '.join(missing)}")
        dims: dict[str, tuple[int, str]] = {}
        for v in self.inputs:
            feeds[v.name] = _checked_input(v, feeds[v.name], dims)
        return feeds

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        """Outputs by name, for inputs by name."""
        env = {**self.constants, **self._feeds((), feeds)}
        for step in self.steps:
            step.run(env)
        return {n: env[n] for n in self.output_names}

    def __call__(self, *args, **kwargs):
        env = {**self.constants, **self._feeds(args, kwargs)}
        for step in self.steps:
            step.run(env)
        outs = tuple(env[n] for n in self.output_names)
        return outs[0] if len(outs) == 1 else outs

    def explain(self, *args, target: str | None = None, **kwargs):
        """pf.explain for the model: each region's report, on these inputs."""
        env = {**self.constants, **self._feeds(args, kwargs)}
        parts = []
        for step in self.steps:
            if isinstance(step, Region):
                fn, _ = step.function(env)
                report = None if fn is None else \
                    api.explain(fn, *(env[n] for n in step.inputs), target=target)
                parts.append((step.label, step.describe(), report))
            else:
                parts.append((step.label, step.describe(), None))
            step.run(env)
        return ModelReport(parts)

    __pf_explain__ = explain            # pf.explain(model, *inputs) calls it

    def example_inputs(self, dims: dict[str, int] | None = None, seed: int = 0) -> list:
        """Random inputs of the declared types: symbolic dims from `dims` (default 1);
        floats standard normal, ints zero (safe as indices), bools random."""
        rng = np.random.default_rng(seed)
        out = []
        for v in self.inputs:
            t = v.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else
                          (dims or {}).get(d.dim_param, 1) for d in t.shape.dim)
            dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
            if dtype.kind == "f":
                out.append(rng.standard_normal(shape).astype(dtype))
            elif dtype.kind == "b":
                out.append(rng.random(shape) < 0.5)
            else:
                out.append(np.zeros(shape, dtype))
        return out

    def __repr__(self) -> str:
        regions = sum(isinstance(s, Region) for s in self.steps)
        return (f"<pf.onnx model: {len(self.inputs)} input(s), {len(self.output_names)} "
                f"output(s), {regions} PowerFusion region(s), "
                f"{len(self.steps) - regions} library step(s)>")


def _checked_input(v: onnx.ValueInfoProto, value, dims: dict) -> np.ndarray:
    """value as the declared input: dtype exactly, rank, fixed dims, and each symbolic
    dim the same size wherever it appears in one call."""
    if not v.type.HasField("tensor_type"):
        return value                     # a sequence, map or optional: onnxruntime's
    array = np.asarray(value)
    t = v.type.tensor_type
    if t.elem_type:
        want = helper.tensor_dtype_to_np_dtype(t.elem_type)
        if array.dtype != want:
            raise DTypeError(f"model input {v.name!r}: expected {want}, got {array.dtype}")
    if t.HasField("shape"):
        declared = t.shape.dim
        if array.ndim != len(declared):
            raise ShapeError(f"model input {v.name!r}: expected rank {len(declared)}, "
                             f"shape {_shape_text(declared)}, got shape {array.shape}")
        for k, (d, n) in enumerate(zip(declared, array.shape)):
            if d.HasField("dim_value") and d.dim_value != n:
                raise ShapeError(f"model input {v.name!r}: dim {k} must be {d.dim_value}, "
                                 f"shape {_shape_text(declared)}, got shape {array.shape}")
            if d.HasField("dim_param") and d.dim_param:
                seen = dims.setdefault(d.dim_param, (n, v.name))
                if seen[0] != n:
                    raise ShapeError(f"model input {v.name!r}: dim {k} ({d.dim_param!r}) "
                                     f"is {n}, but {d.dim_param!r} is {seen[0]} in input "
                                     f"{seen[1]!r}")
    return array


def _shape_text(dims) -> str:
    return "(" + ", ".join(d.dim_param if d.HasField("dim_param") else
                           str(d.dim_value) if d.HasField("dim_value") else "?"
                           for d in dims) + ")"


@dataclass
class ModelReport:
    """pf.explain of a model: (step label, its nodes, Report or None) per step."""

    parts: list

    @property
    def reports(self) -> list:
        return [r for _, _, r in self.parts if r is not None]

    @property
    def global_bytes(self) -> int:
        return sum(r.global_bytes for r in self.reports)

    @property
    def min_global_bytes(self) -> int:
        return sum(r.min_global_bytes for r in self.reports)

    @property
    def kernels(self) -> int:
        return sum(r.kernels for r in self.reports)

    @property
    def source(self) -> str:
        return "\n\n".join(r.source for r in self.reports)

    def to_dot(self, naive: bool = False) -> str:
        """The GIR-Graph of every region's kernels, as Graphviz DOT."""
        return programs_to_dot([p for r in self.reports
                                for p in (r.naive_programs if naive else r.programs)])

    def __str__(self) -> str:
        lines = [f"PowerFusion ONNX report: {len(self.reports)} region(s), "
                 f"{len(self.parts) - len(self.reports)} library step(s), "
                 f"{self.kernels} kernel(s)"]
        for label, nodes, report in self.parts:
            lines.append(f"\n== {label}: {', '.join(nodes)}")
            lines.append(str(report) if report is not None else
                         "   runs in onnxruntime (compute-bound or unclaimed ops)")
        return "\n".join(lines)


def _passive_openmp() -> None:
    """OpenMP threads that sleep at once when idle, unless $OMP_WAIT_POLICY says otherwise.

    A model's kernels alternate with onnxruntime calls: GNU OpenMP's threads spin after
    each kernel, on the cores onnxruntime's next MatMul needs, and where another process
    holds a core, every kernel's barrier waits for a scheduler tick. Sleeping threads
    cost the kernels themselves (they wake cold), so this is for models that do call
    onnxruntime; benchmarks/results/onnx-openmp-policy-cpu-2026-12-05.md has both sides.
    OpenMP reads the variable when it loads, with the first kernel: set later, it
    changes nothing."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load(model, *, target: str | None = None) -> OnnxModel:
    """An ONNX model (path, bytes or ModelProto) as a PowerFusion callable."""
    loaded = OnnxModel(_as_model(model), target)
    if not all(isinstance(step, Region) for step in loaded.steps):
        _passive_openmp()           # it alternates with onnxruntime (nothing has run yet)
    return loaded


__all__ = ["OnnxModel", "ModelReport", "load", "PowerFusionError"]
