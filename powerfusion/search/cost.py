"""The cost model: a plan's kernels priced in seconds, from the bytes they move.

It ranks the candidates of the search space (search/space.py); the tuner measures
the first few of that ranking.
"""

from __future__ import annotations

from ..codegen.simt_plan import MAX_BLOCK, launch_shape
from ..gir.ir import Level, Program
from ..passes.traffic import footprint
from ..targets import Target
from .plan import CompiledKernel, Plan

KERNEL_OVERHEAD_BYTES = 64 * 1024   # a launch costs about as much as moving this much
BLOCKS_PER_UNIT = 4                 # blocks per GPU multiprocessor a schedule aims at
THREADS_PER_UNIT = 1024             # threads per multiprocessor for full bandwidth: four
                                    # 256-thread blocks, or one 1024-thread block whose
                                    # row is on chip (each thread keeps 16 B loads going)


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
    return max(1, ck.schedule.outer_extent) * _launch_shape(ck.program, target).lanes


def fits_shared(plan: Plan) -> bool:
    """Does every kernel's shared memory fit a block? Rows kept on chip may use
    registers beyond LOCAL memory (Target.row_bytes), but only rows each thread holds
    its own part of; anything else in LOCAL lives in shared memory whole. (If no plan
    fits, the first one's printer says which kernel does not.)"""
    if plan.target.family != "simt":
        return True
    room = plan.target.capacity(Level.LOCAL)
    return all(_launch_shape(ck.program, plan.target).layout.shared_bytes <= room
               for ck in plan.kernels)


def _launch_shape(program: Program, target: Target):
    """How the SIMT printer will launch the program (codegen/simt_plan.launch_shape)."""
    return launch_shape(program, 32, MAX_BLOCK, target.cluster_blocks,
                        target.capacity(Level.LOCAL))
