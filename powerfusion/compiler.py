"""The pipeline as one function per arrow: graph -> kernels -> GIR -> passes -> code -> run.

`compile_graph` is what `pf.jit` calls; `explain_graph` runs the same pipeline and
reports what each stage made instead of loading code.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from .dtypes import DType
from .graph.alternatives import REWRITES
from .graph.canonical import canonicalize
from .graph.graph import Graph, Node
from .graph.ops import Group, Op
from .graph.partition import Kernel, partition, reshape_index
from .graph.views import contiguous_strides, strided_offset, through_views
from .gir.expr import Expr, Var
from .gir.interpreter import storage_dtype
from .gir.ir import Access, Buffer, Level, Program, Role, map_accesses
from .gir.lower import Storage, lower
from .passes.pipeline import PassLog, optimize
from .passes.traffic import footprint
from .search.schedule import Schedule, default_schedule
from .targets import Target, get_target


@dataclass
class CompiledKernel:
    """One kernel through every stage, kept for explain."""

    kernel: Kernel
    schedule: Schedule
    naive: Program
    program: Program
    log: PassLog


@dataclass
class Plan:
    """Everything compile_graph decides before code generation."""

    graph: Graph
    target: Target
    kernels: list[CompiledKernel]
    outputs: list[tuple]                 # per graph output: ("buffer", name) / ("input", k) ...
    out_shapes: list[tuple[int, ...]]
    buffers: dict[str, Buffer]           # every global buffer between kernels, by name
    input_names: list[str] = field(default_factory=list)
    choice: str = "as written"           # which alternative computation won
    alternatives: list = field(default_factory=list)   # (name, estimated seconds) considered

    @functools.cached_property
    def sequence(self) -> "LaunchSequence":
        return LaunchSequence.of(self)


KERNEL_OVERHEAD_BYTES = 64 * 1024   # a launch costs about as much as moving this much
BLOCKS_PER_UNIT = 4                 # blocks per GPU multiprocessor a schedule aims at
THREADS_PER_UNIT = 1024             # threads per multiprocessor for full bandwidth: four
                                    # 256-thread blocks, or one 1024-thread block whose
                                    # row is on chip (each thread keeps 16 B loads going)


STREAMING = ", streaming stores"     # label suffix of a plan whose output rows stream


def candidate_plans(graph: Graph, input_strides, target: Target,
                    placements: tuple[str, ...] = ("local",),
                    streams: tuple[bool, ...] = (False,)) -> list[tuple[str, Plan, int]]:
    """Every (computation, placement, streaming stores) point worth considering, each
    with its plan and the cost model's price (kernel_cost: estimated seconds),
    cheapest first. The model does not price streaming stores (whether they
    pay changes with the machine's memory load, see docs/architecture.md): a tie it
    never breaks for them."""
    roots = []
    for o in graph.outputs:
        base = o
        while base.op is Op.RESHAPE:     # a reshape of a C-contiguous result is free
            base = base.srcs[0]
        roots.append(base)
    computations = [("as written", roots)]
    for name, rewrite in REWRITES.items():
        rewritten = rewrite(roots)
        if rewritten is not None:
            computations.append((name, rewritten))
    out = []
    for name, cand in computations:
        for placement in placements:
            for stream in streams:
                plan = _plan_roots(graph, cand, input_strides, target, placement, stream)
                cost = sum(kernel_cost(ck, target) for ck in plan.kernels)
                label = name if placement == "local" else f"{name}, rows {placement}"
                label += STREAMING if stream else ""
                plan.choice = label
                out.append((label, plan, cost))
    # the space holds only what the target can launch; rows in global scratch are the
    # last resort when nothing else fits a block's shared memory
    fitting = [c for c in out if _fits_shared(c[1])]
    if not fitting and "global" not in placements:
        return candidate_plans(graph, input_strides, target, ("global",), streams)
    out = fitting or out        # none fits at all: the printer names the kernel that fails
    out.sort(key=lambda c: c[2])        # stable: "as written" wins ties
    table = [(label, cost) for label, _, cost in out]
    for _, plan, _ in out:
        plan.alternatives = table
    return out


def kernel_cost(ck: CompiledKernel, target: Target) -> float:
    """The cost model, in seconds: the bytes moved at each memory level over that
    level's bandwidth (the Target's, probed where `powerfusion probe` ran), plus a
    launch. Global memory dominates; on-chip traffic breaks its ties (a one-pass
    variance reads a group norm's rows on chip once, not twice: 38% faster here). On
    a GPU the global term is scaled up when the kernel has fewer parallel units than
    its memory needs busy (a few blocks per multiprocessor); a CPU's few cores are
    filled by any real kernel."""
    moved = footprint(ck.program)
    glob = (sum(moved["global"].values()) + KERNEL_OVERHEAD_BYTES) / target.bandwidth(Level.GLOBAL)
    if target.family == "simt":
        glob *= max(1.0, THREADS_PER_UNIT * target.cores / _threads(ck, target))
    return glob + sum(sum(moved[lv.value].values()) / target.bandwidth(lv)
                      for lv in (Level.LOCAL, Level.REGISTER))


def _threads(ck: CompiledKernel, target: Target) -> int:
    """How many GPU threads the kernel keeps busy: its parallel units times the threads
    the SIMT printer gives each (a block, or a cluster's blocks)."""
    return max(1, ck.schedule.outer_extent) * ck.program.launch.lanes


def plan_graph(graph: Graph, input_strides, target: Target, choice: str | None = None) -> Plan:
    """Partition, lower and optimise under each alternative computation; keep the one
    the cost model prices lowest, or the named `choice` (a tuner's measured winner)."""
    placements = ("local",) if choice is None or "rows" not in choice else ("local", "global")
    streams = (False, True) if choice is not None and choice.endswith(STREAMING) else (False,)
    candidates = candidate_plans(graph, input_strides, target, placements, streams)
    for label, plan, _ in candidates:
        if label == choice:
            return plan
    return candidates[0][1]


def _fits_shared(plan: Plan) -> bool:
    """Does every kernel's shared memory fit a block (its launch's fit check)? (If no
    plan fits, the first one's printer says which kernel does not.)"""
    return all(ck.program.launch is None or ck.program.launch.fits for ck in plan.kernels)


def _plan_roots(graph: Graph, roots: list[Node], input_strides, target: Target,
                placement: str = "local", stream: bool = False) -> Plan:
    out_specs = []
    canon = canonicalize(roots)
    storage: dict[int, Storage] = {}
    buffers: dict[str, Buffer] = {}
    input_names = []
    for k, (node, strides) in enumerate(zip(graph.inputs, input_strides)):
        buf = Buffer(f"in{k}", Level.GLOBAL, node.dtype, node.shape, Role.INPUT)
        storage[id(node)] = Storage(buf, tuple(strides))
        buffers[buf.name] = buf
        input_names.append(buf.name)
    # an empty result needs no kernel: its buffer is allocated, with nothing to compute
    kernels = partition([c for c in canon if c.op not in (Op.INPUT, Op.CONST, Op.IOTA)
                         and c.size > 0])
    out_index = {}
    for k, (c, o) in enumerate(zip(canon, graph.outputs)):
        if c.op is Op.INPUT:
            out_specs.append(("input", next(j for j, n in enumerate(graph.inputs) if n is c)))
        elif c.op is Op.CONST:
            out_specs.append(("const", c.arg, c.dtype))
        else:
            if id(c) not in out_index:
                out_index[id(c)] = f"out{len(out_index)}"
                buf = Buffer(out_index[id(c)], Level.GLOBAL, c.dtype, c.shape, Role.OUTPUT)
                storage[id(c)] = Storage(buf, contiguous_strides(c.shape))
                buffers[buf.name] = buf
            out_specs.append(("buffer", out_index[id(c)]))
    # intermediates that one kernel stores and a later one reads
    for kern in kernels:
        for r in kern.roots:
            if id(r) not in storage:
                buf = Buffer(f"t{len(buffers)}", Level.GLOBAL, r.dtype.compute, r.shape,
                             Role.OUTPUT)
                storage[id(r)] = Storage(buf, contiguous_strides(r.shape))
                buffers[buf.name] = buf
    compiled = []
    taken = set(buffers)                # global names in use: the plan's, earlier temps
    for n, kern in enumerate(kernels):
        simt = target.family == "simt"      # a GPU multiprocessor wants several blocks
        sched = default_schedule(kern.shape, kern.reduce_axes, target.cores, placement,
                                 by_columns=_by_columns(kern), min_columns=128 if simt else 8,
                                 units_per_core=2 * BLOCKS_PER_UNIT if simt else 2,
                                 transpose=_transpose_tile(kern, storage) if simt else (),
                                 stream=stream and not simt)
        naive = lower(kern, sched, f"pf_kernel_{n}", storage)
        log = PassLog()
        program = optimize(naive, target, sched.placement, log, sched.transpose, sched.stream)
        program = _own_temps(program, taken)
        compiled.append(CompiledKernel(kern, sched, naive, program, log))
    return Plan(graph, target, compiled, out_specs, [o.shape for o in graph.outputs], buffers,
                input_names)


def _own_temps(program: Program, taken: set[str]) -> Program:
    """A temp a kernel keeps in global memory is its own: one whose name another kernel
    (or the plan) uses too is renamed, since every runtime allocates by name and would
    hand one kernel's scratch, of another size, to the other. Adds the names to taken."""
    mapping = {}
    for b in program.params:
        if b.role is Role.TEMP:
            if b.name in taken:
                new = next(f"{b.name}_{program.name}{k or ''}" for k in range(len(taken) + 1)
                           if f"{b.name}_{program.name}{k or ''}" not in taken)
                mapping[b.name] = dataclasses.replace(b, name=new)
            taken.add(mapping[b.name].name if b.name in mapping else b.name)
    if not mapping:
        return program
    body = map_accesses(program.body, lambda a: Access(mapping[a.buffer.name], a.index)
                        if a.buffer.name in mapping else a)
    params = tuple(mapping.get(b.name, b) for b in program.params)
    return Program(program.name, params, body, program.launch)


TRANSPOSE_TILE = 32     # a warp's width: one tile row is one coalesced access


def _transpose_tile(kern: Kernel, storage: dict[int, Storage]) -> tuple[int, ...]:
    """(rows, cols) of the tile a GPU stages a layout change through, or () for none.

    An element-wise kernel over (..., R, C) whose stored input is contiguous down R (its
    stride along C is neither 0 nor 1, along R it is 1) reads strided whichever way
    the threads walk: each unit takes a tile, reads it column by column and writes it
    row by row (passes/stage.py)."""
    if kern.reduce_axes or len(kern.shape) < 2 or min(kern.shape[-2:]) < 8:
        return ()
    axes = tuple(Var(f"a{k}", n) for k, n in enumerate(kern.shape))
    index = tuple(Expr.of(v) for v in axes)
    reads = [s for n in kern.nodes for s in n.srcs]
    reads += [r for r in kern.roots if r.op in Group.MOVEMENT]
    for node in reads:
        base, at = through_views(node, reshape_index(index, kern.shape, node.shape))
        if id(base) not in storage or base.op is not Op.INPUT:
            continue
        offset = strided_offset(at, storage[id(base)].strides)
        step = [offset.substitute({v: 1}) - offset.substitute({v: 0}) for v in axes[-2:]]
        if step[0] == Expr(1) and step[1] not in (Expr(0), Expr(1)):
            return tuple(min(TRANSPOSE_TILE, n) for n in kern.shape[-2:])
    return ()


def _by_columns(kern: Kernel) -> bool:
    """Is this a single reduction over leading axes whose results nothing full-size
    reads? Then streaming the reduced axes beats striding through them."""
    reductions = [n for n in kern.nodes if n.op in Group.REDUCE]
    last = len(kern.shape) - 1
    if len(reductions) != 1 or not kern.reduce_axes or last in kern.reduce_axes:
        return False
    if math.prod(kern.shape) == math.prod(kern.shape[k] for k in kern.reduce_axes):
        return False                    # one kept element: the reduction is one row
    full = math.prod(kern.shape)
    if any(math.prod(r.shape) == full for r in kern.roots):
        return False
    red = reductions[0]
    upstream: set[int] = set()
    stack = [red]
    while stack:                       # everything the reduction reads, views included
        n = stack.pop()
        if id(n) not in upstream:
            upstream.add(id(n))
            stack.extend(n.srcs)
    return all(math.prod(n.shape) != full or id(n) in upstream for n in kern.nodes)


# -- code and execution -------------------------------------------------------------------
def generate_source(plan: Plan) -> str:
    from .codegen.c import emit_c_module

    return emit_c_module([ck.program for ck in plan.kernels])


class Executable:
    """Compiled kernels plus the plan to run them on the caller's arrays."""

    def __init__(self, plan: Plan, source: str):
        from .runtime.cpu import load_kernels

        self.plan = plan
        self.source = source
        names = [ck.program.name for ck in plan.kernels]
        self.kernels = load_kernels(source, names) if names else {}   # by program name
        self._pool = BufferPool()

    def run(self, inputs) -> list[np.ndarray]:
        def launch(program: Program, arrays: dict[str, np.ndarray]) -> None:
            self.kernels[program.name]([arrays[p.name].ctypes.data for p in program.params])

        return execute(self.plan, inputs, launch, self._pool)


class InterpretedExecutable:
    """The same plan run by the GIR interpreter: the oracle compiled code is held to.

    `stage` picks which programs run: "optimized" (what is compiled), "naive" (before
    the passes) or the name of a pass (the program right after it).
    """

    def __init__(self, plan: Plan, stage: str = "optimized"):
        self.plan, self.stage = plan, stage

    def programs(self) -> list[Program]:
        if self.stage == "optimized":
            return [ck.program for ck in self.plan.kernels]
        if self.stage == "naive":
            return [ck.naive for ck in self.plan.kernels]
        return [dict(ck.log.programs)[self.stage] for ck in self.plan.kernels]

    def run(self, inputs) -> list[np.ndarray]:
        from .gir.interpreter import as_storage, run

        chosen = {ck.program.name: p for ck, p in zip(self.plan.kernels, self.programs())}

        def launch(program: Program, arrays: dict[str, np.ndarray]) -> None:
            program = chosen[program.name]
            run(program, {p.name: as_storage(arrays[p.name]) for p in program.params
                          if p.name in arrays})

        return execute(self.plan, inputs, launch)


class BufferPool:
    """Reuses output and scratch arrays the caller no longer holds.

    A fresh large array costs a page fault per 4 KB on first touch, often more than the
    kernel itself; an array only this pool references can be written again.
    """

    # arrays kept per buffer: one the caller holds, one to reuse. Python 3.14 stopped
    # counting some references (borrowed stack references), so the test below could
    # hand out an array still in use: there, nothing is reused.
    KEEP = 2 if sys.version_info < (3, 14) else 0

    def __init__(self):
        self.arrays: dict[str, list[np.ndarray]] = {}
        # the reference count test and the hand-over are one step: two threads calling
        # one function must never be handed the same array
        self._lock = threading.Lock()

    def get(self, name: str, shape, dtype) -> np.ndarray:
        with self._lock:
            kept = self.arrays.setdefault(name, [])
            for array in kept:
                # referenced by the list, by `array` and by getrefcount's argument
                if sys.getrefcount(array) <= 3 and array.shape == tuple(shape) \
                        and array.dtype == dtype:
                    return array
            array = np.empty(shape, dtype)
            if len(kept) < self.KEEP:
                kept.append(array)
            return array


@dataclass(frozen=True)
class LaunchSequence:
    """What running a plan takes, computed once per plan: the global buffers it allocates
    (outputs and temps that stayed in global memory: name, shape, dtype) and its kernels
    in order, each with the names of the buffers its parameters point to."""

    allocations: tuple[tuple[str, tuple[int, ...], DType], ...]
    launches: tuple[tuple[Program, tuple[str, ...]], ...]

    @staticmethod
    def of(plan: Plan) -> "LaunchSequence":
        allocations = {name: (name, buf.shape, buf.dtype) for name, buf in plan.buffers.items()
                       if buf.role is not Role.INPUT}
        for ck in plan.kernels:
            for p in ck.program.params:
                if p.name not in allocations and p.name not in plan.input_names:
                    allocations[p.name] = (p.name, p.shape, p.dtype)
        launches = tuple((ck.program, tuple(p.name for p in ck.program.params))
                         for ck in plan.kernels)
        return LaunchSequence(tuple(allocations.values()), launches)


def execute(plan: Plan, inputs, launch, pool: BufferPool | None = None) -> list[np.ndarray]:
    """Run a plan's kernels in order: allocate what they write, launch, collect outputs."""
    get = pool.get if pool is not None else (lambda _n, shape, dtype: np.empty(shape, dtype))
    arrays: dict[str, np.ndarray] = dict(zip(plan.input_names, inputs))
    sequence = plan.sequence
    for name, shape, dtype in sequence.allocations:
        arrays[name] = get(name, shape, storage_dtype(dtype))
    for program, _ in sequence.launches:
        launch(program, arrays)
    outs = []
    for spec, shape in zip(plan.outputs, plan.out_shapes):
        if spec[0] == "buffer":
            outs.append(arrays[spec[1]].reshape(shape))
        elif spec[0] == "input":
            outs.append(np.array(inputs[spec[1]]).reshape(shape))
        else:
            outs.append(np.full(shape, spec[1], storage_dtype(spec[2])))
    return _unalias(outs)


def _unalias(outs: list[np.ndarray]) -> list[np.ndarray]:
    """The same value returned twice comes back as two arrays, as numpy would give."""
    seen: set[int] = set()
    result = []
    for a in outs:
        base = id(a.base if a.base is not None else a)
        result.append(a.copy() if base in seen else a)
        seen.add(base)
    return result


def compile_graph(graph: Graph, *, input_strides, target: str = "cpu", tune_with=None):
    """An executable for the target: C + OpenMP on the CPU, or a SIMT dialect.

    A winner recorded in the tuning database (per device description) is used;
    `tune_with` (the caller's input arrays or CUDA tensors) measures the candidates
    first when there is none.
    """
    from .search import tuning_db
    from .search.tuner import printed

    plan = plan_graph(graph, input_strides, get_target(target))
    code = printed(plan, target)
    entry = tuning_db.lookup(plan.target.name, tuning_db.key_of(code.source))
    if entry is None and tune_with is not None:
        from .search.tuner import tune

        entry = {"choice": tune(graph, input_strides, plan.target, tune_with,
                                dialect=target).choice}
    if entry is not None and entry.get("choice") != plan.choice:
        plan = plan_graph(graph, input_strides, plan.target, entry["choice"])
        code = printed(plan, target)
    if target == "cpu":
        return Executable(plan, code.source)
    from .runtime.simt_executable import compile_plan_simt

    return compile_plan_simt(plan, target, code)


def explain_graph(graph: Graph, *, input_strides, target: str = "cpu"):
    """The report of what compile_graph would build; needs no device."""
    from .report import Report

    plan = plan_graph(graph, input_strides, get_target(target))
    seconds = [kernel_cost(ck, plan.target) for ck in plan.kernels]
    if target == "cpu":
        return Report.from_plan(plan, generate_source(plan), input_strides, seconds=seconds)
    from .runtime.simt_executable import simt_module

    module = simt_module(plan, target)
    return Report.from_plan(plan, module.source, input_strides, module.kernels, seconds)
