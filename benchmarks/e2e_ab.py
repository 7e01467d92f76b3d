"""Two or more PowerFusion code trees (a change and the commit before it) on whole
models, each in its own process, timed interleaved.

A model step moves by 2-10% between processes and between minutes on a shared VM
(two states of the machine, switching mid-run), more than most changes gain; so each
tree's worker steps in turn, round after round, the first variant is the baseline
and each other's speedup over it comes with its noise band (bootstrap over the
rounds). A variant is NAME=PATH (a checkout, e.g. `git worktree add /tmp/base HEAD`)
with optional environment settings after it: NAME=PATH,KEY=VALUE,...

    python -m benchmarks.e2e_ab --variant before=/tmp/base --variant after=. \\
        --models llama bert gpt2 --batch 1 --rounds 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

# a variant's process imports its own tree: the spawned child runs this module's top
# again, with PFROOT set to that tree, before it unpickles the worker
sys.path.insert(0, os.environ.get("PFROOT", str(Path(__file__).resolve().parents[1])))

from benchmarks.e2e_torch import (  # noqa: E402
    WARMUP, _worker, machine_info, stop_workers)


def parse_variant(text: str) -> tuple[str, Path, dict[str, str]]:
    """NAME=PATH[,KEY=VALUE...] -> (name, tree, environment)."""
    head, *settings = text.split(",")
    name, sep, path = head.partition("=")
    tree = Path(path).resolve()
    if not sep or not name or not (tree / "powerfusion" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(
            f"--variant {text!r}: expected NAME=PATH to a PowerFusion checkout")
    env = {}
    for s in settings:
        key, sep, value = s.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--variant {text!r}: expected KEY=VALUE, got {s!r}")
        env[key] = value
    return name, tree, env


def commit_of(tree: Path) -> str:
    """The checkout's commit (short), "+changes" when its working tree differs, or "?"."""
    import subprocess
    try:
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+changes" if dirty else "")


def run_ab(variants, model: str, layers: int, mode: str, batch: int, repeats: int,
           backend: str = "powerfusion") -> dict:
    """Each variant's worker (benchmarks.e2e_torch._worker) on one case, interleaved."""
    from powerfusion.benchmarking import ratio_band

    context = multiprocessing.get_context("spawn")
    workers, stats, saved = {}, {}, dict(os.environ)
    try:
        for name, tree, env in variants:
            os.environ.update(env, PFROOT=str(tree))      # what the child starts with
            ours, theirs = context.Pipe()
            process = context.Process(target=_worker, daemon=True,
                                      args=(theirs, backend, model, layers, mode, batch,
                                            False))
            process.start()
            os.environ.clear()
            os.environ.update(saved)
            theirs.close()
            workers[name] = (process, ours)
            stats[name] = ours.recv()[3]  # compiled, first step done; its counts
        samples = {n: [] for n in workers}
        for k in range(WARMUP + repeats):
            for n, (_, conn) in workers.items():
                conn.send("sample")
                seconds = conn.recv()
                time.sleep(0.005)        # the last one's OpenMP threads stop spinning
                if k >= WARMUP:
                    samples[n].append(seconds)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stop_workers(workers)
    base, *others = list(samples)
    result = {"model": model, "mode": mode, "batch": batch,
              "median_ms": {n: 1e3 * statistics.median(s) for n, s in samples.items()},
              "samples_ms": {n: [1e3 * v for v in s] for n, s in samples.items()},
              "compile_stats": {n: {k: v for k, v in st.items() if isinstance(v, (int, bool))}
                                for n, st in stats.items()},
              "speedup_over_" + base: {}}
    for n in others:
        low, high = ratio_band(samples[base], samples[n])
        result["speedup_over_" + base][n] = {
            "median": statistics.median(samples[base]) / statistics.median(samples[n]),
            "band_5_95": [low, high]}
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", type=parse_variant, action="append", required=True,
                   help="NAME=PATH[,KEY=VALUE...]; the first is the baseline")
    p.add_argument("--models", nargs="+", default=["bert", "gpt2", "llama"])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--training", action="store_true", help="a training step, not inference")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--rounds", type=int, default=1,
                   help="the whole set again, fresh processes (process noise)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if len(args.variant) < 2:
        p.error("--variant: give at least two (a baseline and one to compare)")
    from powerfusion.benchmarking import format_table

    mode = "training" if args.training else "inference"
    base, others = args.variant[0][0], [v[0] for v in args.variant[1:]]
    header = ["model", "mode", "batch", "round", *[f"{v[0]} ms" for v in args.variant],
              *[f"{n} speedup" for n in others], *[f"{n} band 5-95" for n in others]]
    rows, table = [], []
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for model in args.models:
            for batch in args.batch:
                res = run_ab(args.variant, model, args.layers, mode, batch, args.repeats)
                res["round"] = r + 1
                rows.append(res)
                s = res["speedup_over_" + base]
                table.append([model, mode, str(batch), str(r + 1),
                              *[f"{res['median_ms'][v[0]]:.2f}" for v in args.variant],
                              *[f"{s[n]['median']:.3f}x" for n in others],
                              *["{:.3f}-{:.3f}".format(*s[n]["band_5_95"]) for n in others]])
                print(format_table(header, table[-1:]).splitlines()[-1], flush=True)
    text = format_table(header, table)
    geo = {n: math.exp(statistics.fmean(math.log(x["speedup_over_" + base][n]["median"])
                                        for x in rows)) for n in others}
    summary = "; ".join(f"{n} over {base}, geometric mean: {g:.3f}x" for n, g in geo.items())
    print(text, summary, sep="\n\n")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        date = datetime.date.today().isoformat()
        info = {"benchmark": "e2e_ab", "date": date, "machine": machine_info(),
                "variants": [{"name": n, "tree": str(t), "commit": commit_of(t), "env": e}
                             for n, t, e in args.variant],
                "settings": {k: v for k, v in vars(args).items() if k not in ("variant", "out")},
                "load_average_before": load_before, "load_average_after": os.getloadavg(),
                "summary": summary, "results": rows}
        stem = args.out / f"e2e-ab-cpu-{date}"
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        m = info["machine"]
        stem.with_suffix(".md").write_text(
            f"# PowerFusion A/B on whole models ({date})\n\n"
            f"{m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']}; each "
            f"variant in its own process, {args.repeats} interleaved samples per case after "
            f"{WARMUP} warm-up rounds, medians; the band is the speedup's 5-95% over "
            f"bootstrap resamples of the rounds. Variants: "
            + ", ".join(f"`{n}` ({commit_of(t)}{', ' + str(e) if e else ''})"
                        for n, t, e in args.variant)
            + ". `python -m benchmarks.e2e_ab`.\n\n" + text + "\n\n" + summary + "\n")
        print(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
