"""Targets as data: what the passes and the cost model know about a device.

The runtime resolves a target name on this machine (runtime/backends.get_target).
"""

from .target import MemoryLevel, Target, detect_cpu, shipped, shipped_names

__all__ = ["MemoryLevel", "Target", "detect_cpu", "shipped", "shipped_names",
           "TARGETS", "SIMT_TARGETS"]

SIMT_TARGETS = ("cuda", "hip", "opencl")     # the SIMT dialects: one name per printer
TARGETS = ("cpu",) + SIMT_TARGETS
