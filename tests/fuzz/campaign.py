"""A campaign: many seeds, in batches, over a pool of workers; failures confirmed alone.

Program i of campaign seed S has seed S * 1_000_000 + i, so any failure replays from
its seed alone (`python -m tests.fuzz --replay SEED`). A batch of B programs is one
pf.jit call (one compile): fast. A program that fails in a batch runs again alone; if
it passes alone, the failure is the batch's ("batch-only"), kept with all its seeds.
A batch that crashes or hangs is re-run one program at a time.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

from .check import Outcome
from .worker import Worker, ready

SEED_STRIDE = 1_000_000


def program_seed(campaign_seed: int, index: int) -> int:
    return campaign_seed * SEED_STRIDE + index


@dataclass
class Failure:
    seeds: tuple[int, ...]
    outcome: Outcome
    batch_only: bool = False

    def signature(self) -> str:
        return ("batch-only " if self.batch_only else "") + self.outcome.signature()


@dataclass
class Summary:
    target: str
    programs: int = 0
    seconds: float = 0.0
    compiles: int = 0                        # pf calls: batches plus programs run alone
    failures: list[Failure] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)

    def record(self, failure: Failure) -> None:
        self.failures.append(failure)
        self.kinds[failure.outcome.kind] += 1

    def by_signature(self) -> dict[str, list[Failure]]:
        groups: dict[str, list[Failure]] = {}
        for f in self.failures:
            groups.setdefault(f.signature(), []).append(f)
        return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))

    def text(self) -> str:
        rate = self.programs / self.seconds if self.seconds else 0.0
        lines = [f"target {self.target}: {self.programs} programs in {self.seconds:.1f} s "
                 f"({rate:.1f} programs/s, {self.compiles} pf calls)",
                 f"  failed programs: {len(self.failures)}"]
        for kind in ("mismatch", "untyped", "rejected", "missing-error", "crash", "timeout",
                     "fuzzer"):
            lines.append(f"  {kind:14s} {self.kinds.get(kind, 0)}")
        for sig, group in self.by_signature().items():
            seeds = ", ".join(str(f.seeds[0]) for f in group[:3])
            lines.append(f"  {len(group):5d} x {sig}  (seeds {seeds})")
        return "\n".join(lines)


def run_campaign(programs: int, seed: int = 0, target: str = "cpu", jobs: int = 2,
                 batch: int = 8, timeout: float = 300.0, exclude: tuple[str, ...] = (),
                 progress=None, workers: list[Worker] | None = None) -> Summary:
    """Run `programs` seeded programs; `progress(summary)` is called now and then."""
    summary = Summary(target)
    seeds = [program_seed(seed, i) for i in range(programs)]
    tasks = deque(("seeds", tuple(seeds[i:i + batch]), None)
                  for i in range(0, len(seeds), batch))
    own = workers is None
    workers = workers or [Worker(target, exclude) for _ in range(max(1, jobs))]
    meta: dict[int, tuple] = {}          # id(worker) -> (task, batch it came from)
    start, last_report = time.monotonic(), 0.0
    try:
        while tasks or any(w.task is not None for w in workers):
            for w in workers:
                if w.task is None and tasks:
                    kind, payload, origin = tasks.popleft()
                    meta[id(w)] = (payload, origin)
                    w.submit((kind, list(payload)))
                    summary.compiles += 1
            for w in ready(workers, 1.0):
                payload, origin = meta[id(w)]
                _handle(w.collect(), payload, origin, tasks, summary)
            now = time.monotonic()
            for w in workers:
                if w.task is not None and now - w.started > timeout:
                    payload, origin = meta[id(w)]
                    w.restart()
                    _handle(("timeout", timeout), payload, origin, tasks, summary)
            if progress and now - last_report > 10:
                summary.seconds = now - start
                progress(summary)
                last_report = now
    finally:
        if own:
            for w in workers:
                w.close()
    summary.seconds = time.monotonic() - start
    return summary


class _Rerun:
    """The programs of a failed batch, run again alone: if none fails alone, the batch
    itself is the failure."""

    def __init__(self, seeds: tuple[int, ...], outcome: Outcome, pending: int):
        self.seeds, self.outcome, self.pending, self.failed_alone = seeds, outcome, pending, 0

    def done(self, failed: bool, summary: Summary) -> None:
        self.pending -= 1
        self.failed_alone += failed
        if self.pending == 0 and not self.failed_alone:
            summary.record(Failure(self.seeds, self.outcome, batch_only=True))


def _handle(reply, payload, origin, tasks, summary: Summary) -> None:
    status, value = reply
    if status == "done":
        failing = [(seed, o) for seed, o, batched in value if o.failed and batched]
        rerun = _Rerun(tuple(payload), failing[0][1], len(failing)) if failing else None
        for seed, outcome, batched in value:
            if outcome.failed and batched:
                tasks.append(("seeds", (seed,), rerun))
                continue
            summary.programs += 1
            if outcome.failed:
                summary.record(Failure((seed,), outcome))
            if origin is not None:
                origin.done(outcome.failed, summary)
        return
    if status == "crash":
        outcome = Outcome("crash", f"exit code {value}", f"the worker died ({value})")
    elif status == "timeout":
        outcome = Outcome("timeout", "", f"no result within {value:.0f} s")
    else:
        outcome = Outcome("fuzzer", "error in the fuzzer", value)
    if len(payload) > 1:                  # a crash or hang of a batch: find who did it
        rerun = _Rerun(tuple(payload), outcome, len(payload))
        for seed in payload:
            tasks.append(("seeds", (seed,), rerun))
        return
    summary.programs += 1
    summary.record(Failure(tuple(payload), outcome))
    if origin is not None:
        origin.done(True, summary)
