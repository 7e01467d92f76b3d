"""The cost model: a plan's kernels priced in seconds, from the bytes they move.

It ranks the candidates of the search space (search/space.py); the tuner measures
the first few of that ranking.
"""

from __future__ import annotations

from ..gir.ir import Level
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
    glob = global_seconds(ck.program, target, moved) \
        + KERNEL_OVERHEAD_BYTES / target.bandwidth(Level.GLOBAL)
    if target.family == "simt":
        glob *= max(1.0, THREADS_PER_UNIT * target.cores / _threads(ck, target))
    # on-chip bandwidth is per core: fewer threads than cores get their share of it
    # (DRAM's a core or two can keep near busy: the learned correction says how near)
    cores = target.cores / min(target.cores, ck.program.cpu.threads or target.cores)
    return glob + cores * sum(sum(moved[lv.value].values()) / target.bandwidth(lv)
                              for lv in (Level.LOCAL, Level.REGISTER))


def global_seconds(program, target: Target, moved: dict | None = None) -> float:
    """Seconds the program's global memory traffic takes at the Target's bandwidth."""
    moved = footprint(program) if moved is None else moved
    return sum(moved["global"].values()) / target.bandwidth(Level.GLOBAL)


def _threads(ck: CompiledKernel, target: Target) -> int:
    """How many GPU threads the kernel keeps busy: its parallel units times the threads
    its launch gives each (a block, or a cluster's blocks)."""
    return max(1, ck.schedule.outer_extent) * ck.program.launch.lanes


def fits_shared(plan: Plan) -> bool:
    """Does every kernel's shared memory fit a block (its launch's fit check)? (If no
    plan fits, the first one's printer says which kernel does not.)"""
    return all(ck.program.launch is None or ck.program.launch.fits for ck in plan.kernels)
