"""A plan run on a SIMT device: the compiler's contract, one class per runtime.

`compile_plan_simt(plan, dialect)` prints the plan's kernels in the dialect and returns
an executable whose `.source` is exactly what the runtime compiles (so explain can show
it without the device) and whose `.run(inputs)` follows the executable contract
(execute.py).

`simt_target(dialect)` is the Target the plan is made for: shared memory as the device
has it, less what the printer reserves for its reduction scratch.
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import numpy as np

from .. import options
from ..codegen.simt import REDUCE_SCRATCH, SimtModule, build_simt
from ..passes.simt.launch import MAX_BLOCK, SHARED_ALIGN, SPILL_REGISTERS
from ..errors import UnsupportedError
from ..gir.interpreter import as_storage
from ..gir.ir import Level, Program, Role
from ..targets import SIMT_TARGETS, MemoryLevel, Target
from ..targets.target import shipped
from . import cuda, opencl
from .cuda import CudaExecutable
from .execute import execute


# An OpenCL device described when none is here (explain without a device): what
# PoCL and most GPUs offer at least.
_GENERIC_OPENCL = {"units": 16, "global": 4 << 30, "local": 32 << 10, "work_group": 256}


def _opencl_limits() -> dict:
    """The OpenCL device's limits, or the generic ones when there is no device."""
    try:
        dev = opencl.device().device
    except UnsupportedError:
        return _GENERIC_OPENCL
    return {"units": max(1, int(dev.max_compute_units)), "global": int(dev.global_mem_size),
            "local": int(dev.local_mem_size), "work_group": int(dev.max_work_group_size)}


def simt_target(dialect: str, device: str | None = None) -> Target:
    """The Target a plan for this dialect is made for; CUDA: the shipped description
    `device` ("a100", "h100"), by default this machine's GPU (h100 without one)."""
    if dialect == "opencl":
        limits = _opencl_limits()
        reserve = MAX_BLOCK * 8                 # the __local reduction tree
        largest = min(MAX_BLOCK, limits["work_group"])
        return Target(
            name="opencl", family="simt", cores=limits["units"], simd_bytes=16,
            memory=(MemoryLevel(Level.GLOBAL, limits["global"], 100e9, "device"),
                    MemoryLevel(Level.LOCAL, max(0, limits["local"] - reserve), 1e12,
                                "block"),
                    MemoryLevel(Level.REGISTER, 1024, 1e13, "thread")),
            row_register_bytes=_row_registers(largest), warp=32, max_block=largest,
            dialect="opencl", reserved_shared=min(reserve, limits["local"]))
    names = {"cuda": device or _cuda_device_name(), "hip": "mi250"}
    if dialect not in names:
        raise UnsupportedError(f"SIMT dialect {dialect!r}: choose one of {list(SIMT_TARGETS)}")
    target = shipped(names[dialect])
    # static reduction scratch (and a cluster's slot) and the padding of each LOCAL
    # array to SHARED_ALIGN
    reserve = (REDUCE_SCRATCH + 1) * 8 + 16 * SHARED_ALIGN
    return dataclasses.replace(target, memory=tuple(
        dataclasses.replace(m, capacity=m.capacity - reserve) if m.level is Level.LOCAL
        else m for m in target.memory), row_register_bytes=_row_registers(target.max_block),
        cluster_blocks=target.cluster_blocks if _knob("CLUSTERS") else 1,
        reserved_shared=reserve)


def _knob(name: str) -> bool:
    """$POWERFUSION_SIMT_<name>=0 turns a SIMT feature off, to time it on a device:
    CLUSTERS (thread block clusters), ROW_REGISTERS (rows kept in registers beside
    shared memory count towards what a block holds)."""
    return options.get(f"POWERFUSION_SIMT_{name}")


@functools.cache
def _cuda_device_name() -> str:
    """The shipped description of this machine's CUDA GPU: "a100" for compute
    capability 8.x (no thread block clusters), "h200" for an H200 (an H100's chip with
    faster memory), else "h100" (also with no GPU here, for explain: the machine the
    kernels are tuned for)."""
    if "cuda.core" not in sys.modules and "cuda.core.experimental" not in sys.modules:
        try:                                   # a machine without cuda-python: no GPU
            import cuda.core as _  # noqa: F401 - binds no `cuda` over the runtime module
        except ImportError:
            return "h100"
    try:
        major, _ = cuda.device().compute_capability
        name = str(cuda.device().name)
    except UnsupportedError:
        return "h100"
    return "a100" if major < 9 else "h200" if "H200" in name else "h100"


def _row_registers(block: int) -> int:
    """The registers a block of this many threads gives a row too long for them (the
    launch pass's SPILL_REGISTERS float32 slots per thread, passes/simt/launch.py)."""
    return SPILL_REGISTERS * 4 * block if _knob("ROW_REGISTERS") else 0


def simt_module(plan, dialect: str) -> SimtModule:
    """The plan's kernels printed in dialect, as the runtime builds them (explain shows
    this source); UnsupportedError if a kernel's shared memory does not fit."""
    programs = [ck.program for ck in plan.kernels]
    for p in programs:              # rows' registers (target.row_bytes) hold private rows
        if not p.launch.fits:       # only; any other LOCAL array lives in shared memory
            raise UnsupportedError(
                f"SIMT codegen: kernel {p.name} needs {p.launch.shared_bytes} B of shared "
                f"memory per block; {plan.target.name} has {p.launch.shared_room} B")
    return build_simt(programs, dialect)


def compile_plan_simt(plan, dialect: str, module: SimtModule | None = None):
    """An executable for plan's kernels in dialect ("cuda", "hip", "opencl"); module:
    the plan already printed (simt_module)."""
    module = module or simt_module(plan, dialect)
    if dialect == "opencl":
        return OpenCLExecutable(plan, module)
    if dialect == "cuda":
        return CudaExecutable(plan, module)
    if dialect == "hip":
        return SourceOnlyExecutable(plan, module)
    raise UnsupportedError(f"SIMT dialect {dialect!r}: choose one of {list(SIMT_TARGETS)}")


class SourceOnlyExecutable:
    """A plan whose source can be shown and compiled offline but not run here."""

    def __init__(self, plan, module: SimtModule):
        self.plan, self.module, self.source = plan, module, module.source

    def run(self, inputs) -> list[np.ndarray]:
        raise UnsupportedError(f"target={self.module.dialect!r}: PowerFusion has no runtime "
                               "for it yet; its source (.source) compiles with hipcc")


class OpenCLExecutable(SourceOnlyExecutable):
    """Kernels built once (lazily, on first run); each run copies in, launches, copies out."""

    def __init__(self, plan, module: SimtModule):
        super().__init__(plan, module)
        self._kernels = None

    def kernels(self) -> dict:
        if self._kernels is None:
            program = opencl.build(self.source)
            self._kernels = {k.name: opencl.OpenCLKernel(program, k.name)
                             for k in self.module.kernels}
        return self._kernels

    def run(self, inputs) -> list[np.ndarray]:
        kernels = self.kernels()
        units = int(opencl.device().device.max_compute_units)
        on_device: dict[str, object] = {}
        input_offsets: dict[str, int] = {}
        plan_buffers = self.plan.buffers

        def launch(program: Program, arrays: dict[str, np.ndarray]) -> None:
            config = self.module.kernel(program.name)
            args = []
            for p in program.params:
                if p.name not in on_device:
                    if p.role is Role.INPUT:
                        flat, base = as_storage(arrays[p.name])
                        on_device[p.name] = opencl.to_device(flat)
                        input_offsets[p.name] = base
                    else:
                        on_device[p.name] = opencl.empty(arrays[p.name].nbytes)
                args.append(on_device[p.name])
                if p.role is Role.INPUT:
                    args.append(np.int64(input_offsets[p.name]))
            kernels[program.name](config.grid(units), config.block, args)
            for p in program.params:    # what the caller (or a later kernel's host view) sees
                if p.role is not Role.INPUT and p.name in plan_buffers:
                    opencl.to_host(on_device[p.name], arrays[p.name])

        return execute(self.plan, inputs, launch)
