"""Rows interleaved or one at a time (passes/interleave.py), per suite case.

Each row-reduction case of the suite is planned three ways: rows one at a time, rows
interleaved (both forced through the candidate's `interleave` knob), and the cost
model's own pick (interleaved where it prices the kernel's arithmetic at 1.5x its memory
time or more, search/space.py). The three are timed interleaved, medians, each ratio
with its noise band (5th-95th percentile over bootstrap resamples of the rounds).

    python -m benchmarks.interleave_ab
    python -m benchmarks.interleave_ab --cases softmax,softmax_bf16 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

from benchmarks.suite import CASES, machine_info
from powerfusion.benchmarking import format_table, interleaved, ratio_band
from powerfusion.frontend.tracing import trace
from powerfusion.runtime.backends import executable, get_target, printed
from powerfusion.search.plan import Candidate
from powerfusion.search.space import plan_graph

ROW_CASES = ("softmax", "softmax_gpt2", "layernorm", "layernorm_vit", "add_layernorm",
             "masked_softmax", "softmax_bf16", "layernorm_bf16")


def _runner(plan, args):
    exe = executable(plan, "cpu", printed(plan, "cpu"))
    return lambda: exe.run(args)


def measure(name: str, repeats: int) -> dict:
    case = CASES[name]
    args = case.inputs(False)
    graph, _ = trace(case.fn, args)
    strides = [tuple(s // a.itemsize for s in a.strides) for a in args]
    target = get_target("cpu")
    plans = {label: plan_graph(graph, strides, target, choice)
             for label, choice in (("one at a time", Candidate(interleave=False)),
                                   ("interleaved", Candidate(interleave=True)),
                                   ("model", None))}
    applies = any(ck.interleaved for ck in plans["interleaved"].kernels)
    samples = interleaved({label: _runner(p, args) for label, p in plans.items()}, repeats)
    med = {label: statistics.median(s) for label, s in samples.items()}
    return {
        "case": name, "shape": "x".join(map(str, args[0].shape)), "dtype": case.dtype,
        "applies": applies,
        "model_interleaves": any(ck.interleaved for ck in plans["model"].kernels),
        "median_ms": {label: 1e3 * v for label, v in med.items()},
        "interleaved_speedup": med["one at a time"] / med["interleaved"],
        "band_5_95": ratio_band(samples["one at a time"], samples["interleaved"]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(ROW_CASES))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    names = args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"--cases: unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}",
              file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    rows = []
    header = ["case", "dtype", "shape", "one at a time ms", "interleaved ms", "model ms",
              "interleaved speedup", "band 5-95", "model interleaves"]
    table = []
    for name in names:
        r = measure(name, args.repeats)
        rows.append(r)
        m = r["median_ms"]
        table.append([name, r["dtype"], r["shape"], f"{m['one at a time']:.3f}",
                      f"{m['interleaved']:.3f}" if r["applies"] else "n/a",
                      f"{m['model']:.3f}", f"{r['interleaved_speedup']:.2f}x",
                      "{:.2f}-{:.2f}".format(*r["band_5_95"]),
                      "yes" if r["model_interleaves"] else "no"])
        print(format_table(header, table[-1:]).splitlines()[-1], flush=True)
    text = format_table(header, table)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        date = datetime.date.today().isoformat()
        info = {"benchmark": "interleave_ab", "date": date,
                "machine": machine_info(os.cpu_count()),
                "load_average_before": load_before, "load_average_after": os.getloadavg(),
                "results": rows}
        stem = args.out / f"interleave-ab-cpu-{date}"
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        stem.with_suffix(".md").write_text(
            f"# Rows interleaved or one at a time ({date})\n\n"
            f"{info['machine'].get('cpu', '')}, {args.repeats} interleaved samples per "
            "case, medians; `band 5-95`: the speedup's noise band (bootstrap over rounds). "
            "`model`: the plan the cost model picks unaided. "
            "`python -m benchmarks.interleave_ab`.\n\n" + text + "\n")
        print(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
