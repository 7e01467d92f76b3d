"""What `pf.advise` needs of a CPU beyond its bandwidths, measured once and recorded
with the device description (`powerfusion probe`'s target file, key "calibration"):

  math_s        seconds per element of each pf_math.h function on one core, the array
                in L2: the arithmetic side of a kernel's roofline (`compute_seconds`)
  jit_call_s    one call of a pf.jit function of one 16-element kernel
  region_call_s one PowerFusion region called from a compiled torch graph: its lean
                function's argument checks, pool and launch (a 16-element kernel)
  region_slow_call_s  the same region called through Region.forward, as a region is
                that has no lean path (results it copies or fills, several signatures)
  graph_call_s  one compiled torch graph called beyond its regions: dynamo's guards,
                AOTAutograd's wrapper, the graph's Python code
  resume_s      what the first torch call after a library call (a matmul that swept
                the caches) costs beyond the same call made hot
  region_cold_call_s  the region's lean call right after a matmul
  graph_cold_call_s   graph_call_s right after a matmul, less dynamo's part:
  guard_s       dynamo's work per call of a module of one parameter, after a matmul,
  guard_per_tensor_s  and the more per further tensor it guards (parameters, inputs)
(all but the first two only where torch is installed).

The record names the CPU model and core count it was measured on; on another machine
it is not used (and measured again where asked). No figure in it comes from the model
being advised on.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path

import numpy as np

from ..codegen.math_header import math_header
from ..errors import UnsupportedError
from ..graph.ops import Op
from ..targets import detect_cpu
from .cpu import compile_shared
from .probe import _cores, cpu_model, default_path

KEY = "calibration"
ELEMENTS = 1 << 15                  # 128 KB of float32 in, as much out: L2-resident

# Op -> its pf_math.h function (float32), the ones whose arithmetic can outlast bytes
MATH_FUNCTIONS = {
    Op.EXP: "expf", Op.EXP2: "exp2f", Op.EXPM1: "expm1f", Op.LOG: "logf",
    Op.LOG1P: "log1pf", Op.LOG2: "log2f", Op.LOG10: "log10f", Op.TANH: "tanhf",
    Op.SIGMOID: "sigmoidf", Op.SILU: "siluf", Op.ERF: "erff", Op.GELU: "geluf",
    Op.GELU_TANH: "gelu_tanhf", Op.SIN: "sinf", Op.COS: "cosf", Op.TAN: "tanf",
    Op.RSQRT: "rsqrtf",
}


# a torch graph's, where torch is installed
CALLS = ("region_call_s", "region_slow_call_s", "graph_call_s", "resume_s",
         "region_cold_call_s", "graph_cold_call_s", "guard_s", "guard_per_tensor_s")


class CalibrationError(UnsupportedError):
    """A calibration record that cannot be read or does not describe this machine."""


def _math_library():
    lines = ["#include <stdint.h>", "#include <math.h>", math_header()]
    for name in MATH_FUNCTIONS.values():
        lines += [f"void run_{name}(const float *restrict x, float *restrict y, long n) {{",
                  "#pragma omp simd",
                  f"    for (long i = 0; i < n; i++) y[i] = pf_{name}(x[i]);", "}"]
    lib = ctypes.CDLL(str(compile_shared("\n".join(lines) + "\n", name="pf_calibrate_math")))
    for name in MATH_FUNCTIONS.values():
        getattr(lib, f"run_{name}").argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                                 ctypes.c_long]
    return lib


def best_of(fn, trials: int, min_s: float = 2e-3) -> float:
    """Seconds per call: the best of `trials` samples, each long enough to time (a
    constant of the machine: the samples another process disturbed are not it)."""
    fn()
    reps = 1
    while True:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        if time.perf_counter() - start >= min_s or reps >= 1 << 16:
            break
        reps *= 4
    samples = []
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        samples.append((time.perf_counter() - start) / reps)
    return min(samples)


def measure_math(trials: int = 15) -> dict[str, float]:
    """Seconds per float32 element of each pf_math function on one core."""
    lib = _math_library()
    rng = np.random.default_rng(0)
    out = {}
    for op, name in MATH_FUNCTIONS.items():
        x = (2.0 * rng.standard_normal(ELEMENTS)).astype(np.float32)
        if name.startswith("log") or name == "rsqrtf":
            x = np.abs(x) + np.float32(1e-3)
        y = np.empty_like(x)
        fn = getattr(lib, f"run_{name}")
        out[op.name.lower()] = best_of(lambda: fn(x.ctypes.data, y.ctypes.data, ELEMENTS),
                                        trials, min_s=1e-3) / ELEMENTS
    return out


def measure(measure_calls) -> dict:
    """The record: math measured here, the calls' figures by `measure_calls()`, a dict
    (the frontends live above this layer: `pf.advise` measures them)."""
    return {"cpu_model": cpu_model(), "cores": _cores(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_average": os.getloadavg(),
            "math_s": measure_math(), **measure_calls()}


def math_by_op(math_s: dict) -> dict[Op, float]:
    """measure_math's figures (by function name, as recorded) keyed by Op, as
    compute_seconds prices them."""
    return {Op[k.upper()]: float(v) for k, v in math_s.items()}


def _check(record) -> dict:
    if not isinstance(record, dict):
        raise CalibrationError(f"calibration: expected an object, got {type(record).__name__}")
    try:
        math_s = math_by_op(record["math_s"])
        checked = {"cpu_model": str(record["cpu_model"]), "cores": int(record["cores"]),
                   "math_s": math_s, "jit_call_s": float(record["jit_call_s"])}
        for name in CALLS:
            checked[name] = float(record[name]) if name in record else None
        # which glue the torch call figures were measured through ("native", "python")
        checked["torch_glue"] = str(record["torch_glue"]) if "torch_glue" in record else None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CalibrationError(f"calibration: malformed record ({type(e).__name__}: {e}); "
                               "run `powerfusion probe` again") from None
    return checked


def read(path: str | os.PathLike | None = None) -> dict | None:
    """The calibration recorded in the target file (Op-keyed math_s), or None when there
    is none or it was measured on another kind of machine. CalibrationError when the
    record is there but malformed."""
    path = Path(path) if path else default_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or KEY not in data:
        return None
    record = _check(data[KEY])
    if record["cpu_model"] != cpu_model() or record["cores"] != _cores():
        return None
    return record


def write(record: dict, path: str | os.PathLike | None = None) -> Path:
    """Record a calibration in the target file, beside what the probe wrote there (a
    file not yet probed gets the detected target's description)."""
    path = Path(path) if path else default_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = json.loads(detect_cpu().to_json())
    data[KEY] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def calibration(measure_calls, path: str | os.PathLike | None = None) -> dict:
    """This machine's calibration: read from the target file, or measured now (a few
    seconds; `measure` with measure_calls) and recorded there for next time."""
    record = read(path)
    if record is None:
        write(measure(measure_calls), path)
        record = read(path)
    return record
