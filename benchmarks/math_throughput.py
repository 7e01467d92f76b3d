"""Throughput of pf_math.h's float32 functions against ATen's, on one core.

Each pf_math function runs in a `#pragma omp simd` loop built with the CPU backend's
own flags; ATen's counterpart runs through torch with one intra-op thread, writing
into a preallocated tensor where torch has an `out=` form. The arrays (1 MiB each)
stay in L2 (inputs 2 N(0, 1), log's uniform in (0, 10)), so the figures are compute throughput, not memory traffic: what decides
whether an element-wise kernel with a transcendental is bound by memory or by math.
Samples are interleaved; figures are medians in ns per element.

    python -m benchmarks.math_throughput [--repeats 15] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from powerfusion.benchmarking import format_table, interleaved, median_s
from powerfusion.codegen.math_header import math_header
from powerfusion.runtime.cpu import DEFAULT_FLAGS
from powerfusion.runtime.probe import cpu_model

N = 1 << 18

# pf_math function -> the ATen call on (x, out) it stands for
ATEN = {
    "expf": lambda torch, x, y: torch.exp(x, out=y),
    "tanhf": lambda torch, x, y: torch.tanh(x, out=y),
    "erff": lambda torch, x, y: torch.erf(x, out=y),
    "sigmoidf": lambda torch, x, y: torch.sigmoid(x, out=y),
    "logf": lambda torch, x, y: torch.log(x, out=y),
    "geluf": lambda torch, x, y: torch.nn.functional.gelu(x),
    "gelu_tanhf": lambda torch, x, y: torch.nn.functional.gelu(x, approximate="tanh"),
    "siluf": lambda torch, x, y: torch.nn.functional.silu(x),
}
# activations are near N(0, 1); log needs positive inputs


def _inputs(name: str, rng) -> np.ndarray:
    if name == "logf":
        return rng.uniform(1e-3, 10.0, N).astype(np.float32)
    return (2.0 * rng.standard_normal(N)).astype(np.float32)


def _library(names: list[str], work: Path) -> ctypes.CDLL:
    (work / "pf_math.h").write_text(math_header())
    lines = ['#include <stdint.h>', '#include "pf_math.h"']
    for name in names:
        lines += [f"void run_{name}(const float *restrict x, float *restrict y, long n) {{",
                  "#pragma omp simd", f"    for (long i = 0; i < n; i++) y[i] = pf_{name}(x[i]);",
                  "}"]
    (work / "math.c").write_text("\n".join(lines) + "\n")
    gcc = shutil.which("gcc") or "gcc"
    subprocess.run([gcc, *DEFAULT_FLAGS, "-o", "math.so", "math.c"], cwd=work, check=True)
    lib = ctypes.CDLL(str(work / "math.so"))
    for name in names:
        getattr(lib, f"run_{name}").argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    return lib


def measure(repeats: int) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    names = list(ATEN)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lib = _library(names, Path(tmp))
        for name in names:
            x = _inputs(name, rng)
            y = np.empty_like(x)
            xt, yt = torch.from_numpy(x.copy()), torch.empty(N)
            fn = getattr(lib, f"run_{name}")
            samples = interleaved({
                "pf_math": lambda: fn(x.ctypes.data, y.ctypes.data, N),
                "aten": lambda: ATEN[name](torch, xt, yt),
            }, repeats=repeats, min_sample_s=5e-3)
            pf_ns, aten_ns = (1e9 * median_s(samples[k]) / N for k in ("pf_math", "aten"))
            rows.append({"function": name, "pf_ns_per_elem": pf_ns, "aten_ns_per_elem": aten_ns,
                         "aten_over_pf": aten_ns / pf_ns})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None,
                    help="write math-throughput-cpu-DATE.json and .md into this folder")
    args = ap.parse_args(argv)
    import torch

    rows = measure(args.repeats)
    table = format_table(["function", "pf_math ns/elem", "ATen ns/elem", "ATen / pf_math"],
                         [[r["function"], f"{r['pf_ns_per_elem']:.3f}",
                           f"{r['aten_ns_per_elem']:.3f}", f"{r['aten_over_pf']:.2f}x"]
                          for r in rows])
    load = os.getloadavg()
    info = {"benchmark": "math_throughput", "date": datetime.date.today().isoformat(),
            "cpu": cpu_model(), "torch": torch.__version__, "elements": N, "threads": 1,
            "load_average": load, "rows": rows}
    print(table)
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"math-throughput-cpu-{info['date']}"
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        stem.with_suffix(".md").write_text(
            f"# pf_math.h against ATen, one core ({info['date']})\n\n{info['cpu']}, torch "
            f"{info['torch']}, {N} float32 elements (L2-resident), interleaved medians; "
            f"load average {load[0]:.2f}. `python -m benchmarks.math_throughput`.\n\n"
            f"{table}\n")


if __name__ == "__main__":
    main()
