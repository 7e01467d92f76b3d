"""A Target is data: parallel levels and memory levels, with capacities and bandwidths.

The passes read capacities (what fits on chip); the cost model reads bandwidths.
Nothing here is code that runs on the target.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field, replace
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
    # a CPU core's L1 data cache, in bytes; 0 where LOCAL memory is a scratchpad (GPUs).
    # Beyond it a copy kept on chip lives in L2 beside its source, so re-reading the
    # source costs no more than reading the copy, and the copy's stores are wasted.
    l1_bytes: int = 0
    # instruction-set extensions the code generator may use beyond the SIMD width
    # (CPU: "avx512_bf16" converts 16 float32 to bfloat16 in one instruction)
    features: tuple[str, ...] = ()
    # bytes of registers a unit (GPU block) may give to the rows it keeps on chip,
    # beyond LOCAL memory: a SIMT thread holds its part of a row in registers and the
    # rest in shared memory, so together they hold rows neither holds alone. 0 on a CPU.
    row_register_bytes: int = 0
    # blocks of a thread block cluster (CUDA sm_90): a row too long for one block's
    # registers and shared memory spreads over this many, which pool their partial
    # reductions through distributed shared memory. 1: no clusters.
    cluster_blocks: int = 1
    # SIMT: threads of a warp (blocks are multiples of it, shuffles reduce within it)
    # and the most threads a block may have on this device; 1 on a CPU
    warp: int = 1
    max_block: int = 1
    # the printer family's dialect this target is compiled in: "c", "cuda", "hip", "opencl"
    dialect: str = "c"
    # shared memory per block the generated code keeps for itself (reduction scratch,
    # the alignment of each LOCAL array), already taken off LOCAL's capacity
    reserved_shared: int = 0

    @property
    def row_bytes(self) -> int:
        """What the rows a unit (one block) keeps on chip may take: LOCAL and registers."""
        return self.capacity(Level.LOCAL) + self.row_register_bytes

    @property
    def cluster_row_bytes(self) -> int:
        """What they may take spread over a thread block cluster's blocks."""
        return self.row_bytes * self.cluster_blocks

    @property
    def near_bytes(self) -> int:
        """The on-chip memory nearest a core: its L1 data cache on a CPU, else LOCAL."""
        return self.l1_bytes or self.capacity(Level.LOCAL)

    def capacity(self, level: Level) -> int:
        return self.memory_level(level).capacity

    def bandwidth(self, level: Level) -> float:
        return self.memory_level(level).bandwidth

    def memory_level(self, level: Level) -> MemoryLevel:
        for m in self.memory:
            if m.level is level:
                return m
        raise KeyError(level)

    def to_json(self) -> str:
        data = {"name": self.name, "family": self.family, "cores": self.cores,
                "simd_bytes": self.simd_bytes, "l1_bytes": self.l1_bytes,
                "features": list(self.features), "cluster_blocks": self.cluster_blocks,
                "warp": self.warp, "max_block": self.max_block, "dialect": self.dialect,
                "reserved_shared": self.reserved_shared,
                "row_register_bytes": self.row_register_bytes,
                "memory": [{"level": m.level.value, "capacity": m.capacity,
                            "bandwidth": m.bandwidth, "shared_by": m.shared_by}
                           for m in self.memory]}
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Target":
        d = json.loads(text)
        return cls(d["name"], d["family"], int(d["cores"]), int(d["simd_bytes"]), tuple(
            MemoryLevel(Level(m["level"]), int(m["capacity"]), float(m["bandwidth"]),
                        m["shared_by"]) for m in d["memory"]), int(d.get("l1_bytes", 0)),
                   tuple(d.get("features", ())), int(d.get("row_register_bytes", 0)),
                   int(d.get("cluster_blocks", 1)), int(d.get("warp", 1)),
                   int(d.get("max_block", 1)), d.get("dialect", "c"),
                   int(d.get("reserved_shared", 0)))

    def with_bandwidths(self, measured: dict[Level, float]) -> "Target":
        """The same target with measured bandwidths (from `powerfusion probe`)."""
        return replace(self, memory=tuple(
            replace(m, bandwidth=measured.get(m.level, m.bandwidth)) for m in self.memory))


KNOWN_FEATURES = ("avx512_bf16",)      # the ones some pass makes use of


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


def shipped(name: str) -> Target:
    """A device description shipped with PowerFusion (targets/devices/NAME.json)."""
    path = Path(__file__).with_name("devices") / f"{name}.json"
    return Target.from_json(path.read_text())


def shipped_names() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).with_name("devices")).glob("*.json"))


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
    l1, l2 = 32 * 1024, 512 * 1024
    for idx in range(4):
        level = _read_int(f"{cache}/index{idx}/level", 0)
        if level == 1 and Path(f"{cache}/index{idx}/type").exists() \
                and Path(f"{cache}/index{idx}/type").read_text().strip() == "Data":
            l1 = _read_int(f"{cache}/index{idx}/size", l1)
        elif level == 2:
            l2 = _read_int(f"{cache}/index{idx}/size", l2)
    return Target(
        name="cpu", family="cpu", cores=cores or 1, simd_bytes=simd,
        memory=(
            MemoryLevel(Level.GLOBAL, 1 << 40, 20e9, "device"),
            # a core's tile must leave room in L2 for what streams through it
            MemoryLevel(Level.LOCAL, l2 // 2, 200e9, "core"),
            MemoryLevel(Level.REGISTER, 32 * simd, 2e12, "lane"),
        ),
        l1_bytes=l1, features=tuple(f for f in KNOWN_FEATURES if f" {f} " in flags + " "))
