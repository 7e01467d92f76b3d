"""The search space against the learned search: does measuring a fifth find the best?

For every case of the CPU suite (benchmarks/suite.py, its full shapes):

1. exhaustive: every distinct point of the space (tuner.search_space) compiled, checked
   against numpy in float64 (the suite's tolerance), and timed interleaved
   (benchmarking.interleaved, `--repeats` samples each, medians);
2. learned search: the correction (search/learned.py) trained on the exhaustive
   measurements of the *other* functions only (leave-one-function-out: softmax,
   softmax_gpt2 and softmax_bf16 share a function and leave together), then the real
   tuner (tuner.tune, a fresh compile cache) measures a fifth of the space at most
   (space // 5, at least 1), timed for its wall time;
3. confirmation: the exhaustive table's five fastest, the tuned choice and the cost
   model's choice unaided timed again interleaved, head to head; the fastest of them
   is the best known point (one pass over a space misorders it on a shared machine),
   and the tuned choice is timed against it once more, the two alone (the fastest of
   seven was also picked by its own noise).

Reported per case: the space, how many were measured, the time to tune (learned vs
exhaustive), and the tuned choice's time over the exhaustive best, both as the
exhaustive table has it and head to head. "analytical" is the same budget spent on
the cost model's ranking without the correction (its shortlist, from the table).

Every timing section holds /tmp/pf-bench.lock (flock), the machine's timing lock, a
case at a time.

    python -m benchmarks.search_space [--cases softmax,rmsnorm] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import suite
from powerfusion.benchmarking import format_table, interleaved
from powerfusion.frontend.tracing import trace
from powerfusion.runtime.backends import executable, get_target
from powerfusion.runtime.execute import BufferPool
from powerfusion.search import learned, tuner

LOCK = "/tmp/pf-bench.lock"
HEAD_TO_HEAD = 5        # the exhaustive table's fastest, timed again beside the tuned


@contextlib.contextmanager
def timing_lock():
    """The machine's timing lock, held while we time."""
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _strides(args) -> list[tuple[int, ...]]:
    return [tuple(s // a.itemsize for s in a.strides) for a in args]


def call(exe, args):
    """A function running exe on args, for interleaved timing."""
    return lambda: exe.run(args)


def _reference(case, args) -> list[np.ndarray]:
    fn = case.numpy_fn or case.fn
    wide = (a.astype(np.float64) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a
            for a in args)
    return [np.asarray(r, dtype=np.float64) for r in suite._outputs(fn(*wide))]


def exhaustive(case, target, repeats: int, quick: bool = False) -> dict:
    """Every distinct point compiled, checked and timed interleaved."""
    args = case.inputs(quick)
    graph, _ = trace(case.fn, args)
    start = time.perf_counter()
    space = tuner.search_space(graph, _strides(args), target, "cpu")
    ref = _reference(case, args)
    pool = BufferPool()             # one set of outputs for all: a point's are not kept
    runs, wrong = {}, []
    for candidate, plan, _, code in space.points:
        exe = executable(plan, "cpu", code, pool)
        outs = [y.view(suite._np_dtype(case.dtype)) if y.dtype == np.uint16 else y
                for y in exe.run(args)]         # 16-bit floats come back as their storage
        if not suite._correct(case, outs, ref):
            wrong.append(candidate.label)
        runs[candidate.label] = call(exe, args)
    compiled = time.perf_counter() - start
    with timing_lock():
        load = os.getloadavg()[0]
        start = time.perf_counter()
        samples = interleaved(runs, repeats=repeats)
        timed = time.perf_counter() - start
    seconds = {label: statistics.median(t) for label, t in samples.items()}
    return {"graph": graph, "args": args, "space": space, "seconds": seconds,
            "wrong": wrong, "exhaustive_s": compiled + timed, "load": load}


def from_table(case, target, old: dict) -> dict:
    """The exhaustive measurement an earlier run recorded (its JSON's result for the
    case), with the space planned again: to rerun the learned search alone."""
    args = case.inputs(quick=False)
    graph, _ = trace(case.fn, args)
    space = tuner.search_space(graph, _strides(args), target, "cpu")
    seconds = {label: ms / 1e3 for label, ms in old["table_ms"].items()}
    assert set(seconds) == {p[0].label for p in space.points}, case.name
    return {"graph": graph, "args": args, "space": space, "seconds": seconds,
            "wrong": old["wrong"], "exhaustive_s": old["exhaustive_s"], "load": old["load"]}


def evaluate(name: str, data: dict, others: list, target, repeats: int) -> dict:
    """Leave-one-function-out: train on the others, tune this one, time head to head."""
    space, seconds = data["space"], data["seconds"]
    labels = [p[0].label for p in space.points]
    rows = [(n, f, s) for n, d in others
            for f, s in zip(d["space"].features, (d["seconds"][p[0].label]
                                                    for p in d["space"].points))]
    correction = learned.Correction().fit(rows)
    budget = max(1, len(labels) // 5)
    best = min(seconds, key=seconds.get)
    analytical = [labels[k] for k in space.shortlist(learned.Correction(), budget)]
    predicted = [labels[k] for k in space.shortlist(correction, budget)]
    with tempfile.TemporaryDirectory() as cache, timing_lock():
        os.environ["POWERFUSION_CACHE_DIR"] = cache     # the tuner compiles cold
        start = time.perf_counter()
        tuned = tuner.tune(data["graph"], _strides(data["args"]), target, data["args"],
                           top=budget, repeat=repeats, progress=False, record=False,
                           correction=correction)
        tune_s = time.perf_counter() - start
        del os.environ["POWERFUSION_CACHE_DIR"]
    choice = tuned.choice.label
    model = labels[space.shortlist(learned.Correction(), 1)[0]]
    points = {p[0].label: p for p in space.points}
    heads = {}
    # one pass over the whole space misorders its points (by up to 1.75x here): its five
    # fastest, the tuned and the model's choice are timed again, and the fastest of
    # those is the best known
    fastest = sorted(seconds, key=seconds.get)[:HEAD_TO_HEAD]
    pool = BufferPool()             # one set of outputs for all, as the tuner's
    for label in dict.fromkeys([*fastest, choice, model]):
        exe = executable(points[label][1], "cpu", points[label][3], pool)
        heads[label] = call(exe, data["args"])
    with timing_lock():
        # many long samples: a few points, so the head-to-head can afford them
        again = {k: statistics.median(v) for k, v in interleaved(
            heads, repeats=4 * repeats + 1, min_sample_s=0.02).items()}
    known = min(again, key=again.get)
    # the fastest of seven medians was picked by its own noise too (and by which others
    # ran beside it): the tuned choice is timed against it afresh, the two alone
    pair = {choice: 1.0, known: 1.0}
    if known != choice:
        with timing_lock():
            pair = {k: statistics.median(v) for k, v in interleaved(
                {k: heads[k] for k in (choice, known)}, repeats=4 * repeats + 1,
                min_sample_s=0.02).items()}
    return {
        "case": name, "space": len(labels), "measured": len(tuned.seconds),
        "budget": budget, "tune_s": tune_s, "exhaustive_s": data["exhaustive_s"],
        "best": best, "best_ms": seconds[best] * 1e3, "tuned": choice,
        "tuned_ms": seconds[choice] * 1e3, "tuned_vs_best": seconds[choice] / seconds[best],
        "analytical_vs_best": min(seconds[a] for a in analytical) / seconds[best],
        "predicted_vs_best": min(seconds[p] for p in predicted) / seconds[best],
        "model": model, "model_vs_best": seconds[model] / seconds[best],
        "head_to_head": {"best": known, "best_ms": again[known] * 1e3,
                         "table_best_ms": again[best] * 1e3, "tuned_ms": again[choice] * 1e3,
                         "model_ms": again[model] * 1e3,
                         "tuned_vs_best": pair[choice] / pair[known],
                         "tuned_vs_best_of_seven": again[choice] / again[known],
                         "model_vs_best": again[model] / again[known]},
        "wrong": data["wrong"], "load": data["load"],
        "table_ms": {k: v * 1e3 for k, v in sorted(seconds.items(), key=lambda kv: kv[1])},
        "features": dict(zip(labels, space.features)),     # for offline study
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", help="comma-separated case names (shell patterns)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    p.add_argument("--table", type=Path, help="an earlier run's JSON: take its exhaustive "
                   "measurements, rerun the learned search and the head-to-head only")
    p.add_argument("--out", type=Path, default=suite.RESULTS_DIR)
    p.add_argument("--name", default="search-space-cpu-" + time.strftime("%Y-%m-%d"))
    args = p.parse_args(argv)
    target = get_target("cpu")
    cases = suite.select(args.cases)
    info = suite.machine_info(int(os.environ.get("OMP_NUM_THREADS", 0)) or target.cores)
    data = {}
    table = {}
    if args.table:
        old = json.loads(args.table.read_text())
        table = {r["case"]: r for r in old["results"]}
        info["exhaustive_from"] = {"file": args.table.name, **{
            k: old["machine"].get(k) for k in ("commit", "load_average_start",
                                               "load_average_end")}}
    for case in cases:
        print(f"exhaustive: {case.name} ...", file=sys.stderr, flush=True)
        data[case.name] = from_table(case, target, table[case.name]) if table else \
            exhaustive(case, target, args.repeats, args.quick)
    results = []
    for case in cases:
        print(f"learned search: {case.name} ...", file=sys.stderr, flush=True)
        others = [(n, d) for n, d in data.items() if suite.CASES[n].fn is not case.fn]
        results.append(evaluate(case.name, data[case.name], others, target, args.repeats))
    info["load_average_end"] = list(os.getloadavg())
    report(results, info, args.out, args.name)
    return 0


def _method(info: dict) -> list[str]:
    source = info.get("exhaustive_from")
    lines = [
        "Per case of the suite (full shapes): `space`, the distinct points (by generated "
        "code) of computations x placements x streaming stores x tile x threads x "
        "dynamic pieces x vector width; `measured`, what the learned search timed (a "
        "fifth of the space at most); `tune s`, its wall time (cold compile cache, "
        "timing included); `exhaustive s`, compiling and timing every point. "
        "`tuned/best`: the tuned choice's median over the exhaustive best's, both from "
        "the exhaustive table; `head to head`: the tuned choice over the best known point "
        "(the fastest of the table's five fastest, the tuned choice and the model's, all "
        "timed again interleaved in one later run, more and longer samples), the two "
        "timed once more alone (`of seven`: the ratio in that run of seven); `model h2h`: "
        "the model's choice over the best known point in the run of seven; "
        "`analytical/best`: the same budget spent on the cost model's ranking uncorrected; "
        "`model/best`: the cost model's first choice alone.",
        "",
        "The correction for each case is trained only on the exhaustive measurements of "
        "the other functions of the suite (leave-one-function-out: softmax, "
        "softmax_gpt2 and softmax_bf16 leave together, as do the layernorms, rmsnorms "
        "and bias_gelus).",
    ]
    if source:
        lines += ["", f"The exhaustive table is an earlier run's ({source['file']}, commit "
                      f"{source['commit']}, load average {source['load_average_start']} at "
                      f"its start, {source['load_average_end']} at its end); the learned "
                      "search and the head-to-head timings are this run's."]
    return lines


def report(results: list[dict], info: dict, out: Path, name: str) -> None:
    header = ["case", "space", "measured", "tune s", "exhaustive s", "tuned/best",
              "head to head", "of seven", "model h2h", "analytical/best", "model/best",
              "tuned choice"]
    rows = [[r["case"], r["space"], r["measured"], f"{r['tune_s']:.1f}",
             f"{r['exhaustive_s']:.1f}", f"{r['tuned_vs_best']:.3f}",
             f"{r['head_to_head']['tuned_vs_best']:.3f}",
             f"{r['head_to_head']['tuned_vs_best_of_seven']:.3f}",
             f"{r['head_to_head']['model_vs_best']:.3f}", f"{r['analytical_vs_best']:.3f}",
             f"{r['model_vs_best']:.3f}", r["tuned"]] for r in results]
    table = format_table(header, rows)
    print(table)
    worst = max(r["tuned_vs_best"] for r in results)
    share = max(r["measured"] / r["space"] for r in results)
    h2h = [r["head_to_head"]["tuned_vs_best"] for r in results]
    summary = {"worst_tuned_vs_best": worst, "largest_share_measured": share,
               "head_to_head_worst": max(h2h),
               "head_to_head_within_5pct": sum(v <= 1.05 for v in h2h),
               "geomean_tuned_vs_best": math.exp(statistics.mean(
                   math.log(r["tuned_vs_best"]) for r in results)),
               "wrong": {r["case"]: r["wrong"] for r in results if r["wrong"]}}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(
        {"machine": info, "summary": summary, "results": results}, indent=1))
    md = [f"# Search space: learned search vs exhaustive, {info.get('cpu')} "
          f"({info.get('cores')} cores), {time.strftime('%Y-%m-%d')}", "",
          f"Machine: {info.get('cpu')}, {info.get('cores')} cores, {info.get('gcc')}; "
          f"commit {info.get('commit')}; load average {info.get('load_average_start')} at "
          f"the start, {info.get('load_average_end')} at the end (a machine shared with "
          "other engineers; timing under /tmp/pf-bench.lock).", "",
          *_method(info), "",
          "```", table, "```", "",
          f"Head to head: {summary['head_to_head_within_5pct']} of {len(results)} cases "
          f"within 5% of the best known point, worst {summary['head_to_head_worst']:.3f}. "
          f"Worst tuned/best {worst:.3f}; largest share of the space measured {share:.2f}; "
          f"geomean tuned/best {summary['geomean_tuned_vs_best']:.3f}. Candidates whose "
          f"result missed numpy's: {summary['wrong'] or 'none'}."]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())
