"""What torch.compile(backend="powerfusion") adds to a kernel's own time, per call.

A function whose one region is a tiny kernel (GELU then a scale, on 8 x 64 floats:
the kernel itself takes about a microsecond) is timed at four depths, interleaved,
one thread:

- kernel: the compiled C function called with ready pointers (ctypes);
- native: the native glue's Launch for the region, what the graph calls from its
  second call on where the glue builds (the arguments' shapes and strides checked,
  pooled outputs taken, pointers passed, the launch: one C++ call);
- lean: the same as a generated Python function (the fallback, and
  POWERFUSION_NATIVE_GLUE=0);
- region: the Region module's own path (`Region.forward`: what the first call and
  any other signature take);
- compiled: the whole torch.compile'd call (dynamo's guards and AOTAutograd's wrapper
  around the graph: PyTorch's part, the same for every backend);
- inductor and eager: the same function under Inductor and without compiling.

"native - kernel" (or "lean - kernel" without the native glue) is PowerFusion's
per-kernel overhead in a model.

    python -m benchmarks.torch_overhead [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import warnings
from pathlib import Path


def measure(repeats: int) -> dict:
    import torch

    import powerfusion.frontend.torch_backend as tb
    from powerfusion.benchmarking import interleaved
    from powerfusion.frontend.torch_backend import Region
    from powerfusion.frontend.torch_backend import native
    from powerfusion.frontend.torch_backend.launcher import lean_function, native_lean

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")

    def fn(x):
        return torch.nn.functional.gelu(x) * 2.0

    x = torch.randn(8, 64)
    regions = []
    original = tb.partition

    def spying(gm, label="graph"):
        out = original(gm, label)
        regions.extend(m for m in out.modules() if isinstance(m, Region))
        return out

    tb.partition = spying
    try:
        torch._dynamo.reset()
        compiled = torch.compile(fn, backend="powerfusion")
        compiled(x)
    finally:
        tb.partition = original
    (region,) = regions
    (launch,) = [c.cpu_launch for c in region.cache.values()]
    (function, array, _slots), = launch.launches
    out = torch.empty(8, 64)
    pointers = array(x.data_ptr(), out.data_ptr())
    inductor = torch.compile(fn)
    inductor(x)
    glue = native.module()
    calls = {"kernel": lambda: function(pointers)}
    if glue is not None:
        launch = native_lean(region, glue.Pool(), glue)
        calls["native"] = lambda: launch(x)
    lean = lean_function(region)
    samples = interleaved(calls | {
        "lean": lambda: lean(x),
        "region": lambda: region(x),
        "compiled": lambda: compiled(x),
        "inductor": lambda: inductor(x),
        "eager": lambda: fn(x),
    }, repeats=repeats, min_sample_s=0.02)
    us = {k: 1e6 * statistics.median(v) for k, v in samples.items()}
    glue_us = us.get("native", us["lean"])
    return {"median_us": us, "overhead_per_region_us": glue_us - us["kernel"],
            "python_lean_overhead_us": us["lean"] - us["kernel"],
            "region_forward_overhead_us": us["region"] - us["kernel"],
            "torch_compile_wrapper_us": us["compiled"] - glue_us}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None,
                    help="write torch-overhead-cpu-DATE.json into this folder")
    args = ap.parse_args(argv)
    from powerfusion.runtime.probe import cpu_model

    result = measure(args.repeats)
    us = result["median_us"]
    print("  ".join(f"{k} {v:.2f} us" for k, v in us.items()))
    print(f"PowerFusion per region: {result['overhead_per_region_us']:.2f} us over the "
          f"kernel (native glue where it builds; the Python lean function "
          f"{result['python_lean_overhead_us']:.2f} us; Region.forward "
          f"{result['region_forward_overhead_us']:.2f} us); dynamo + AOTAutograd around "
          f"the graph: "
          f"{result['torch_compile_wrapper_us']:.2f} us")
    if args.out:
        date = datetime.date.today().isoformat()
        info = {"benchmark": "torch_overhead", "date": date, "cpu": cpu_model(),
                "load_average": os.getloadavg(), **result}
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"torch-overhead-cpu-{date}.json"
        path.write_text(json.dumps(info, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
