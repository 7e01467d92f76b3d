"""A plan run on this CPU: its kernels as C + OpenMP, compiled and loaded
(`Executable`), or run by the GIR interpreter (`InterpretedExecutable`, the oracle).
Both follow the executable contract (execute.py).
"""

from __future__ import annotations

import numpy as np

from ..codegen.c import emit_c_module
from ..gir.interpreter import as_storage, run
from ..gir.ir import Program
from .cpu import load_kernels
from .execute import BufferPool, execute


def generate_source(plan) -> str:
    """The plan's kernels as one C module."""
    return emit_c_module([ck.program for ck in plan.kernels])


class Executable:
    """Compiled kernels plus the plan to run them on the caller's arrays."""

    def __init__(self, plan, source: str, pool: BufferPool | None = None):
        """pool: where its outputs and temporaries come from (default: its own); the
        tuner gives every candidate of a graph one, so each writes the same memory."""
        self.plan = plan
        self.source = source
        names = [ck.program.name for ck in plan.kernels]
        self.kernels = load_kernels(source, names) if names else {}   # by program name
        self._pool = pool if pool is not None else BufferPool()

    def run(self, inputs) -> list[np.ndarray]:
        def launch(program: Program, arrays: dict[str, np.ndarray]) -> None:
            self.kernels[program.name]([arrays[p.name].ctypes.data for p in program.params])

        return execute(self.plan, inputs, launch, self._pool)


class InterpretedExecutable:
    """The same plan run by the GIR interpreter: the oracle compiled code is held to.

    `stage` picks which programs run: "optimized" (what is compiled), "naive" (before
    the passes) or the name of a pass (the program right after it).
    """

    def __init__(self, plan, stage: str = "optimized"):
        self.plan, self.stage = plan, stage

    def programs(self) -> list[Program]:
        if self.stage == "optimized":
            return [ck.program for ck in self.plan.kernels]
        if self.stage == "naive":
            return [ck.naive for ck in self.plan.kernels]
        return [dict(ck.log.programs)[self.stage] for ck in self.plan.kernels]

    def run(self, inputs) -> list[np.ndarray]:
        chosen = {ck.program.name: p for ck, p in zip(self.plan.kernels, self.programs())}

        def launch(program: Program, arrays: dict[str, np.ndarray]) -> None:
            program = chosen[program.name]
            run(program, {p.name: as_storage(arrays[p.name]) for p in program.params
                          if p.name in arrays})

        return execute(self.plan, inputs, launch)
