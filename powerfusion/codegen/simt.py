"""SIMT printer: GIR programs as one CUDA, HIP or OpenCL C translation unit.

The mapping keeps the interpreter's meaning (loops run in order) on a grid of blocks:

- the CORES loop -> blocks, grid-stride: `for (p = block; p < P; p += blocks)`;
- a SIMD loop in its body -> the block's threads, in chunks of C consecutive elements
  (one 128-bit access of the narrowest buffer): thread t takes i in [tC, tC + C), then
  [(t + BLOCK)C, ...), and so on. Chunk-aligned loads and stores move as vectors; the
  elements of a chunk are computed one by one (unrolled).
  An accumulator it updates becomes a per-thread partial, combined after the loop by a
  block reduction (warp shuffles and a shared scratch; a local-memory tree on OpenCL)
  whose result every thread holds;
- row-level statements (outside SIMD loops) run in every thread on uniform values; a
  store to memory there is made by thread 0;
- LOCAL buffers -> one shared (`__local`) array per block, except rows each thread
  reads back only itself: its part lives in registers, the part of a long row beyond
  12 elements in its own slots of shared memory;
- a barrier goes between two statements when one writes memory that the other touches
  through another thread. Every SIMD loop of a kernel maps iteration i to thread
  (i / C) % BLOCK, so the same index expression in two loops of one extent is the same
  thread: no barrier.

The threads that share a row (its lanes) are usually the block. The launch
(passes/simt/launch.py, recorded in the program) may instead give a short row one warp, several rows per block (rows p over pf_g * R +
warp, reductions by shuffles), or a long row a thread block cluster (CUDA sm_90: rows
over cluster indices, lanes spanning the blocks, reductions finished through
distributed shared memory).

Dialects are thin subclasses (qualifiers, index builtins, barrier, shuffle, type and
math names). The op table, constants and index expressions are the C printer's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


from ..dtypes import DType
from ..errors import UnsupportedError
from ..gir.expr import Var
from ..gir.ir import (Access, Barrier, Buffer, Collective, Compute, Const, IndexValue, Level,
                      Loop, Move, Parallel, Program, Role, accesses, collectives_after, walk)
from ..graph.ops import ACCUMULATES, Op, accumulate_identity
from .c import (_F64_TO_F32_ODD, CPrinter, _exact_16bit, _plan_registers,
                arithmetic_helpers)
from .math_header import simt_header
from ..passes.simt.launch import VECTOR_BYTES
from .simt_vectors import vector_accesses

REDUCE_SCRATCH = 32         # 8-byte slots of the reduction scratch (one per warp)


@dataclass(frozen=True)
class KernelLaunch:
    """How the runtime launches one kernel of a module."""

    name: str
    params: tuple[Buffer, ...]  # kernel arguments in order (OpenCL: inputs add an offset)
    block: int                  # threads per block, compiled into the source
    blocks: int                 # most blocks with work: the CORES extent, or 1 (serial)
    shared_bytes: int           # dynamic shared memory per block (CUDA/HIP)
    local_bytes: int = 0        # every LOCAL array of a block (OpenCL declares them static)
    cluster: int = 1            # blocks per thread block cluster (compiled into the source)
    rows: int = 1               # parallel units (rows) per block, a warp each

    def describe(self) -> str:
        """How the kernel maps onto the device, for explain."""
        unit = (f"a row spread over a cluster of {self.cluster}" if self.cluster > 1
                else f"{self.rows} rows per block, a warp each" if self.rows > 1
                else "one parallel unit per block")
        return (f"{self.blocks} blocks of {self.block} threads ({unit}), "
                f"{self.local_bytes:,} B of shared memory per block")

    def grid(self, units: int) -> int:
        """Blocks to launch on a device of `units` SMs / compute units: one full wave,
        a whole number of clusters."""
        grid = max(1, min(self.blocks, units * max(1, 2048 // self.block)))
        return max(self.cluster, grid // self.cluster * self.cluster)


@dataclass(frozen=True)
class SimtModule:
    """One translation unit and the launch of each kernel in it."""

    dialect: str
    source: str
    kernels: tuple[KernelLaunch, ...]

    def kernel(self, name: str) -> KernelLaunch:
        return next(k for k in self.kernels if k.name == name)


def emit_simt(programs, dialect: str) -> str:
    """The source of one translation unit, one kernel per program; deterministic."""
    return build_simt(programs, dialect).source


def build_simt(programs, dialect: str) -> SimtModule:
    """The source plus each kernel's launch configuration (what the runtimes need). Every
    program carries its launch (passes/simt/launch.py): the printer follows it."""
    if dialect not in DIALECTS:
        raise UnsupportedError(f"SIMT dialect {dialect!r}: choose one of {sorted(DIALECTS)}")
    cls = DIALECTS[dialect]
    texts, launches, helpers = [], [], set()
    for program in programs:
        printer = cls()
        texts.append(printer.kernel(program))
        launches.append(printer.launch)
        helpers |= printer.helpers
    body = "\n".join(texts)
    parts = [cls.prelude(uses_double="double" in body)]

    def used(scope: str) -> list[tuple[Op, DType]]:
        return sorted({(op, dtype) for sc, op, dtype in helpers if sc == scope},
                      key=lambda h: (h[0].name, h[1].value[0]))

    parts += [cls.reduce_helper(op, dtype) for op, dtype in used("block")]
    parts += [cls.lanes_reduce_helper(op, dtype) for op, dtype in used("lanes")]
    if used("cluster"):
        parts.append(cls.cluster_primitives)
        parts += [cls.cluster_reduce_helper(op, dtype) for op, dtype in used("cluster")]
    return SimtModule(dialect, "\n".join(parts + [body]), tuple(launches))


class SimtPrinter(CPrinter):
    """GIR -> a SIMT kernel. Subclasses set the dialect's vocabulary."""

    cluster_attribute: str | None = None       # thread block clusters (CUDA sm_90 only)

    dialect = "simt"
    warp = 32               # the warp the dialect's code assumes (PF_WARP, lanes reductions)
    kernel_head = 'extern "C" __global__ void __launch_bounds__({block})'
    helper_qualifier = "__device__ __forceinline__"   # not static: no unused warnings
    scratch_fn = "PF_FN"                        # qualifier of helpers given __local scratch
    pointer_space = ""                          # address space of kernel pointers
    restrict = "__restrict__"
    thread_index = "(int)threadIdx.x"
    block_index = "blockIdx.x"
    block_count = "gridDim.x"
    barrier = "__syncthreads();"
    bitcasts = ("__uint_as_float", "__float_as_uint")
    float_math = {"exp": "expf", "log": "logf", "tanh": "tanhf", "erf": "erff",
                  "sin": "sinf", "cos": "cosf", "rsqrt": "rsqrtf", "tan": "tanf",
                  "log1p": "log1pf", "expm1": "expm1f", "log2": "log2f", "log10": "log10f",
                  "exp2": "exp2f"}
    math_names: dict[str, str] = {}             # renames applied to the C op table
    # x * y + z rounds twice, as numpy's does: the _rn intrinsics are never contracted
    # into a fused multiply-add (NVRTC's default --fmad=true would)
    rounded_ops = {(op, fam): f"__{kind}{name}_rn({{0}}, {{1}})"
                   for op, name in ((Op.ADD, "add"), (Op.SUB, "sub"), (Op.MUL, "mul"))
                   for fam, kind in (("f32", "f"), ("f64", "d"))}
    header = ""
    int64_suffix = "LL"
    storage_types = {DType.float32: "float", DType.float64: "double",
                     DType.float16: "unsigned short", DType.bfloat16: "unsigned short",
                     DType.int32: "int", DType.int64: "long long", DType.bool: "unsigned char"}
    compute_types = {DType.float32: "float", DType.float64: "double", DType.int32: "int",
                     DType.int64: "long long", DType.bool: "int"}
    unsigned_types = {DType.int32: "unsigned int", DType.int64: "unsigned long long"}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        renames = cls.math_names
        ops = CPrinter.ops
        if renames:
            pattern = re.compile(r"\b(" + "|".join(map(re.escape, renames)) + r")\(")
            ops = {k: pattern.sub(lambda m: renames[m.group(1)] + "(", t)
                   for k, t in ops.items()}
        cls.ops = {**ops, **cls.rounded_ops}

    def __init__(self):
        super().__init__()
        # reductions used: (scope, op, dtype), scope "block", "cluster" or "lanes"
        self.helpers: set[tuple[str, Op, DType]] = set()
        self.cluster = 1                          # blocks sharing a row (a cluster)
        self.rows = 1                             # rows sharing a block (a warp each)
        self.lanes = 1                            # threads sharing a row
        self.thread_loop_var: Var | None = None  # the SIMD loop spread over threads
        self.in_cores = False
        self.constants: dict[str, object] = {}    # registers last set to a constant
        self.chunk = 1                            # elements per thread and chunk
        self.private: dict[str, int] = {}         # LOCAL rows held per thread: elements
        self.in_regs: dict[str, int] = {}         # of them in registers (the rest: shared)
        self.rest: dict[str, Buffer] = {}         # private row -> its slots in shared memory
        self.part: tuple[int, int] | None = None  # the chunks (pf_k) being printed
        self.slots: dict[tuple[str, object], str] = {}  # vector access -> its array

    # -- the module's shared text -----------------------------------------------------
    @classmethod
    def prelude(cls, uses_double: bool) -> str:
        i64 = cls.compute_types[DType.int64]
        lines = [f"// generated by PowerFusion ({cls.dialect})", cls.header.rstrip("\n"),
                 f"#define PF_FN {cls.helper_qualifier}",
                 f"#define PF_AS_FLOAT(u) {cls.bitcasts[0]}(u)",
                 f"#define PF_AS_UINT(f) {cls.bitcasts[1]}(f)",
                 "#ifndef INFINITY", "#define INFINITY PF_AS_FLOAT(0x7f800000u)", "#endif",
                 "#ifndef NAN", "#define NAN PF_AS_FLOAT(0x7fc00000u)", "#endif",
                 "#ifndef INT32_MIN", "#define INT32_MIN (-2147483647 - 1)", "#endif",
                 "#ifndef INT64_C", f"#define INT64_C(c) (({i64})c##{cls.int64_suffix})", "#endif",
                 "#ifndef INT64_MIN", "#define INT64_MIN (INT64_C(-9223372036854775807) - 1)",
                 "#endif", ""]
        if uses_double:
            lines += cls.double_header()
            lines.append(_F64_TO_F32_ODD.format(fn="PF_FN", as_uint="PF_AS_UINT",
                                                as_float="PF_AS_FLOAT", uint="unsigned int"))
        lines.append(f"PF_FN {i64} pf_clampi({i64} x, {i64} lo, {i64} hi) "
                     "{ return x < lo ? lo : (x > hi ? hi : x); }")
        lines += [f"#define PF_{name.upper()}F {fn}" for name, fn in cls.float_math.items()]
        names = {d: tuple(cls.math_names.get(f, f) for f in fs) for d, fs in
                 ((DType.float32, ("fmodf", "copysignf")), (DType.float64, ("fmod", "copysign")))}
        lines.append(arithmetic_helpers("PF_FN", cls.compute_types, cls.unsigned_types, names,
                                        doubles=uses_double))
        return "\n".join(lines) + "\n" + simt_header()

    @classmethod
    def double_header(cls) -> list[str]:
        return []

    @classmethod
    def reduce_helper(cls, op: Op, dtype: DType) -> str:
        """`T pf_block_<op>_<T>(T v, scratch)`: combine v over the block, result in all."""
        t = cls.compute_types[dtype]
        combine = cls.template(op, dtype)
        head = f"{cls.scratch_fn} {t} {cls.helper_name(op, dtype)}({t} v, {cls.scratch_param()})"
        return "\n".join([head + " {"] + cls.reduce_body(t, combine) + ["}", ""])

    @classmethod
    def helper_name(cls, op: Op, dtype: DType) -> str:
        return f"pf_block_{op.name.lower()}_{dtype.value[0]}"

    @classmethod
    def scratch_param(cls) -> str:
        return "long long *scratch"

    @classmethod
    def reduce_body(cls, t: str, combine: str) -> list[str]:
        warp, lane = "PF_WARP", f"{cls.thread_index}"
        return [
            f"    {t} *s = ({t} *)scratch;",
            f"    for (int o = {warp} / 2; o > 0; o >>= 1) {{",
            f"        {t} w = {cls.shuffle('v', 'o')};",
            f"        v = {combine.format('v', 'w')};",
            "    }",
            f"    {cls.barrier}",
            f"    if ({lane} % {warp} == 0) s[{lane} / {warp}] = v;",
            f"    {cls.barrier}",
            "    v = s[0];",
            f"    for (int k = 1; k < (int)blockDim.x / {warp}; ++k) v = "
            f"{combine.format('v', 's[k]')};",
            "    return v;"]

    @classmethod
    def shuffle(cls, value: str, mask: str) -> str:
        return f"__shfl_xor_sync(0xffffffffu, {value}, {mask})"

    @classmethod
    def lanes_reduce_helper(cls, op: Op, dtype: DType) -> str:
        """`T pf_lanes_<op>_<T>(T v, scratch)`: combine v over the warp that holds one
        row (several rows per block): shuffles only, no barrier; all lanes get it."""
        t = cls.compute_types[dtype]
        combine = cls.template(op, dtype)
        name = cls.helper_name(op, dtype).replace("pf_block_", "pf_lanes_")
        return "\n".join([
            f"PF_FN {t} {name}({t} v, {cls.scratch_param()}) {{",
            "    (void)scratch;",
            "    for (int o = PF_WARP / 2; o > 0; o >>= 1) {",
            f"        {t} w = {cls.shuffle('v', 'o')};",
            f"        v = {combine.format('v', 'w')};",
            "    }",
            "    return v;",
            "}", ""])

    # -- one kernel -----------------------------------------------------------------
    def kernel(self, program: Program) -> str:
        """The kernel's text; sets self.launch."""
        if not re.fullmatch(r"[A-Za-z_]\w*", program.name):
            raise UnsupportedError(f"kernel name {program.name!r} is not an identifier")
        self.taken.add(program.name)
        self.params = {b.name: b for b in program.params}
        for b in program.params:
            if b.level is not Level.GLOBAL:
                raise UnsupportedError(f"parameter {b.name} is at level {b.level.value}")
        launch = program.launch
        if launch is None:
            raise UnsupportedError(f"SIMT codegen: kernel {program.name} has no launch; the "
                                   "SIMT passes decide it (passes/simt/launch.py)")
        if launch.cluster > 1 and self.cluster_attribute is None:
            raise UnsupportedError(f"SIMT dialect {self.dialect!r} has no thread block "
                                   f"clusters (kernel {program.name} is planned for one)")
        if launch.rows > 1 and launch.lanes != self.warp:
            raise UnsupportedError(f"SIMT codegen: kernel {program.name} is planned for "
                                   f"rows of {launch.lanes} lanes; {self.dialect}'s warp is "
                                   f"{self.warp} (plan it for the dialect's Target)")
        self.index_type = self.compute_types[DType.int32 if launch.index_bits == 32
                                             else DType.int64]
        self.chunk, self.block_size, self.cluster = launch.chunk, launch.block, launch.cluster
        self.rows, self.lanes = launch.rows, launch.lanes
        if self.cluster > 1:            # rows p run on clusters; a thread's lane spans them
            self.block_index, self.block_count = "pf_cluster_id()", "pf_cluster_count()"
            self.barrier = "pf_cluster_sync();"
        self.collectives = collectives_after(program.body)
        self.saved: dict[str, str] = {}     # accumulator -> its value from before the loop
        self.private = {r.name: r.per_thread for r in launch.private}
        self.in_regs = {r.name: r.in_registers for r in launch.private}
        self.rest = {r.name: r.rest for r in launch.private if r.rest is not None}
        shared = launch.shared_bytes
        self.predeclare, self.inline = _plan_registers(program.body)
        self.exact16 = _exact_16bit(program.body, tuple(self.store_16))
        self.block(program.body, ())
        body, self.lines = self.lines, []
        prologue = [f"    const int pf_tid = {self.thread_index};"]
        if self.cluster > 1:
            prologue = [f"    const int pf_lane = {self.thread_index};   // in this block",
                        f"    const int pf_tid = pf_lane + pf_cluster_rank() * "
                        f"{self.block_size};   // in the cluster"]
        if self.rows > 1:
            prologue = [f"    const int pf_lane = {self.thread_index};   // in this block",
                        f"    const int pf_tid = pf_lane % {self.lanes};   // in its row",
                        f"    const int pf_seg = pf_lane / {self.lanes};   // its row of the "
                        f"block's {self.rows}"]
        prologue += self.declare_locals([b for b, _ in launch.shared],
                                        {b.name: at for b, at in launch.shared})
        prologue += [f"    {self.compute_types[r.buffer.dtype.compute]} "
                     f"{self.ident('buf', r.name)}[{r.in_registers}];   // this thread's "
                     "part of the row" + (f" (the rest in {self.ident('buf', r.rest.name)})"
                                          if r.rest is not None else "")
                     for r in launch.private]
        if self.helpers:
            prologue.append("    " + self.scratch_decl())
        if launch.serial:
            prologue.insert(0, f"    // one block runs every p: {launch.serial}")
        self.launch = KernelLaunch(program.name, program.params, self.block_size,
                                   launch.blocks, self.dynamic_shared(shared), shared,
                                   self.cluster, self.rows)
        head = self.kernel_head.format(block=self.block_size)
        if self.cluster > 1:
            head = head.replace("__launch_bounds__", self.cluster_attribute.format(
                cluster=self.cluster) + " __launch_bounds__")
        sig = f"{head} {program.name}({', '.join(self.kernel_params(program))}) {{"
        return "\n".join([sig] + self.param_prologue(program) + prologue + body + ["}", ""])

    def kernel_params(self, program: Program) -> list[str]:
        out = []
        for b in program.params:
            const = "const " if b.role is Role.INPUT else ""
            out.append(f"{self.pointer_space}{const}{self.storage_types[b.dtype]} "
                       f"*{self.restrict} {self.ident('buf', b.name)}")
        return out

    def param_prologue(self, program: Program) -> list[str]:
        return []

    def declare_locals(self, locals_: list[Buffer], offsets: dict[str, int]) -> list[str]:
        if not locals_:
            return []
        out = ["    extern __shared__ __align__(16) unsigned char pf_smem[];"]
        for b in locals_:
            t = self.compute_types[b.dtype.compute]
            out.append(f"    {t} *{self.restrict} {self.ident('buf', b.name)} = "
                       f"({t} *)(pf_smem + {offsets[b.name]});")
        return out

    def dynamic_shared(self, nbytes: int) -> int:
        return nbytes

    def scratch_decl(self) -> str:       # a cluster's blocks trade their results in a last slot
        return f"__shared__ long long pf_red[{REDUCE_SCRATCH + (self.cluster > 1)}];"

    # -- statements -------------------------------------------------------------------
    def loop(self, loop: Loop, path: tuple[int, ...]) -> None:
        var, n, idx = self.ident("var", loop.var.name), loop.var.extent, self.index_type
        if self.thread_loop_var is not None:        # inside a thread: plain, per thread
            self.body(loop, path, f"for ({idx} {var} = 0; {var} < {n}; ++{var}) {{")
            return
        if loop.kind is Parallel.SIMD:
            self.thread_loop(loop, path)
            return
        if loop.kind is Parallel.CORES and not self.in_cores:
            header = (f"for ({idx} {var} = {self.block_index}; {var} < {n}; "
                      f"{var} += {self.block_count}) {{")
            if self.rows > 1:               # each warp its row of the block's group of rows
                header = (f"for ({idx} pf_g = {self.block_index}; pf_g < {n // self.rows}; "
                          f"pf_g += {self.block_count}) {{\n" + "    " * (self.depth + 1)
                          + f"const {idx} {var} = pf_g * {self.rows} + pf_seg;")
            self.in_cores = True
            self.repeated_body(loop, path, header)
            self.in_cores = False
            return
        # rows streamed through thread loops: unrolled, the loads of the next rows go out
        # before the adds of this one wait for theirs
        streams = all(isinstance(s, Loop) and s.kind is Parallel.SIMD for s in loop.body
                      if not isinstance(s, Barrier))
        self.repeated_body(loop, path, f"for ({idx} {var} = 0; {var} < {n}; ++{var}) {{",
                           "#pragma unroll 4" if streams else None)

    def repeated_body(self, loop: Loop, path, header: str, pragma: str | None = None) -> None:
        """A loop every thread runs in step (its barriers are statements of the body)."""
        if pragma:
            self.emit(pragma)
        self.emit(header)
        self.depth += 1
        self.block(loop.body, path)
        self.depth -= 1
        self.emit("}")

    def thread_loop(self, loop: Loop, path) -> None:
        var, n, idx = self.ident("var", loop.var.name), loop.var.extent, self.index_type
        collectives = self.collectives.get(id(loop), ())
        combined = [(c.dst.buffer.name, c.op) for c in collectives]
        if [(reg.name, op) for reg, op in self.accumulators(loop)] != combined:
            raise UnsupportedError(
                f"SIMT codegen: SIMD loop {loop.var.name}'s accumulators are not what the "
                f"collectives after it combine ({combined}); the collectives pass places them")
        for c in collectives:               # partials start from the identity
            reg = c.dst.buffer
            name = self.ident("buf", reg.name)
            identity = _IDENTITY[c.op](reg.dtype)
            if self.constants.get(reg.name, None) != identity.value:
                self.saved[reg.name] = self.ident("init", reg.name)
                self.emit(f"{self.compute_types[reg.dtype.compute]} {self.saved[reg.name]} = "
                          f"{name};")
                self.emit(f"{name} = {self.literal(identity.value, identity.dtype, reg.dtype)};")
        self.thread_loop_var = loop.var
        if self.chunk == 1 and not self.touches_private(loop):
            self.body(loop, path, f"for ({idx} {var} = pf_tid; {var} < {n}; "
                                  f"{var} += {self.lanes}) {{")
        else:
            self.chunked_loop(loop, path)
        self.thread_loop_var = None

    def collective_statement(self, c: Collective) -> None:
        """The threads' partials combined by the scope's reduction helper, then with the
        value the register had before the loop (when that was not the identity)."""
        reg, op, scope = c.dst.buffer, c.op, c.scope
        dtype = reg.dtype.compute
        name = self.ident("buf", reg.name)
        self.helpers.add((scope, op, dtype))
        if scope == "cluster":          # the block's result, then the cluster's
            self.helpers.add(("block", op, dtype))
        helper = self.helper_name(op, dtype).replace("pf_block_", f"pf_{scope}_")
        self.emit(f"{name} = {helper}({name}, pf_red);")
        self.constants.pop(reg.name, None)
        if reg.name in self.saved:
            combine = self.template(op, dtype)
            self.emit(f"{name} = {combine.format(self.saved.pop(reg.name), name)};")

    def chunked_loop(self, loop: Loop, path) -> None:
        """Each thread takes `chunk` consecutive elements at a time: the loop's
        chunk-aligned loads are vector loads into small arrays before the elements are
        computed (unrolled), its stores vector stores after them. A loop over rows held
        partly in registers, partly in shared memory runs as two loops, one per part."""
        for part in self.chunk_parts(loop):
            self.part = part
            self.chunk_run(loop, path, part)
        self.part = None

    def chunk_parts(self, loop: Loop) -> list[tuple[int, int] | None]:
        """The ranges of this thread's chunk numbers (pf_k) the loop runs as one loop
        each: None for a strided loop (no private rows), else the chunks held in
        registers and, for a row too long for them, the chunks held in shared memory."""
        if not self.touches_private(loop):
            return [None]
        chunks = -(-loop.var.extent // (self.lanes * self.chunk))
        rows = {a.buffer.name for s, _ in walk(loop.body) for a in sum(accesses(s), [])
                if a.buffer.name in self.private}
        held = {self.in_regs[r] // self.chunk for r in rows}
        if len(held) != 1:
            raise UnsupportedError(f"SIMT codegen: SIMD loop {loop.var.name} holds rows "
                                   "split differently between registers and shared memory")
        in_regs = held.pop()
        return [(0, in_regs)] + ([(in_regs, chunks)] if in_regs < chunks else [])

    def chunk_run(self, loop: Loop, path, part: tuple[int, int] | None) -> None:
        var, n, idx, v = self.ident("var", loop.var.name), loop.var.extent, \
            self.index_type, self.chunk
        first = Var(loop.var.name + "_0", n)
        start = self.ident("var", first.name)
        declared = self.chunk_header(loop, start, part)
        stores = self.vector_loads(loop, first)
        self.emit("#pragma unroll")
        self.emit(f"for (int pf_v = 0; pf_v < {v}; ++pf_v) {{")
        self.depth += 1
        if n % v:
            self.emit(f"if ({start} + pf_v >= {n}) continue;")
        at = len(self.lines)
        self.block(loop.body, path)
        if _mentions(self.lines[at:], var):
            self.lines.insert(at, "    " * self.depth + f"const {idx} {var} = {start} + pf_v;")
        self.depth -= 1
        self.emit("}")
        for line in stores:
            self.emit(line)
        self.slots.clear()
        self.depth -= 1
        self.emit("}")
        if declared is not None and not _mentions(self.lines[declared + 1:], start):
            del self.lines[declared]

    def chunk_header(self, loop: Loop, start: str, part: tuple[int, int] | None) -> int | None:
        """Opens the loop over this thread's chunks `part`; the line declaring `start`
        (the chunk's first element) when it is a statement of its own."""
        n, v, block = loop.var.extent, self.chunk, self.lanes
        if part is None:
            self.emit(f"for ({self.index_type} {start} = pf_tid * {v}; {start} < {n}; "
                      f"{start} += {block * v}) {{")
            self.depth += 1
            return None
        lo, hi = part
        # registers: a constant trip count, unrolled, so registers stay registers; shared
        # memory: a few chunks at a time, or every load of the row would wait in registers
        self.emit("#pragma unroll" if lo == 0 else "#pragma unroll 4")
        self.emit(f"for (int pf_k = {lo}; pf_k < {hi}; ++pf_k) {{")
        self.depth += 1
        self.emit(f"const {self.index_type} {start} = (pf_k * {block} + pf_tid) * {v};")
        declared = len(self.lines) - 1
        if n % (block * v) and hi * block * v > n:
            self.emit(f"if ({start} >= {n}) continue;   // one exit: the loop unrolls")
        return declared

    def vector_loads(self, loop: Loop, first: Var) -> list[str]:
        """Emits the chunk's vector loads; returns its vector stores (made after it)."""
        v = self.chunk
        found = {k for k in vector_accesses(loop, v) if k[0] not in self.private}
        moves = [s for s in loop.body if isinstance(s, Move)]
        stores = []
        for a, load in [(m.src, True) for m in moves] + [(m.dst, False) for m in moves]:
            key = (a.buffer.name, a.index)
            if key not in found or key in self.slots:
                continue
            # a buffer read at two places (x[i] and x[i + H]) gets two arrays
            others = sum(1 for k in self.slots if k[0] == a.buffer.name)
            array = self.ident("vec", f"{a.buffer.name}_v" + (str(others + 1) if others else ""))
            self.slots[key] = array
            element = (self.storage_types[a.buffer.dtype] if a.buffer.level is Level.GLOBAL
                       else self.compute_types[a.buffer.dtype.compute])
            self.emit(self.vector_array(element, array, v))
            address = f"{self.ident('buf', a.buffer.name)} + " \
                      f"{self.index(a.index.substitute({loop.var: first}))}"
            copy = self.vector_copy(element, address, array, v, load=load)
            if load:
                self.emit(copy)
            else:
                stores.append(copy)
        return stores

    def touches_private(self, loop: Loop) -> bool:
        return any(a.buffer.name in self.private for s, _ in walk(loop.body)
                   for a in sum(accesses(s), []))

    def private_slot(self, a: Access) -> str:
        """This thread's slot of a private row: a register in the chunks held in
        registers, else (a row too long for them) its place in the row's slice of
        shared memory, slot j of thread t at (j - in_regs) * BLOCK + t."""
        name, slot = a.buffer.name, f"pf_k * {self.chunk} + pf_v"
        if self.part is None or self.part[0] == 0:
            return f"{self.ident('buf', name)}[{slot}]"
        return f"{self.ident('buf', self.rest[name].name)}" \
               f"[({slot} - {self.in_regs[name]}) * {self.block_size} + " \
               f"{'pf_lane' if self.cluster > 1 or self.rows > 1 else 'pf_tid'}]"

    def vector_array(self, element: str, array: str, v: int) -> str:
        return f"__align__(16) {element} {array}[{v}];"

    def vector_copy(self, element: str, address: str, array: str, v: int, load: bool) -> str:
        """Copy v elements between memory at address and the array, in 128-bit pieces
        (the runtime passes 16-byte-aligned buffers; the start is a chunk multiple)."""
        nbytes = v * _SIZES[element]
        piece = min(nbytes, VECTOR_BYTES)
        kind = {2: "unsigned short", 4: "unsigned int", 8: "uint2", 16: "uint4"}[piece]
        step = piece // _SIZES[element]
        parts = []
        for k in range(nbytes // piece):
            mem, reg = f"(({address}) + {k * step})", f"({array} + {k * step})"
            src, dst = (mem, reg) if load else (reg, mem)
            const = "const " if load else ""
            parts.append(f"*({kind} *){dst} = *({const}{kind} *){src};")
        return " ".join(parts)

    def accumulators(self, loop: Loop) -> list[tuple[Buffer, Op]]:
        """Outer registers the loop updates: only as `r = op(r, x)`, never read otherwise."""
        found: dict[str, tuple[Buffer, Op]] = {}
        others: set[str] = set()
        for s, _ in walk(loop.body):
            if not isinstance(s, (Move, Compute)):
                continue
            own = isinstance(s, Compute) and s.is_accumulate
            srcs = (s.src,) if isinstance(s, Move) else s.srcs[1 if own else 0:]
            others |= {a.buffer.name for a in srcs if isinstance(a, Access)}
            reg = s.dst.buffer
            if reg.level is not Level.REGISTER or reg.name not in self.visible:
                continue
            if not own or s.op not in _IDENTITY or found.get(reg.name, (reg, s.op))[1] is not s.op:
                raise UnsupportedError(
                    f"SIMT codegen: register {reg.name} is updated across the iterations of "
                    f"SIMD loop {loop.var.name} other than as one reduction ({s}); the "
                    "threads of a block cannot share it")
            found[reg.name] = (reg, s.op)
        if others & found.keys():
            raise UnsupportedError(
                f"SIMT codegen: accumulator(s) {sorted(others & found.keys())} are read inside "
                f"SIMD loop {loop.var.name}, where each thread holds only a partial value")
        return [found[k] for k in sorted(found)]

    def read(self, a: Access) -> str:
        if a.buffer.name in self.private:
            return self.private_slot(a)
        array = self.slots.get((a.buffer.name, a.index))
        if array is not None:
            load = f"{array}[pf_v]"
            return self.load_16[a.buffer.dtype].format(load) if a.buffer.level is Level.GLOBAL \
                and a.buffer.dtype in self.load_16 else load
        return super().read(a)

    def compute(self, c: Compute, path) -> None:
        super().compute(c, path)
        if c.op is None and isinstance(c.srcs[0], Const):
            self.constants[c.dst.buffer.name] = c.srcs[0].value

    def write(self, a: Access, value: str, src: DType, path, round16: bool) -> None:
        """Every statement ends here: a store to memory outside the thread loops is made
        by thread 0."""
        self.constants.pop(a.buffer.name, None)
        if a.buffer.name in self.private:
            self.emit(f"{self.private_slot(a)} = "
                      f"{self.convert(value, src, a.buffer.dtype, round16)};")
            return
        array = self.slots.get((a.buffer.name, a.index))
        if array is not None:               # into the chunk's array; stored after the loop
            b = a.buffer
            if b.level is Level.GLOBAL:
                value = self.convert(value, src, b.dtype, round16=False)
                value = self.store_16[b.dtype].format(value) if b.dtype in self.store_16 \
                    else value
            else:
                value = self.convert(value, src, b.dtype, round16)
            self.emit(f"{array}[pf_v] = {value};")
            return
        if a.buffer.level is Level.REGISTER or self.thread_loop_var is not None:
            super().write(a, value, src, path, round16)
            return
        start = len(self.lines)             # a row-level store: one thread makes it
        super().write(a, value, src, path, round16)
        stored = [line.strip() for line in self.lines[start:]]
        del self.lines[start:]
        self.emit(f"if (pf_tid == 0) {{ {' '.join(stored)} }}")

    def operand(self, o, target: DType) -> str:
        if isinstance(o, IndexValue):
            i64 = self.compute_types[DType.int64]
            return self.convert(f"(({i64})({self.index(o.index)}))", DType.int64, target, False)
        return super().operand(o, target)

    def barrier_statement(self) -> None:
        self.emit(self.barrier)


def _mentions(lines: list[str], name: str) -> bool:
    return any(re.search(rf"\b{name}\b", line) for line in lines)


_SIZES = {"float": 4, "double": 8, "unsigned short": 2, "ushort": 2, "int": 4,
          "long long": 8, "long": 8, "unsigned char": 1, "uchar": 1}


# -- identities of the accumulations a block reduction combines ----------------------------
_IDENTITY = {op: (lambda dtype, op=op: Const(accumulate_identity(op, dtype), dtype))
             for op in ACCUMULATES}


# -- the dialects -----------------------------------------------------------------------------
class CudaPrinter(SimtPrinter):
    dialect = "cuda"
    header = "#define PF_WARP 32\n"
    # sm_90 thread block clusters, in PTX (no header NVRTC might lack): rank, cluster
    # index and count, a cluster-wide barrier (release/acquire: it orders shared and
    # global memory across the cluster), and a load from another block's shared memory
    cluster_attribute = "__cluster_dims__({cluster}, 1, 1)"
    cluster_primitives = "\n".join([
        "#ifndef __cluster_dims__   /* what CUDA's headers define it as */",
        "#define __cluster_dims__(...) __attribute__((cluster_dims(__VA_ARGS__)))",
        "#endif",
        "PF_FN int pf_cluster_special(int which) {",
        "    unsigned r = 0;",
        '    if (which == 0) asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));',
        '    if (which == 1) asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));',
        '    if (which == 2) asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(r));',
        '    if (which == 3) asm volatile("mov.u32 %0, %%nclusterid.x;" : "=r"(r));',
        "    return (int)r;",
        "}",
        "PF_FN int pf_cluster_rank() { return pf_cluster_special(0); }",
        "PF_FN int pf_cluster_blocks() { return pf_cluster_special(1); }",
        "PF_FN int pf_cluster_id() { return pf_cluster_special(2); }",
        "PF_FN int pf_cluster_count() { return pf_cluster_special(3); }",
        "PF_FN void pf_cluster_sync() {",
        '    asm volatile("barrier.cluster.arrive.release;\\n\\tbarrier.cluster.wait.acquire;"'
        ' ::: "memory");',
        "}",
        "PF_FN unsigned pf_cluster_address(const void *p, int rank) {  // rank's copy of *p",
        "    unsigned long long s;",
        '    asm("cvta.to.shared.u64 %0, %1;" : "=l"(s) : "l"((unsigned long long)p));',
        "    unsigned remote;",
        '    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote)'
        ' : "r"((unsigned)s), "r"(rank));',
        "    return remote;",
        "}", ""])
    _CLUSTER_LOADS = {DType.float32: ("f32", "f"), DType.float64: ("f64", "d"),
                      DType.int32: ("s32", "r"), DType.int64: ("s64", "l")}

    @classmethod
    def cluster_reduce_helper(cls, op: Op, dtype: DType) -> str:
        """`T pf_cluster_<op>_<T>(T v, scratch)`: the block's result, then the cluster's:
        each block's thread 0 leaves its result in the scratch's last slot, and after a
        cluster barrier every thread combines the slots of all blocks, in rank order (so
        every thread of the cluster holds the same value); a second barrier keeps the
        slots until all have read them."""
        t = cls.compute_types[dtype]
        combine = cls.template(op, dtype)
        ptx, constraint = cls._CLUSTER_LOADS[dtype if dtype is not DType.bool else DType.int32]
        name = cls.helper_name(op, dtype)
        return "\n".join([
            f"PF_FN {t} {name.replace('pf_block_', 'pf_cluster_')}({t} v, "
            f"{cls.scratch_param()}) {{",
            f"    v = {name}(v, scratch);",
            f"    {t} *slot = ({t} *)(scratch + {REDUCE_SCRATCH});",
            "    if (threadIdx.x == 0) *slot = v;",
            "    pf_cluster_sync();",
            "    for (int r = 0; r < pf_cluster_blocks(); ++r) {",
            f"        {t} w;",
            f'        asm volatile("ld.shared::cluster.{ptx} %0, [%1];" : "={constraint}"(w)'
            ' : "r"(pf_cluster_address(slot, r)) : "memory");',
            f"        v = r == 0 ? w : {combine.format('v', 'w')};",
            "    }",
            "    pf_cluster_sync();",
            "    return v;",
            "}", ""])


class HipPrinter(SimtPrinter):
    dialect = "hip"
    warp = 64               # a CDNA wavefront (gfx90a)
    header = ("#if !defined(__HIPCC_RTC__)\n#include <hip/hip_runtime.h>\n#endif\n"
              "#define PF_WARP warpSize\n")

    @classmethod
    def shuffle(cls, value: str, mask: str) -> str:
        return f"__shfl_xor({value}, {mask})"


class OpenCLPrinter(SimtPrinter):
    dialect = "opencl"
    # No fused multiply-add: as numpy rounds. PF_SCRATCH_FN: helpers given the kernel's
    # __local scratch are always inlined. PoCL before 4.0 gives each work-group its own
    # copy of a kernel's __local array only where the kernel function itself uses it
    # (its automatic-locals pass ran before it inlined other functions; fixed by
    # pocl/pocl 834233895, "fix the order of automatic-local LLVM Pass"). A helper left
    # out of line (clang keeps one called twice, and turns its scratch argument, the same
    # in every call, into a direct use of the array) made the array one static variable
    # of the compiled kernel, raced on by the work-groups PoCL's threads ran at once.
    header = ("#pragma OPENCL FP_CONTRACT OFF\n"
              "#define PF_SCRATCH_FN static inline __attribute__((always_inline))\n")
    scratch_fn = "PF_SCRATCH_FN"
    rounded_ops: dict = {}
    kernel_head = "__kernel __attribute__((reqd_work_group_size({block}, 1, 1))) void"
    helper_qualifier = "static inline"
    pointer_space = "__global "
    restrict = "restrict"
    thread_index = "(int)get_local_id(0)"
    block_index = "get_group_id(0)"
    block_count = "get_num_groups(0)"
    barrier = "barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);"
    bitcasts = ("as_float", "as_uint")
    int64_suffix = "L"
    float_math = {"exp": "exp", "log": "log", "tanh": "tanh", "erf": "erf", "sin": "sin",
                  "cos": "cos", "rsqrt": "rsqrt", "tan": "tan", "log1p": "log1p",
                  "expm1": "expm1", "log2": "log2", "log10": "log10", "exp2": "exp2"}
    math_names = {"fabsf": "fabs", "sqrtf": "sqrt", "powf": "pow", "floorf": "floor",
                  "ceilf": "ceil", "truncf": "trunc", "rintf": "rint", "fmodf": "fmod",
                  "copysignf": "copysign"}
    storage_types = {DType.float32: "float", DType.float64: "double",
                     DType.float16: "ushort", DType.bfloat16: "ushort", DType.int32: "int",
                     DType.int64: "long", DType.bool: "uchar"}
    compute_types = {DType.float32: "float", DType.float64: "double", DType.int32: "int",
                     DType.int64: "long", DType.bool: "int"}
    unsigned_types = {DType.int32: "uint", DType.int64: "ulong"}

    @classmethod
    def double_header(cls) -> list[str]:
        return ["#pragma OPENCL EXTENSION cl_khr_fp64 : enable", ""]

    @classmethod
    def scratch_param(cls) -> str:
        return "__local long *scratch"

    @classmethod
    def reduce_body(cls, t: str, combine: str) -> list[str]:
        return [
            f"    __local {t} *s = (__local {t} *)scratch;",
            "    int t = (int)get_local_id(0), n = (int)get_local_size(0);",
            f"    {cls.barrier}",
            "    s[t] = v;",
            f"    {cls.barrier}",
            "    for (int o = n / 2; o > 0; o >>= 1) {",
            f"        if (t < o) {{ {t} a = s[t], b = s[t + o]; "
            f"s[t] = {combine.format('a', 'b')}; }}",
            f"        {cls.barrier}",
            "    }",
            "    return s[0];"]

    @classmethod
    def lanes_reduce_helper(cls, op: Op, dtype: DType) -> str:
        """The same tree within each row's 32 work-items (several rows per group); every
        work-item of the group takes part, each row gets its own result."""
        t = cls.compute_types[dtype]
        combine = cls.template(op, dtype)
        name = cls.helper_name(op, dtype).replace("pf_block_", "pf_lanes_")
        return "\n".join([
            f"{cls.scratch_fn} {t} {name}({t} v, {cls.scratch_param()}) {{",
            f"    __local {t} *s = (__local {t} *)scratch;",
            f"    int t = (int)get_local_id(0), lane = t % {cls.warp};",
            f"    {cls.barrier}",
            "    s[t] = v;",
            f"    {cls.barrier}",
            f"    for (int o = {cls.warp} / 2; o > 0; o >>= 1) {{",
            f"        if (lane < o) {{ {t} a = s[t], b = s[t + o]; "
            f"s[t] = {combine.format('a', 'b')}; }}",
            f"        {cls.barrier}",
            "    }",
            "    return s[t - lane];",
            "}", ""])

    def kernel_params(self, program: Program) -> list[str]:
        out = []
        for b in program.params:
            t = self.storage_types[b.dtype]
            if b.role is Role.INPUT:        # inputs: covering storage + logical element 0
                out.append(f"__global const {t} *restrict {self.ident('buf', b.name + '_base')}")
                out.append(f"long {self.ident('buf', b.name + '_offset')}")
            else:
                out.append(f"__global {t} *restrict {self.ident('buf', b.name)}")
        return out

    def param_prologue(self, program: Program) -> list[str]:
        return [f"    __global const {self.storage_types[b.dtype]} *restrict "
                f"{self.ident('buf', b.name)} = {self.ident('buf', b.name + '_base')} + "
                f"{self.ident('buf', b.name + '_offset')};"
                for b in program.params if b.role is Role.INPUT]

    def declare_locals(self, locals_: list[Buffer], offsets: dict[str, int]) -> list[str]:
        return [f"    __local {self.compute_types[b.dtype.compute]} "
                f"{self.ident('buf', b.name)}[{b.size}];" for b in locals_]

    def dynamic_shared(self, nbytes: int) -> int:
        return 0

    def vector_array(self, element: str, array: str, v: int) -> str:
        return f"{element} {array}[{v}];"

    def vector_copy(self, element: str, address: str, array: str, v: int, load: bool) -> str:
        # vloadn/vstoren need only the element's alignment (inputs carry any offset)
        if load:
            return f"vstore{v}(vload{v}(0, {address}), 0, {array});"
        return f"vstore{v}(vload{v}(0, {array}), 0, {address});"

    def scratch_decl(self) -> str:
        return f"__local long pf_red[{self.block_size}];"


DIALECTS = {"cuda": CudaPrinter, "hip": HipPrinter, "opencl": OpenCLPrinter}
