"""After a campaign: shrink a few failures of each class and write them down."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .analysis import analyze
from .campaign import Failure, Summary
from .check import Outcome, point_target
from .generator import generate
from .program import Program, merge
from .shrink import shrink
from .worker import Worker, call


@dataclass
class Shrunk:
    failure: Failure
    program: Program            # the smallest failing program found
    outcome: Outcome            # how it fails
    tried: int
    seconds: float
    reproduced: int             # of REPEATS re-runs of the shrunk program
    target: str = "cpu"


REPEATS = 3


def original_program(failure: Failure, exclude=()) -> Program:
    programs = [generate(seed, exclude)[0] for seed in failure.seeds]
    return programs[0] if len(programs) == 1 else merge(programs)


def judge_in(worker: Worker, program: Program, timeout: float) -> tuple[Outcome, bool]:
    """(outcome, numpy raises) of one program in a worker; crashes and hangs included."""
    status, value = call(worker, ("program", program), timeout)
    if status == "done":
        return value
    if status == "crash":
        return Outcome("crash", f"exit code {value}"), analyze(program).error is not None
    if status == "timeout":
        return Outcome("timeout"), analyze(program).error is not None
    return Outcome("fuzzer", "error in the fuzzer", value), False


def shrink_failure(failure: Failure, worker: Worker, budget_s: float = 60.0,
                   timeout: float = 120.0, exclude=(), log=None) -> Shrunk:
    start = time.monotonic()
    program = original_program(failure, exclude)
    first, raises = judge_in(worker, program, timeout)
    wanted = first.signature()

    def fails(candidate: Program) -> bool:
        outcome, raised = judge_in(worker, candidate, timeout)
        return outcome.signature() == wanted and raised == raises

    small, tried = shrink(program, fails, budget_s, log) if first.failed else (program, 0)
    outcome, _ = judge_in(worker, small, timeout)
    reproduced = sum(judge_in(worker, small, timeout)[0].signature() == wanted
                     for _ in range(REPEATS))
    return Shrunk(failure, small, outcome, tried, time.monotonic() - start, reproduced,
                  worker.target)


def shrink_all(summary: Summary, per_class: int = 1, budget_s: float = 60.0,
               total_s: float = 900.0, exclude=(), log=None) -> list[Shrunk]:
    """Shrink up to `per_class` failures of each signature, within `total_s` seconds."""
    worker = Worker(summary.target, exclude)
    deadline = time.monotonic() + total_s
    out = []
    try:
        for signature, group in summary.by_signature().items():
            for failure in group[:per_class]:
                left = deadline - time.monotonic()
                if left <= 5:
                    return out
                if log:
                    log(f"shrinking {signature} (seeds {failure.seeds[:4]})")
                out.append(shrink_failure(failure, worker, min(budget_s, left),
                                          exclude=exclude, log=log))
    finally:
        worker.close()
    return out


def describe(s: Shrunk) -> str:
    """Markdown for one shrunk failure."""
    seeds = ", ".join(map(str, s.failure.seeds))
    target = point_target(s.target, s.program.source())   # the point the repro fails at
    if not s.outcome.failed:
        return f"### {s.failure.signature()}\n\n- seeds: {seeds}: passes now (fixed since " \
               "the campaign ran, or flaky)\n"
    if s.outcome.signature() != s.failure.outcome.signature() and \
            s.failure.outcome.kind != "?":
        seeds += f" (the campaign saw: {s.failure.signature()})"
    lines = [f"### {s.outcome.signature()}", "",
             f"- seeds: {seeds}" + (" (a batch: fails only together)"
                                    if s.failure.batch_only else ""),
             f"- minimal program: {s.program.size()} ops, shrunk in {s.seconds:.0f} s "
             f"({s.tried} candidates); fails the same way {s.reproduced}/{REPEATS} re-runs",
             "", "```python", s.program.repro(target), "```", "", "```",
             (s.outcome.message or s.outcome.signature()).strip()[-1500:], "```", ""]
    one = s.program.one_line(target)
    if one:
        lines[4:4] = [f"- one line: `{one}`"]
    return "\n".join(lines)


def write(path: str, summary: Summary, shrunk: list[Shrunk], command: str) -> None:
    with open(path, "w") as f:
        f.write(f"# Fuzz failures\n\n`{command}`\n\n```\n{summary.text()}\n```\n\n")
        for s in shrunk:
            f.write(describe(s) + "\n")
