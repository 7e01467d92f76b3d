"""Does a kernel's measured time depend on which others it is timed beside?

`benchmarking.interleaved` times candidates in rounds. In a fixed cycle each kernel
always runs right after the same one; shuffled (the default), after a different one
each round. For each case of the CPU suite (its full shapes), the fastest `--points`
points of its search space (tuner.search_space; one short pass over all picks them:
near-equal kernels, as the tuner's contenders and search_space's head-to-head are)
are timed in `--points` - 1 contexts, each leaving one of them but the fastest out,
both ways. Per context, each remaining point's median over the first point's;
reported per case: the largest spread (max / min) of one point's ratio across
contexts, and the contexts whose fastest point was not the one most contexts
crowned. With no context effect both columns stay at noise.

    python -m benchmarks.interleave_order [--cases softmax,masked_softmax] [--points 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks import suite
from benchmarks.search_space import _strides, call, timing_lock
from powerfusion.benchmarking import format_table, interleaved
from powerfusion.frontend.tracing import trace
from powerfusion.runtime.backends import executable, get_target
from powerfusion.runtime.execute import BufferPool
from powerfusion.search import tuner

ORDERS = {"cycle": False, "shuffled": True}


def measure(case, target, points: int, repeats: int, sample_s: float) -> dict:
    args = case.inputs(False)
    graph, _ = trace(case.fn, args)
    space = tuner.search_space(graph, _strides(args), target, "cpu")
    pool = BufferPool()
    every = {}
    for candidate, plan, _, code in space.points:
        exe = executable(plan, "cpu", code, pool)
        every[candidate.label] = call(exe, args)
    with timing_lock():
        once = {k: statistics.median(v) for k, v in interleaved(every, repeats=3).items()}
    runs = {k: every[k] for k in sorted(once, key=once.get)[:points]}
    first, *others = runs
    result = {"case": case.name, "points": list(runs)}
    ratios = {way: {label: [] for label in others} for way in ORDERS}
    winners = {way: [] for way in ORDERS}
    with timing_lock():
        for left_out in others:
            context = {k: fn for k, fn in runs.items() if k != left_out}
            for way, shuffled in ORDERS.items():        # both ways, back to back
                samples = interleaved(context, repeats=repeats, min_sample_s=sample_s,
                                      shuffled=shuffled)
                seconds = {k: statistics.median(v) for k, v in samples.items()}
                winners[way].append(min(seconds, key=seconds.get))
                for label, t in seconds.items():
                    if label != first:
                        ratios[way][label].append(t / seconds[first])
    for way in ORDERS:
        spread = [max(r) / min(r) for r in ratios[way].values() if len(r) > 1]
        crowned = Counter(winners[way]).most_common(1)[0][1]
        result[way] = {"spread": max(spread, default=1.0),
                       "other_winner": len(winners[way]) - crowned,
                       "contexts": len(winners[way]), "ratios": ratios[way]}
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", help="comma-separated case names (shell patterns)")
    p.add_argument("--points", type=int, default=6)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--sample-s", type=float, default=0.02,
                   help="a sample's least length (the tuner's confirmation round's)")
    p.add_argument("--out", type=Path, default=suite.RESULTS_DIR)
    p.add_argument("--name", default="interleave-order-cpu-" + time.strftime("%Y-%m-%d"))
    args = p.parse_args(argv)
    target = get_target("cpu")
    info = suite.machine_info(target.cores)
    results = []
    for case in suite.select(args.cases):
        print(f"{case.name} ...", file=sys.stderr, flush=True)
        results.append(measure(case, target, args.points, args.repeats, args.sample_s))
    rows = [[r["case"], len(r["points"]), f"{r['cycle']['spread']:.3f}",
             f"{r['shuffled']['spread']:.3f}",
             f"{r['cycle']['other_winner']}/{r['cycle']['contexts']}",
             f"{r['shuffled']['other_winner']}/{r['shuffled']['contexts']}"] for r in results]
    table = format_table(["case", "points", "spread cycle", "spread shuffled",
                          "other winner cycle", "other winner shuffled"], rows)
    print(table)
    summary = {way: {"median_spread": statistics.median(r[way]["spread"] for r in results),
                     "worst_spread": max(r[way]["spread"] for r in results),
                     "other_winner": sum(r[way]["other_winner"] for r in results),
                     "contexts": sum(r[way]["contexts"] for r in results)} for way in ORDERS}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(
        {"machine": info, "sample_s": args.sample_s, "repeats": args.repeats,
         "summary": summary, "results": results}, indent=1))
    prose = " ".join(line.strip() for line in __doc__.split("\n\n")[1].splitlines())
    md = [f"# Interleaving order: fixed cycle against shuffled rounds, {info.get('cpu')} "
          f"({info.get('cores')} cores), {time.strftime('%Y-%m-%d')}", "",
          f"Commit {info.get('commit')}; {args.repeats} samples of at least "
          f"{args.sample_s * 1e3:.0f} ms per point and context. {prose}", "",
          "```", table, "```", ""]
    md += [f"{way}: median spread {s['median_spread']:.3f}, worst {s['worst_spread']:.3f}; "
           f"contexts crowning another point {s['other_winner']} of {s['contexts']}."
           for way, s in summary.items()]
    (args.out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
