"""The SIMT launch, decided once per program from the Target: the launch pass.

Threads per block (a power of two, a multiple of the warp), how many blocks can share
the CORES loop (only when their units touch disjoint memory), where LOCAL arrays live
(private rows in registers and shared-memory slots, other arrays whole in shared
memory), whether 32-bit index arithmetic is exact, and the chunk: how many consecutive
elements a thread takes at a time (one 128-bit vector access). The result is the
program's `Launch` (gir/ir.py); the cost model, the fit check, the printer and the
runtime read it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ... import options
from ...gir.expr import Clamp, Expr, Var
from ...gir.ir import (Buffer, Compute, IndexValue, Launch, Level, Loop, Parallel, PrivateRow,
                       Program, Role, Stmt, accesses, walk)
from ...dtypes import DType
from ...targets import Target
from ..util import split_region

MAX_BLOCK = 1024            # threads per block: the most every SIMT device takes
VECTOR_BYTES = 16           # one 128-bit load or store per thread and chunk
SHARED_ALIGN = 16           # bytes: LOCAL arrays start 128-bit aligned in shared memory
ELEMENTWISE_BLOCK = 256     # kernels without block reductions need no bigger blocks


def plan_launch(program: Program, target: Target) -> Program:
    """The program with its launch on target (a SIMT Target: warp, max_block,
    cluster_blocks and LOCAL's capacity, the shared memory a block has)."""
    room = target.capacity(Level.LOCAL)
    shape = launch_shape(program, target.warp, target.max_block, target.cluster_blocks, room)
    blocks, why = blocks_of(program)
    layout = shape.layout
    private = tuple(PrivateRow(b, layout.per_thread[b.name], layout.in_regs[b.name],
                               layout.rest.get(b.name))
                    for b in local_buffers(program) if b.name in layout.per_thread)
    offsets = layout.offsets()
    launch = Launch(shape.block, shape.chunk, shape.cluster, shape.rows,
                    blocks * shape.cluster // shape.rows, why,
                    32 if fits_int32(program) else 64, private,
                    tuple((b, offsets[b.name]) for b in layout.shared), layout.shared_bytes,
                    room)
    return dataclasses.replace(program, launch=launch)


# -- launch shape ---------------------------------------------------------------------------
def _thread_loops(stmts: tuple[Stmt, ...]):
    for s in stmts:
        if isinstance(s, Loop):
            if s.kind is Parallel.SIMD:
                yield s
            else:
                yield from _thread_loops(s.body)


def block_size(program: Program, warp: int, max_block: int, chunk: int = 1) -> int:
    """Threads per block: about $POWERFUSION_SIMT_ITEMS elements (at least one chunk)
    each."""
    loops = list(_thread_loops(program.body))
    if not loops:
        return warp
    reduces = any(isinstance(s, Compute) and s.is_accumulate
                  for lp in loops for s, _ in walk(lp.body))
    extent = max(lp.var.extent for lp in loops)
    per_thread = max(options.get("POWERFUSION_SIMT_ITEMS"), chunk)
    want = 1 << max(0, math.ceil(math.log2(max(1, -(-extent // per_thread)))))
    cap = max_block if reduces else min(ELEMENTWISE_BLOCK, max_block)
    cap = 1 << (cap.bit_length() - 1)        # a power of two: the reduction trees halve it
    return max(warp, min(want, cap))


def blocks_of(program: Program) -> tuple[int, str]:
    """(blocks, why one): the CORES extent when the units touch disjoint memory."""
    cores = [s for s in program.body if isinstance(s, Loop) and s.kind is Parallel.CORES]
    if len(cores) != 1:
        return 1, "the program has no single parallel loop"
    for s in program.body:
        if s is not cores[0] and any(a.buffer.level is not Level.REGISTER
                                     for t, _ in walk((s,)) for a in accesses(t)[1]):
            return 1, "it writes memory outside its parallel loop"
    p = cores[0].var
    written = {a.buffer.name for t, _ in walk(cores[0].body) for a in accesses(t)[1]
               if a.buffer.level is Level.GLOBAL}
    why = _overlap(cores[0], written)
    if why and _tiles(cores[0], written):
        why = ""
    return (1, why) if why else (p.extent, "")


def _overlap(cores: Loop, written: set[str]) -> str:
    """Why units' regions of the written buffers may overlap ("" when they cannot): each
    unit must reach each one in a contiguous region of its own."""
    p = cores.var
    regions: dict[str, set] = {}
    for t, _ in walk(cores.body):
        for a in accesses(t)[0] + accesses(t)[1]:
            if a.buffer.name not in written:
                continue
            split = split_region(a.index, p)
            if split is None:
                return f"{a.buffer.name}[{a.index}] is not one region per unit"
            base, local = split
            stride = base.substitute({p: 1}).const - base.substitute({p: 0}).const
            if base != base.substitute({p: 0}) + Expr.of(p) * stride or \
                    local.bounds()[1] >= abs(stride) and p.extent > 1:
                return f"{a.buffer.name}: units' regions may overlap"
            regions.setdefault(a.buffer.name, set()).add(base)
    if any(len(bases) > 1 for bases in regions.values()):
        return "a buffer is reached at different bases"
    return ""


def _tiles(cores: Loop, written: set[str]) -> bool:
    """Units whose regions interleave (2-D tiles) but never share an element: each
    written buffer is reached at one index, whose element names its unit."""
    indices: dict[str, set] = {}
    for t, _ in walk(cores.body):
        for a in accesses(t)[0] + accesses(t)[1]:
            if a.buffer.name in written:
                indices.setdefault(a.buffer.name, set()).add(a.index)
    return bool(indices) and all(len(ix) == 1 and _units_disjoint(next(iter(ix)), cores.var)
                                 for ix in indices.values())


def _units_disjoint(index: Expr, p: Var) -> bool:
    """Does the element `index` names determine the unit p that touches it?

    The index must be mixed-radix digits: each term's coefficient exceeds what all
    smaller terms can add up to, so the element gives every term's value. A term of p
    alone gives its value; a term clamp(g*q(p) + l) with 0 <= l < g, whose clamp never
    cuts g*q, gives q (a transpose tile's edge lanes clamped onto its last row or
    column). The values p gives must tell every p apart."""
    terms = sorted(index.terms, key=lambda t: t[1])
    reach = 0                               # the most the smaller terms add up to
    digits = []
    for atom, c in terms:
        lo, hi = atom.bounds()
        if c <= reach or lo < 0:
            return False
        reach += c * hi
        if p not in Expr.of(atom).vars():
            continue
        if isinstance(atom, Var) or atom.arg.vars() == {p} and not isinstance(atom, Clamp):
            digits.append(Expr.of(atom))
            continue
        if not isinstance(atom, Clamp):
            return False
        split = split_region(atom.arg, p)
        if split is None:
            return False
        base, local = split
        g = math.gcd(base.const, *(k for _, k in base.terms))
        (b_lo, b_hi), (l_lo, l_hi) = base.bounds(), local.bounds()
        if g <= 0 or l_lo < 0 or l_hi >= g or b_lo < atom.lo or b_hi > atom.hi:
            return False
        digits.append(base // g)
    if not digits or p.extent > 1 << 22:
        return False
    units = np.arange(p.extent, dtype=np.int64)
    values = np.stack([np.broadcast_to(np.asarray(d.evaluate({p: units}), np.int64),
                                       units.shape) for d in digits])
    return np.unique(values, axis=1).shape[1] == p.extent


def local_buffers(program: Program) -> list[Buffer]:
    seen: dict[str, Buffer] = {}
    for s, _ in walk(program.body):
        reads, writes = accesses(s)
        for a in reads + writes:
            if a.buffer.level is Level.LOCAL:
                seen.setdefault(a.buffer.name, a.buffer)
    return list(seen.values())


def _magnitude(e: Expr) -> int:
    total = abs(e.const)
    for atom, c in e.terms:
        lo, hi = atom.bounds()
        inner = 0 if isinstance(atom, Var) else _magnitude(atom.arg)
        total = max(total, inner) + abs(c) * max(abs(lo), abs(hi))
    return total


def fits_int32(program: Program) -> bool:
    """Can every index expression (and every partial sum of it) be a 32-bit int?"""
    limit = 2**31 - 1
    for s, loops in walk(program.body):
        if isinstance(s, Loop):
            if s.var.extent + MAX_BLOCK * 2048 > limit:
                return False
            continue
        reads, writes = accesses(s)
        exprs = [a.index for a in reads + writes]
        if isinstance(s, Compute):
            exprs += [o.index for o in s.srcs if isinstance(o, IndexValue)]
        if any(_magnitude(e) > limit for e in exprs):
            return False
    return True


# -- vector chunks ---------------------------------------------------------------------------
def chunk_of(program: Program, itemsize) -> int:
    """Elements per thread and chunk of every SIMD loop: one VECTOR_BYTES access of the
    narrowest global buffer (at most 8). Every SIMD loop of a kernel uses the same
    chunk, so element i belongs to thread (i / chunk) % BLOCK in all of them."""
    if not options.get("POWERFUSION_SIMT_VECTOR"):
        return 1
    sizes = [itemsize(b) for b in program.params]
    return max(1, min(8, VECTOR_BYTES // min(sizes))) if sizes else 1


# -- rows in registers -----------------------------------------------------------------------
MAX_PRIVATE = 16            # elements of one LOCAL row a thread may hold in registers (24 or
                            # 32 made ptxas spill a 1024-thread layernorm: 64 registers at most)
# A longer part of a row keeps this many elements in registers and the rest in shared
# memory, each slot a block-wide slice (slot j of thread t at (j - R) * BLOCK + t: a
# warp touches 32 consecutive words, no bank conflict). Registers and shared memory
# together hold a row neither holds alone: a 65536-element float32 row (256 KB) in a
# 1024-thread block is 48 KB of registers and 208 KB of shared memory (the Target
# counts those registers: runtime/simt_executable.simt_target).
SPILL_REGISTERS = 12


def private_rows(program: Program, block: int, chunk: int) -> dict[str, int]:
    """LOCAL buffers every thread can hold its own part of: each access is a statement
    directly in a SIMD loop over the whole buffer, at the loop's own index. Under the
    chunked mapping the thread that writes element i is the one that reads it back, so
    no other thread ever needs it. name -> elements per thread (see `in_registers`)."""
    seen: dict[str, int] = {}
    refused: set[str] = set()
    for s, loops in walk(program.body):
        if isinstance(s, Loop):
            continue
        reads, writes = accesses(s)
        for a in reads + writes:
            b = a.buffer
            if b.level is not Level.LOCAL:
                continue
            simd = [lp for lp in loops if lp.kind is Parallel.SIMD]
            if len(simd) != 1 or loops[-1] is not simd[0] or a.index != Expr.of(simd[0].var) \
                    or simd[0].var.extent != b.size:
                refused.add(b.name)
            seen[b.name] = b.size
    per_thread = {n: -(-size // (block * chunk)) * chunk for n, size in seen.items()}
    return {n: k for n, k in per_thread.items() if n not in refused}


def in_registers(per_thread: int, chunk: int) -> int:
    """How many of a thread's `per_thread` elements of a private row live in registers
    (a whole number of chunks); the others live in its slots of shared memory."""
    if per_thread <= MAX_PRIVATE:
        return per_thread
    return max(chunk, SPILL_REGISTERS // chunk * chunk)


@dataclass(frozen=True)
class RowLayout:
    """Where a kernel's LOCAL buffers live for a block of `block` threads."""

    per_thread: dict[str, int]      # private rows: elements each thread holds
    in_regs: dict[str, int]         # of those, how many in registers
    rest: dict[str, Buffer]         # private row -> its slots beyond in_regs, in shared
    shared: tuple[Buffer, ...]      # every array in shared memory (whole LOCAL ones, rests)

    @property
    def shared_bytes(self) -> int:
        """Shared memory per block, each array padded to SHARED_ALIGN."""
        return sum(_padded_bytes(b) for b in self.shared)

    def offsets(self) -> dict[str, int]:
        """Each shared array's byte offset in the block's shared memory."""
        out, at = {}, 0
        for b in self.shared:
            out[b.name] = at
            at += _padded_bytes(b)
        return out


def _padded_bytes(b: Buffer) -> int:
    item = 4 if b.dtype.compute is DType.bool else b.dtype.compute.itemsize  # bool: int
    return -(-b.size * item // SHARED_ALIGN) * SHARED_ALIGN


def row_layout(program: Program, lanes: int, chunk: int, block: int | None = None) -> RowLayout:
    """The layout for `lanes` threads sharing each row: a block, or a cluster of
    lanes / block blocks (each block's shared memory holds its own threads' slots)."""
    block = block or lanes
    per_thread = private_rows(program, lanes, chunk)
    in_regs = {n: in_registers(k, chunk) for n, k in per_thread.items()}
    local = local_buffers(program)
    rest = {b.name: Buffer(f"{b.name}#rest", Level.LOCAL, b.dtype,
                           ((per_thread[b.name] - in_regs[b.name]) * block,), Role.TEMP)
            for b in local if in_regs.get(b.name, 0) < per_thread.get(b.name, 0)}
    shared = tuple(b for b in local if b.name not in per_thread) + tuple(rest.values())
    return RowLayout(per_thread, in_regs, rest, shared)


# -- clusters --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LaunchShape:
    """How a kernel maps onto the device: `cluster` blocks of `block` threads share each
    parallel unit (a row); cluster > 1 only where a row fits no single block's registers
    and shared memory together (a thread block cluster, CUDA sm_90: the blocks' partial
    reductions meet through distributed shared memory)."""

    block: int
    chunk: int
    cluster: int
    layout: RowLayout
    rows: int = 1               # rows (parallel units) per block, a warp's lanes each

    @property
    def lanes(self) -> int:
        """Threads that share one row: what the SIMD loops spread over."""
        return self.block * self.cluster // self.rows


def launch_shape(program: Program, warp: int, max_block: int, max_cluster: int = 1,
                 room: int | None = None) -> LaunchShape:
    """The launch shape: the block of block_size; and when the rows a thread keeps do
    not fit `room` bytes of shared memory, the fewest blocks per cluster (up to
    max_cluster) that make them fit. Only kernels whose LOCAL arrays are all private
    rows, whose units may run on many blocks, take clusters: a cluster's blocks share
    no shared memory but those rows' own slots."""
    chunk = chunk_of(program, lambda b: b.dtype.itemsize)
    block = block_size(program, warp, max_block, chunk)
    layout = row_layout(program, block, chunk)
    units, one_block = blocks_of(program)
    rows = 1 if one_block else _rows_per_block(units, block, warp, max_block, layout)
    if rows > 1:
        return LaunchShape(block * rows, chunk, 1, row_layout(program, block, chunk,
                                                               block * rows), rows)
    if room is None or layout.shared_bytes <= room or max_cluster == 1 \
            or not layout.per_thread or one_block \
            or len(layout.per_thread) != len(local_buffers(program)):
        return LaunchShape(block, chunk, 1, layout)
    cluster = 2
    while cluster <= max_cluster:
        wider = row_layout(program, block * cluster, chunk, block)
        if wider.shared_bytes <= room and set(wider.per_thread) == set(layout.per_thread):
            return LaunchShape(block, chunk, cluster, wider)
        cluster *= 2
    return LaunchShape(block, chunk, 1, layout)


def _rows_per_block(units: int, block: int, warp: int, max_block: int,
                    layout: RowLayout) -> int:
    """How many short rows a block takes, one per warp: a row a single warp covers
    (block == warp) makes a block of one warp, and a multiprocessor holds only so
    many blocks (32 on an H100: a quarter of its threads). Several rows per block
    keep it full, and their reductions stay within a warp (shuffles, no barrier).
    Needs as many parallel units as the rows divide (every warp then runs as many
    rows, so block-wide barriers stay in step) and no LOCAL array in shared memory
    (one per row would be needed)."""
    if block != warp or layout.shared:
        return 1
    # short rows: one per warp, $POWERFUSION_SIMT_ROWS warps per block
    rows = min(options.get("POWERFUSION_SIMT_ROWS"), max_block // warp)
    while rows > 1 and units % rows:
        rows //= 2
    return rows
