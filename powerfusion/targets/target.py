"""A Target is data: parallel levels and memory levels, with capacities and bandwidths.

The passes read capacities (what fits on chip); the cost model reads bandwidths.
Nothing here is code that runs on the target.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..gir.ir import Level


@dataclass(frozen=True)
class MemoryLevel:
    level: Level
    capacity: int           # bytes per unit that shares it (per core for LOCAL)
    bandwidth: float        # bytes/s, whole device
    shared_by: str          # the parallel level that shares one instance


@dataclass(frozen=True)
class Target:
    name: str
    family: str             # "cpu" | "simt"
    cores: int
    simd_bytes: int
    memory: tuple[MemoryLevel, ...] = field(default=())

    def capacity(self, level: Level) -> int:
        for m in self.memory:
            if m.level is level:
                return m.capacity
        raise KeyError(level)


def _read_int(path: str, default: int) -> int:
    try:
        text = Path(path).read_text().strip().upper()
    except OSError:
        return default
    scale = 1024 if text.endswith("K") else 1024 * 1024 if text.endswith("M") else 1
    try:
        return int(text.rstrip("KM")) * scale
    except ValueError:
        return default


@functools.cache
def detect_cpu() -> Target:
    """This machine as a CPU target: cores from the OS, SIMD width and caches from sysfs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    simd = 64 if " avx512f" in flags else 32 if " avx2" in flags else 16
    cache = "/sys/devices/system/cpu/cpu0/cache"
    l2 = 512 * 1024
    for idx in range(4):
        if _read_int(f"{cache}/index{idx}/level", 0) == 2:
            l2 = _read_int(f"{cache}/index{idx}/size", l2)
    return Target(
        name="cpu", family="cpu", cores=cores or 1, simd_bytes=simd,
        memory=(
            MemoryLevel(Level.GLOBAL, 1 << 40, 20e9, "device"),
            # a core's tile must leave room in L2 for what streams through it
            MemoryLevel(Level.LOCAL, l2 // 2, 200e9, "core"),
            MemoryLevel(Level.REGISTER, 32 * simd, 2e12, "lane"),
        ))
