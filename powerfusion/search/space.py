"""The search space: every candidate a graph can be planned under, each planned and
priced by the cost model, and the plan of one candidate.

A plan is the graph partitioned into kernels, each lowered to GIR under its schedule
and optimised by the passes (compile_graph then prints and loads it).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from ..gir.expr import Expr, Var
from ..gir.ir import Access, Buffer, CpuLaunch, Level, Program, Role, map_accesses
from ..gir.lower import Storage, lower
from ..graph.alternatives import REWRITES
from ..graph.canonical import canonicalize, stores_broadcasts
from ..graph.graph import Graph, Node
from ..graph.memory_order import reduce_in_memory_order
from ..graph.ops import Group, Op
from ..graph.partition import Kernel, partition, reshape_index
from ..graph.views import contiguous_strides, strided_offset, through_views
from ..passes.interleave import interleave_rows
from ..passes.pipeline import PassLog, checked, optimize
from ..passes.util import cores_loop
from ..targets import Target
from .compute import compute_seconds
from .cost import BLOCKS_PER_UNIT, fits_shared, global_seconds, kernel_cost
from .plan import Candidate, CompiledKernel, Plan
from .schedule import default_schedule


def knob_values(target: Target) -> dict[str, tuple]:
    """Every value of each schedule knob the target's code can take, its default first:
    element-wise work a broadcast reads recomputed per copy instead of stored once
    (only where canonical form would store some), streaming stores, the element-wise
    tile, threads per parallel loop, dynamic pieces per thread, the preferred vector
    width (narrower than the Target's: on some cores two half-width instructions issue
    where one full one does). A GPU's launch is planned by passes/simt/launch.py, so
    it offers the defaults of the launch knobs only."""
    if target.family != "cpu":
        return {"streaming": (False,), "tile": (1.0,), "threads": (0,), "dynamic": (0,),
                "vector_bits": (0,), "recompute": (False, True), "interleave": (None,)}
    widths = (128, 256) if 8 * target.simd_bytes > 256 else (128,)
    return {"recompute": (False, True), "streaming": (False, True), "tile": (1.0, 0.25, 4.0),
            "threads": (0, *sorted({max(1, target.cores // 2), 1} - {target.cores})),
            "dynamic": (0, 4), "vector_bits": (0, *[w for w in widths
                                                    if w < 8 * target.simd_bytes]),
            "interleave": (None, True, False)}


def candidate_plans(graph: Graph, input_strides, target: Target,
                    placements: tuple[str, ...] = ("local",),
                    streams: tuple[bool, ...] = (False,), knobs: dict | None = None
                    ) -> list[tuple[Candidate, Plan, float]]:
    """Every point of the space worth considering, each with its plan and the cost
    model's price (kernel_cost: estimated seconds), cheapest first: computations x
    placements x streaming stores x the schedule knobs (`knobs`, as knob_values gives
    them; None: each at its default). A tile that changes no kernel's schedule is no
    new point. The model does not price streaming stores, the vector width or dynamic
    pieces (whether they pay changes with the machine: the tuner's learned correction,
    search/learned.py, says): ties it never breaks for them; nor the arithmetic that
    recomputing under broadcasts repeats (it prices the bytes saved): a default plan
    never recomputes where canonical form stores, the tuner measures both."""
    knobs = {**{name: values[:1] for name, values in knob_values(target).items()},
             **(knobs or {})}
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
        # recomputing under broadcasts is a point only where canonical form stores some
        # (elsewhere a choice that asks for it - a tuning database's - plans as stored)
        recomputes = [r for r in knobs["recompute"]
                      if not r or stores_broadcasts(canonicalize(cand))] or [False]
        for recompute, placement, stream in itertools.product(recomputes, placements,
                                                               streams):
            schedules = set()
            for tile, interleave in itertools.product(knobs["tile"], knobs["interleave"]):
                plan = _plan_roots(graph, cand, input_strides, target, placement, stream,
                                   tile, recompute, interleave)
                seen = tuple((ck.schedule, ck.interleaved) for ck in plan.kernels)
                if seen in schedules:
                    continue
                schedules.add(seen)
                base = Candidate(name, placement, stream, tile, recompute=recompute,
                                 interleave=interleave)
                out += [(c, p, sum(kernel_cost(ck, target) for ck in p.kernels))
                        for c, p in _launches(plan, base, knobs, target)]
    # the space holds only what the target can launch; rows in global scratch are the
    # last resort when nothing else fits a block's shared memory
    fitting = [c for c in out if fits_shared(c[1])]
    if not fitting and "global" not in placements:
        return candidate_plans(graph, input_strides, target, ("global",), streams, knobs)
    out = fitting or out        # none fits at all: the printer names the kernel that fails
    out.sort(key=lambda c: c[2])        # stable: "as written" and default knobs win ties
    table = [(choice, cost) for choice, _, cost in out]
    for _, plan, _ in out:
        plan.alternatives = table
    return out


def _launches(plan: Plan, base: Candidate, knobs: dict, target: Target):
    """(Candidate, Plan) per threads x dynamic pieces x vector width: the same programs,
    each with its parallel loop's launch (CpuLaunch) set; the first is the plan itself."""
    for threads in knobs["threads"]:
        for dynamic in knobs["dynamic"]:
            for bits in knobs["vector_bits"]:
                choice = dataclasses.replace(base, threads=threads, dynamic=dynamic,
                                             vector_bits=bits)
                if choice == base:
                    plan.choice = choice
                    yield choice, plan
                    continue
                kernels = []
                for ck in plan.kernels:
                    # a thread's share of the parallel loop (as the passes left it: rows
                    # interleaved take several per iteration) cut in `dynamic` pieces
                    loop = cores_loop(ck.program)
                    extent = loop.var.extent if loop else ck.schedule.outer_extent
                    share = extent // (threads or target.cores)
                    chunk = max(1, share // dynamic) if dynamic else 0
                    program = dataclasses.replace(ck.program, cpu=CpuLaunch(threads, chunk, bits))
                    kernels.append(dataclasses.replace(ck, program=program))
                yield choice, dataclasses.replace(plan, kernels=kernels, choice=choice)


def plan_graph(graph: Graph, input_strides, target: Target,
               choice: Candidate | None = None) -> Plan:
    """Partition, lower and optimise under each alternative computation; keep the one
    the cost model prices lowest, or the given `choice` (a tuner's measured winner)."""
    placements = ("local",) if choice is None or choice.placement == "local" \
        else ("local", "global")
    streams = (False, True) if choice is not None and choice.streaming else (False,)
    knobs = None if choice is None else {
        "tile": (choice.tile,), "threads": (choice.threads,), "dynamic": (choice.dynamic,),
        "vector_bits": (choice.vector_bits,), "recompute": (choice.recompute,),
        "interleave": (choice.interleave,)}
    candidates = candidate_plans(graph, input_strides, target, placements, streams, knobs)
    # a recorded choice to recompute under broadcasts, where the graph stores none, is
    # the same point stored: its other knobs stand
    wanted = [choice, dataclasses.replace(choice, recompute=False)] if choice else []
    for want in wanted:
        for candidate, plan, _ in candidates:
            if candidate == want:
                return plan
    return candidates[0][1]


def _plan_roots(graph: Graph, roots: list[Node], input_strides, target: Target,
                placement: str = "local", stream: bool = False, tile: float = 1.0,
                recompute: bool = False, interleave: bool | None = None) -> Plan:
    out_specs = []
    canon = canonicalize(reduce_in_memory_order(roots, {
        id(node): tuple(strides) for node, strides in zip(graph.inputs, input_strides)}),
        store_broadcasts=not recompute)
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
                                 column_tiles=_column_reductions(kern),
                                 min_columns=128 if simt else 8,
                                 units_per_core=2 * BLOCKS_PER_UNIT if simt else 2,
                                 transpose=_transpose_tile(kern, storage),
                                 stream=stream and not simt, tile_scale=tile)
        naive = lower(kern, sched, f"pf_kernel_{n}", storage)
        log = PassLog()
        program = optimize(naive, target, sched.placement, log, sched.transpose, sched.stream)
        if target.family == "cpu" and (_arithmetic_bound(program, target, log.steps[-1][1])
                                       if interleave is None else interleave):
            rows = interleave_rows(program, target)
            if rows is not program:
                program = log.record("interleave", checked(rows, "interleave"))
        program = _own_temps(program, taken)
        compiled.append(CompiledKernel(kern, sched, naive, program, log))
    return Plan(graph, target, compiled, out_specs, [o.shape for o in graph.outputs], buffers,
                input_names)


# arithmetic over memory time past which a CPU kernel's short rows are interleaved
ARITHMETIC_BOUND = 1.5


def _arithmetic_bound(program: Program, target: Target, moved: dict) -> bool:
    """Whether the cost model prices the kernel's arithmetic well above its memory
    traffic: then the core, not memory, sets its pace, and rows interleaved
    (passes/interleave.py) hide its reductions' latency. A kernel near the memory
    roofline loses by it: its loads come in bursts a row group long instead of spread
    over the arithmetic (float32 softmax and layernorm slower, bfloat16 softmax, half
    the bytes for the same arithmetic, faster: benchmarks/results/interleave-*.md).
    (moved: the program's traffic per level, as the pass log recorded it.)"""
    return compute_seconds(program, target) > \
        ARITHMETIC_BOUND * global_seconds(program, target, moved)


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
    return dataclasses.replace(program, params=params, body=body)


TRANSPOSE_TILE = 32     # a warp's width: one tile row is one coalesced access


def _transpose_tile(kern: Kernel, storage: dict[int, Storage]) -> tuple[int, ...]:
    """(rows, cols) of the tile a layout change is staged through (shared memory on a
    GPU, a per-thread LOCAL buffer on the CPU), or () for none.

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


def _column_reductions(kern: Kernel) -> int:
    """How many reductions over leading axes this kernel streams by columns, or 0 when
    it is planned by rows. By columns when every reduction keeps the innermost axis
    (walking a row of the reduced axes would stride through memory) and nothing
    full-size, nor another reduction, reads a reduction's result: the rows are
    streamed once, the full-size values (a backward's input gradient beside its bias
    gradient) computed and stored on the way, the reductions finished after them."""
    reductions = [n for n in kern.nodes if n.op in Group.REDUCE]
    last = len(kern.shape) - 1
    if not reductions or not kern.reduce_axes or last in kern.reduce_axes:
        return 0
    kept = math.prod(kern.shape) // math.prod(kern.shape[k] for k in kern.reduce_axes)
    if kept == 1 or any(math.prod(n.shape) != kept for n in reductions):
        return 0                        # one kept element: the reduction is one row
    full = math.prod(kern.shape)
    if any(math.prod(r.shape) == full and (r.op in Group.MOVEMENT or r.op in Group.LEAF)
           for r in kern.roots):
        return 0                        # a plain copy is lowered by rows
    own = {id(n) for n in kern.nodes}
    after: dict[int, bool] = {}

    def reads_a_reduction(n: Node) -> bool:
        """Does n read one of the kernel's reductions, directly or through others?"""
        if id(n) not in after:
            after[id(n)] = False
            after[id(n)] = any(
                (id(s) in own and s.op in Group.REDUCE)
                or ((id(s) in own or s.op in Group.MOVEMENT) and reads_a_reduction(s))
                for s in n.srcs)
        return after[id(n)]

    if any(reads_a_reduction(n) for n in kern.nodes
           if n.op in Group.REDUCE or math.prod(n.shape) == full):
        return 0                        # a second pass over the rows
    return len(reductions)
