"""Targets as data: what the passes and the cost model know about a device."""

from .target import MemoryLevel, Target, detect_cpu, shipped, shipped_names

__all__ = ["MemoryLevel", "Target", "detect_cpu", "get_target", "shipped", "shipped_names",
           "TARGETS", "SIMT_TARGETS"]

SIMT_TARGETS = ("cuda", "hip", "opencl")
TARGETS = ("cpu",) + SIMT_TARGETS


def get_target(name: str) -> Target:
    """The Target a jit target name compiles for."""
    from ..errors import UnsupportedError

    if name == "cpu":
        from .probe import measured_cpu     # probed bandwidths when `powerfusion probe` ran

        return measured_cpu()
    if name in SIMT_TARGETS:
        from ..runtime.simt_executable import simt_target

        return simt_target(name)
    raise UnsupportedError(f"target={name!r}: expected one of {', '.join(TARGETS)}")
