"""pf_geluf (and pf_erff) of two pf_math.h versions against ATen's GELU / erf, on one core.

The header at a base commit and the working tree's are each compiled into a `#pragma
omp simd` loop with the CPU backend's flags; ATen runs with one intra-op thread, writing
into a preallocated tensor. 2^18 float32 inputs 2 N(0, 1) (L2-resident). Samples are CPU
time of this thread (`time.thread_time`: a loaded machine's wall time is the scheduler's),
interleaved in rounds; figures are medians in ns per element.

    OMP_NUM_THREADS=1 python -m benchmarks.gelu_ab [--base HEAD] [--repeats 21]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from powerfusion.benchmarking import format_table
from powerfusion.codegen.math_header import math_header
from powerfusion.runtime.cpu import DEFAULT_FLAGS
from powerfusion.runtime.probe import cpu_model

N = 1 << 18
FUNCTIONS = ("geluf", "erff")


def _library(header: str, work: Path) -> ctypes.CDLL:
    work.mkdir()
    (work / "pf_math.h").write_text(header)
    lines = ['#include "pf_math.h"']
    for name in FUNCTIONS:
        lines += [f"void run_{name}(const float *restrict x, float *restrict y, long n) {{",
                  "#pragma omp simd", f"    for (long i = 0; i < n; i++) y[i] = pf_{name}(x[i]);",
                  "}"]
    (work / "f.c").write_text("\n".join(lines) + "\n")
    subprocess.run([shutil.which("gcc") or "gcc", *DEFAULT_FLAGS, "-o", "f.so", "f.c"],
                   cwd=work, check=True)
    lib = ctypes.CDLL(str(work / "f.so"))
    for name in FUNCTIONS:
        getattr(lib, f"run_{name}").argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    return lib


def _sample_ns(fn, calls: int) -> float:
    t0 = time.thread_time_ns()
    for _ in range(calls):
        fn()
    return (time.thread_time_ns() - t0) / calls / N


def measure(base: str, repeats: int) -> dict[str, dict[str, float]]:
    import torch

    torch.set_num_threads(1)
    x = (2.0 * np.random.default_rng(0).standard_normal(N)).astype(np.float32)
    y = np.empty_like(x)
    xt, yt = torch.from_numpy(x.copy()), torch.empty(N)
    old = subprocess.run(["git", "show", f"{base}:powerfusion/codegen/pf_math.h"],
                         capture_output=True, text=True, check=True).stdout
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        libs = {"base": _library(old, Path(tmp) / "base"),
                "new": _library(math_header(), Path(tmp) / "new")}
        aten = {"geluf": lambda: torch._C._nn.gelu(xt, out=yt),
                "erff": lambda: torch.erf(xt, out=yt)}
        for name in FUNCTIONS:
            cands = {k: (lambda f=getattr(lib, f"run_{name}"): f(x.ctypes.data, y.ctypes.data, N))
                     for k, lib in libs.items()}
            cands["aten"] = aten[name]
            for fn in cands.values():          # warm up
                fn()
            samples = {k: [] for k in cands}
            keys = list(cands)
            for r in range(repeats):
                for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                    samples[k].append(_sample_ns(cands[k], 8))
            out[name] = {k: statistics.median(v) for k, v in samples.items()}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD")
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args(argv)
    res = measure(args.base, args.repeats)
    print(format_table(["function", "base ns/elem", "new ns/elem", "ATen ns/elem",
                        "base / new", "ATen / new"],
                       [[k, f"{v['base']:.3f}", f"{v['new']:.3f}", f"{v['aten']:.3f}",
                         f"{v['base'] / v['new']:.2f}x", f"{v['aten'] / v['new']:.2f}x"]
                        for k, v in res.items()]))
    load = os.getloadavg()
    print(f"{cpu_model()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
