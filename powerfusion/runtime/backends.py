"""The jit targets by name, as this machine runs them: the Target each plans for (with
the limits and bandwidths measured here), the code it prints, the executable that
runs it (the executable contract: execute.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedError
from ..targets import SIMT_TARGETS, TARGETS, Target
from .cpu_executable import Executable, generate_source
from .probe import measured_cpu
from .simt_executable import compile_plan_simt, simt_module, simt_target


def get_target(name: str) -> Target:
    """The Target a jit target name compiles for."""
    if name == "cpu":
        return measured_cpu()       # probed bandwidths when `powerfusion probe` ran
    if name in SIMT_TARGETS:
        return simt_target(name)
    raise UnsupportedError(f"target={name!r}: expected one of {', '.join(TARGETS)}")


@dataclass(frozen=True)
class _CSource:
    source: str


def printed(plan, dialect: str):
    """The plan's code: its `.source` is what the tuning database is keyed by (a SIMT
    module, which the SIMT runtimes take as it is)."""
    if dialect == "cpu":
        return _CSource(generate_source(plan))
    return simt_module(plan, dialect)


def executable(plan, dialect: str, code, pool=None):
    """The plan's executable for dialect, from its printed code (on the CPU, its
    arrays from pool where given: a runtime.execute.BufferPool)."""
    if dialect == "cpu":
        return Executable(plan, code.source, pool)
    return compile_plan_simt(plan, dialect, code)
