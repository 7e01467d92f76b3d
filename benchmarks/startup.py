"""How long a jitted function takes to get ready: cold, cached, and tuned.

For every case of the benchmark suite (benchmarks/suite.py), each in a fresh Python
process with its own empty cache directory:

- cold: the first call in a process with an empty cache (trace, plan, gcc, run);
- cached: the first call in a second new process on the same cache (trace and plan
  again, the binary comes from the disk cache);
- tune: the first call of `pf.jit(fn, tune=True)` in a third new process on a fresh
  cache (compile and time the cost model's top candidates, keep the winner).

Each figure is wall time of that first call, excluding Python and numpy start-up and
the import of powerfusion (reported separately). Inputs are the suite's full shapes.

    python -m benchmarks.startup [--cases softmax,layernorm] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import suite

_CHILD = """
import sys, time
t0 = time.perf_counter()
import powerfusion as pf
t1 = time.perf_counter()
from benchmarks import suite
case = suite.CASES[sys.argv[1]]
args = case.inputs(False)
f = pf.jit(case.fn, tune=sys.argv[2] == "tune")
t2 = time.perf_counter()
f(*args)
t3 = time.perf_counter()
print(f"{t1 - t0} {t3 - t2}")
"""


def _first_call(case: str, cache: str, mode: str) -> tuple[float, float]:
    env = dict(os.environ, POWERFUSION_CACHE_DIR=cache)
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _CHILD, case, mode], env=env, cwd=root,
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="", help="comma-separated names (default: all)")
    parser.add_argument("--out", default=str(suite.RESULTS_DIR))
    args = parser.parse_args(argv)
    rows = []
    print(f"{'case':16s} {'import s':>8s} {'cold s':>7s} {'cached s':>8s} {'tune s':>7s}")
    for case in suite.select(args.cases):
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as tuned:
            imp, cold = _first_call(case.name, cache, "plain")
            _, cached = _first_call(case.name, cache, "plain")
            _, tune = _first_call(case.name, tuned, "tune")
        rows.append({"case": case.name, "import_s": imp, "cold_s": cold, "cached_s": cached,
                     "tune_s": tune})
        print(f"{case.name:16s} {imp:8.2f} {cold:7.2f} {cached:8.3f} {tune:7.2f}", flush=True)
    date = datetime.date.today().isoformat()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    worst = max(r["cached_s"] for r in rows)
    summary = {"max_cached_s": worst, "max_cold_s": max(r["cold_s"] for r in rows),
               "max_tune_s": max(r["tune_s"] for r in rows)}
    (out / f"startup-cpu-{date}.json").write_text(json.dumps(
        {"date": date, "summary": summary, "cases": rows}, indent=1))
    print(f"slowest cached first call: {worst:.3f} s (goal < 0.5 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
