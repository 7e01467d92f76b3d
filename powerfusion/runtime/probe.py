"""`powerfusion probe`: measure this CPU's bandwidth at each memory level.

Three working sets, each streamed by a small generated C + OpenMP kernel on every
core (a copy, counted as bytes read + bytes written, over the time it took):

  GLOBAL    DRAM: a copy far larger than the last-level cache (default 256 MB moved
            per pass: 128 MB read, 128 MB written), split over the threads.
  LOCAL     a per-core working set of half the L2 cache, copied back and forth
            many times: the bandwidth of a core's cache-resident tile.
  REGISTER  a per-core working set of 16 KB (L1): the nearest stand-in on a CPU for
            the register level the target describes.

numpy's single-threaded copy of the DRAM working set is measured too, for
reference. The results are written as a Target file (`Target.with_bandwidths` on
the detected CPU) that `measured_cpu()` reads back.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..benchmarking import format_table
from ..gir.ir import Level
from ..targets import Target, detect_cpu
from .cache import cache_dir
from .cpu import compile_shared

FILE_NAME = "target-cpu.json"
DRAM_BYTES = 256 << 20          # bytes moved per pass of the DRAM copy (read + write)
L1_BYTES = 16 << 10             # per-core working set standing in for REGISTER

# Each thread copies its own `half`-byte block to a second block and back, `reps`
# times, between two barriers; args: [0] int64 {bytes per thread, reps, mode},
# [1] double {seconds from the first barrier to the last, then each thread's own}. Mode 0 copies with memcpy (what a tensor copy does: for
# large blocks the C library uses streaming stores), mode 1 with a vector loop
# that scales by a runtime 1.0 (loads and stores through the cache: how a kernel
# streams a cache-resident tile). The empty asm with a memory clobber keeps the
# compiler from merging or dropping the repeated copies.
_SOURCE = r"""
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void scaled_copy(float *restrict dst, const float *restrict src, size_t n, float s) {
    #pragma omp simd aligned(dst, src: 64)
    for (size_t i = 0; i < n; i++) dst[i] = src[i] * s;
}

void pf_probe_copy(void **args) {
    const int64_t *params = (const int64_t *)args[0];
    double *seconds = (double *)args[1];
    const size_t bytes = (size_t)params[0];          /* working set per thread */
    const int64_t reps = params[1];
    const int64_t mode = params[2];
    const float one = (float)(params[3]);             /* 1, unknown to the compiler */
    const size_t half = (bytes / 2 + 63) & ~(size_t)63;
    const size_t n = half / sizeof(float);
    double start = 0.0, stop = 0.0;
    int failed = 0;
    #pragma omp parallel reduction(|:failed)
    {
        const int t = omp_get_thread_num();
        float *a = (float *)aligned_alloc(64, half);
        float *b = (float *)aligned_alloc(64, half);
        if (a && b) {
            memset(a, 0, half);                       /* first touch, by this core */
            memset(b, 0, half);
            memcpy(b, a, half);                       /* warm the caches and the TLB */
        } else {
            failed = 1;
        }
        #pragma omp barrier
        #pragma omp master
        start = omp_get_wtime();
        const double mine = omp_get_wtime();
        if (a && b) {
            for (int64_t r = 0; r < reps; r++) {
                float *dst = (r & 1) ? a : b, *src = (r & 1) ? b : a;
                if (mode == 0) memcpy(dst, src, half); else scaled_copy(dst, src, n, one);
                __asm__ volatile("" ::: "memory");
            }
        }
        seconds[1 + t] = omp_get_wtime() - mine;   /* this thread alone */
        #pragma omp barrier
        #pragma omp master
        stop = omp_get_wtime();
        free(a);
        free(b);
    }
    seconds[0] = failed ? -1.0 : stop - start;
}

int pf_probe_threads(void) { return omp_get_max_threads(); }
"""


@dataclass(frozen=True)
class Measurement:
    level: str                  # "global", "local", "register" or "numpy copy"
    working_set: int            # bytes (per thread for the cache levels, in all for DRAM)
    bandwidth: float            # bytes/s, read + write, all threads
    threads: int
    what: str


class _Kernel:
    def __init__(self):
        lib = ctypes.CDLL(str(compile_shared(_SOURCE, name="pf_probe")))
        self._copy = lib.pf_probe_copy
        self._copy.restype = None
        self._copy.argtypes = [ctypes.c_void_p]
        lib.pf_probe_threads.restype = ctypes.c_int
        self.threads = int(lib.pf_probe_threads())
        self._ctypes = ctypes

    def run(self, bytes_per_thread: int, reps: int, mode: int = 0) -> float:
        """Seconds for `reps` copies of half of the working set, on every thread
        (mode 0: memcpy, 1: a vector loop through the cache)."""
        ctypes = self._ctypes
        params = np.array([bytes_per_thread, reps, mode, 1], dtype=np.int64)
        out = np.zeros(1 + self.threads, dtype=np.float64)
        args = (ctypes.c_void_p * 2)(params.ctypes.data, out.ctypes.data)
        self._copy(args)
        if out[0] < 0:
            raise MemoryError(f"probe: cannot allocate {bytes_per_thread} bytes per thread")
        self.last_per_thread = out[1:].copy()
        return float(out[0])

    def bandwidth(self, bytes_per_thread: int, *, trial_s: float, trials: int,
                  mode: int = 0, private: bool = False) -> float:
        """Bytes/s on all threads: best of `trials` runs of about `trial_s` each.

        A shared level (DRAM) is timed from a common start to a common end. A private
        one (a core's cache) is timed per thread and the best rate of each thread is
        summed: on a machine shared with other processes, a thread descheduled for
        a while then spoils only its own samples, not the others'.
        """
        half = (bytes_per_thread // 2 + 63) & ~63
        reps = 2
        elapsed = self.run(bytes_per_thread, reps, mode)
        while elapsed < trial_s / 4 and reps < 1 << 30:       # calibrate
            reps *= max(2, min(64, int(trial_s / max(elapsed, 1e-7) / 2)))
            elapsed = self.run(bytes_per_thread, reps, mode)
        reps = max(reps, int(reps * trial_s / max(elapsed, 1e-9)))
        best_all, best_each = math.inf, np.full(self.threads, math.inf)
        for _ in range(trials):
            best_all = min(best_all, self.run(bytes_per_thread, reps, mode))
            best_each = np.minimum(best_each, self.last_per_thread)
        moved = 2 * half * reps
        if private:
            return float(np.sum(moved / np.maximum(best_each, 1e-12)))
        return moved * self.threads / best_all


def _l2_bytes() -> int:
    return detect_cpu().capacity(Level.LOCAL) * 2      # the target keeps half of L2


def numpy_copy_bandwidth(nbytes: int = DRAM_BYTES, trials: int = 5) -> float:
    """numpy's (single-threaded) copy of nbytes/2 into another nbytes/2, in bytes/s."""
    src = np.ones(nbytes // 2 // 4, dtype=np.float32)
    dst = np.zeros_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def copy_bandwidth(nbytes: int = DRAM_BYTES, trials: int = 5) -> float:
    """Bytes/s of a large copy on every core (read + write): the DRAM roofline."""
    kernel = _Kernel()
    per_thread = max(nbytes // kernel.threads, 1 << 20)
    return kernel.bandwidth(per_thread, trial_s=0.02, trials=trials)


def measure(dram_bytes: int = DRAM_BYTES, quick: bool = False) -> list[Measurement]:
    """Bandwidth of DRAM, a per-core half-L2 working set and a 16 KB one."""
    kernel = _Kernel()
    t = kernel.threads
    trials = 3 if quick else 7
    per_thread = max(dram_bytes // t, 1 << 20)
    dram = kernel.bandwidth(per_thread, trial_s=0.02, trials=trials)
    l2 = _l2_bytes()
    # short trials, many of them: the best ones ran undisturbed
    local = kernel.bandwidth(l2 // 2, trial_s=0.004, trials=4 * trials, mode=1, private=True)
    l1 = kernel.bandwidth(L1_BYTES, trial_s=0.004, trials=4 * trials, mode=1, private=True)
    return [
        Measurement("global", per_thread * t, dram, t,
                    f"copy of {per_thread * t // 2 >> 20} MB on {t} threads"),
        Measurement("local", l2 // 2, local, t,
                    f"per-core {l2 // 2 >> 10} KB working set (half of L2), copied in cache"),
        Measurement("register", L1_BYTES, l1, t,
                    f"per-core {L1_BYTES >> 10} KB working set (L1), copied in cache"),
        Measurement("numpy copy", per_thread * t, numpy_copy_bandwidth(per_thread * t,
                                                                       trials), 1,
                    "np.copyto, one thread (reference)"),
    ]


def default_path() -> Path:
    """`$POWERFUSION_CACHE_DIR` (or ~/.cache/powerfusion) / target-cpu.json."""
    return cache_dir() / FILE_NAME


def cpu_model() -> str:
    """The CPU's name, with what tells apart machines a cloud names alike ("AMD EPYC"
    is a Zen 1 with AVX2 on one host, a Zen 4 with AVX-512 on the next): on x86 the
    family, model and widest vector extension. A target probed on one is not the
    other's, nor are its timings."""
    try:
        info = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
            if not line.strip():
                break                                   # the first processor is enough
    except OSError:
        info = {}
    name = info.get("model name")
    if not name:
        return platform.processor() or platform.machine()
    if "cpu family" not in info:
        return name
    flags = set(info.get("flags", "").split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    return f"{name} (family {info['cpu family']} model {info.get('model', '?')}, {isa})"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def probed_target(results: list[Measurement]) -> Target:
    by_level = {m.level: m.bandwidth for m in results}
    return detect_cpu().with_bandwidths(
        {lv: by_level[lv.value] for lv in Level if lv.value in by_level})


def write_target(results: list[Measurement], path: str | os.PathLike | None = None) -> Path:
    """The probed Target as JSON, plus a `probe` record (ignored by Target.from_json)."""
    path = Path(path) if path else default_path()
    data = json.loads(probed_target(results).to_json())
    data["probe"] = {
        "cpu_model": cpu_model(), "cores": _cores(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "measurements": [{"level": m.level, "working_set": m.working_set,
                          "bandwidth": m.bandwidth, "threads": m.threads, "what": m.what}
                         for m in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def measured_cpu(path: str | os.PathLike | None = None) -> Target:
    """This CPU with the bandwidths `powerfusion probe` measured, when its file exists
    and was written on this kind of machine (same CPU model and core count); else
    `detect_cpu()`. Capacities always come from the machine, bandwidths from the file.
    Cheap to call often: the file is read again only when it changes."""
    path = Path(path) if path else default_path()
    try:
        stamp = path.stat()
    except OSError:
        return detect_cpu()
    return _measured(str(path), stamp.st_mtime_ns, stamp.st_size)


@functools.lru_cache(maxsize=8)
def _measured(path: str, _mtime_ns: int, _size: int) -> Target:
    detected = detect_cpu()
    try:
        text = Path(path).read_text()
        probed = Target.from_json(text)
        record = json.loads(text).get("probe", {})
        cores = int(record.get("cores", detected.cores))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return detected
    if record.get("cpu_model", cpu_model()) != cpu_model() or cores != detected.cores:
        return detected
    return detected.with_bandwidths(
        {m.level: m.bandwidth for m in probed.memory if m.bandwidth > 0})


def format_results(results: list[Measurement]) -> str:
    rows = []
    for m in results:
        ws = (f"{m.working_set / (1 << 20):.0f} MB" if m.working_set >= 1 << 20
              else f"{m.working_set >> 10} KB/core")
        rows.append([m.level, ws, f"{m.bandwidth / 1e9:.1f}", str(m.threads), m.what])
    return format_table(["level", "working set", "GB/s", "threads", "how"], rows, "lrrrl")
