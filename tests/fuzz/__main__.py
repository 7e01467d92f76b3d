"""`python -m tests.fuzz`: a differential fuzzing campaign of pf.jit against numpy.

    python -m tests.fuzz --programs 10000                 # the long campaign, cpu
    python -m tests.fuzz --programs 2000 --target opencl
    python -m tests.fuzz --replay 42000017                # one program: source and verdict
    python -m tests.fuzz --programs 500 --exclude any,all,argmax,argmin

Prints progress and a summary (programs, mismatches, untyped errors, crashes, time),
shrinks failures to minimal programs and writes them to --out (markdown).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from .check import GIR_TARGETS, SPACE


def _target(text: str) -> str:
    if text in ("cpu", "opencl", *GIR_TARGETS) or text == SPACE or (
            text.startswith(SPACE + ":") and text[len(SPACE) + 1:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, opencl, {', '.join(GIR_TARGETS)}, "
                                     f"{SPACE} or {SPACE}:N, got {text!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="campaign seed")
    parser.add_argument("--target", default="cpu", type=_target,
                        help="cpu, opencl; cuda-gir / hip-gir: the dialect's SIMT-legalised "
                             "GIR, run by the interpreter as the block's threads would; "
                             "cpu-space: a point of the tuner's search space per program "
                             "(cpu-space:N: the point N draws, as a report names it)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--batch", type=int, default=16, help="programs per pf.jit call")
    parser.add_argument("--exclude", default="", help="ops never to draw, comma-separated")
    parser.add_argument("--out", default="fuzz-failures.md", help="where failures go")
    parser.add_argument("--shrink-per-class", type=int, default=1)
    parser.add_argument("--shrink-budget", type=float, default=60.0, help="s per failure")
    parser.add_argument("--shrink-total", type=float, default=900.0, help="s in all")
    parser.add_argument("--replay", type=int, nargs="*", help="program seeds to show and run")
    parser.add_argument("--shrink", action="store_true", help="with --replay: shrink them")
    args = parser.parse_args(argv)
    exclude = tuple(x for x in args.exclude.split(",") if x)
    own_cache = "POWERFUSION_CACHE_DIR" not in os.environ
    if own_cache:               # a private kernel cache: the user's stays as it was
        os.environ["POWERFUSION_CACHE_DIR"] = tempfile.mkdtemp(prefix="pf-fuzz-cache-")
    if args.replay:
        if args.shrink:
            return shrink_seeds(args.replay, args.target, exclude, args.shrink_budget)
        return replay(args.replay, args.target, exclude)
    return campaign(args, exclude)


def replay(seeds, target: str, exclude) -> int:
    from .check import check
    from .generator import generate

    failed = 0
    for seed in seeds:
        program, expected = generate(seed, exclude)
        outcome = check(program, expected, target)
        print(f"# seed {seed}: {outcome.signature()}")
        print(program.repro(target))
        if outcome.failed:
            failed += 1
            print(outcome.message)
        print()
    return 1 if failed else 0


def shrink_seeds(seeds, target: str, exclude, budget: float) -> int:
    from .campaign import Failure
    from .check import Outcome
    from .report import describe, shrink_failure
    from .worker import Worker

    worker = Worker(target, exclude)
    try:
        for seed in seeds:
            shrunk = shrink_failure(Failure((seed,), Outcome("?")), worker, budget,
                                    exclude=exclude)
            print(describe(shrunk))
    finally:
        worker.close()
    return 0


def campaign(args, exclude) -> int:
    from .campaign import run_campaign
    from .report import shrink_all, write

    def progress(summary):
        print(f"  [{summary.seconds:6.0f} s] {summary.programs}/{args.programs} programs, "
              f"{len(summary.failures)} failed", flush=True)

    print(f"fuzzing {args.programs} programs on {args.target} (seed {args.seed}, "
          f"{args.jobs} jobs, batches of {args.batch})", flush=True)
    summary = run_campaign(args.programs, args.seed, args.target, args.jobs, args.batch,
                           exclude=exclude, progress=progress)
    print(summary.text(), flush=True)
    shrunk = []
    if summary.failures and args.shrink_total > 0:
        start = time.monotonic()
        shrunk = shrink_all(summary, args.shrink_per_class, args.shrink_budget,
                            args.shrink_total, exclude, log=lambda m: print(m, flush=True))
        print(f"shrank {len(shrunk)} failures in {time.monotonic() - start:.0f} s")
        for s in shrunk:
            print(f"\n## {s.failure.signature()}\n{s.program.repro(s.target)}")
    command = "python -m tests.fuzz " + " ".join(sys.argv[1:])
    write(args.out, summary, shrunk, command)
    print(f"\nwritten to {args.out}")
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
