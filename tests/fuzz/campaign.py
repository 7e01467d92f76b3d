"""A campaign: many seeds, in batches, over a pool of workers; failures confirmed alone.

Program i of campaign seed S has seed S * 1_000_000 + i, so any failure replays from
its seed alone (`python -m tests.fuzz --replay SEED`). A batch of B programs is one
pf.jit call (one compile): fast. A program whose outputs are wrong in a batch runs
again alone; a batch that fails as a whole (an exception, a crash, a hang) is bisected.
If the parts all pass, the failure is the batch's ("batch-only"), kept with its seeds.
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
                 batch: int = 16, timeout: float = 180.0, exclude: tuple[str, ...] = (),
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
    """The child tasks of a failed batch (its halves, or its failing programs alone): if
    none of them fails, the batch itself is the failure ("batch-only")."""

    def __init__(self, seeds: tuple[int, ...], outcome: Outcome, pending: int, origin):
        self.seeds, self.outcome, self.pending, self.origin = seeds, outcome, pending, origin
        self.failed = False

    def done(self, failed: bool, summary: Summary) -> None:
        self.pending -= 1
        self.failed |= failed
        if self.pending == 0:
            if not self.failed:
                summary.record(Failure(self.seeds, self.outcome, batch_only=True))
            if self.origin is not None:
                self.origin.done(True, summary)


def _split(seeds, outcome: Outcome, origin, tasks) -> None:
    """Bisect a batch that failed as a whole: log2(B) reruns find one culprit."""
    half = len(seeds) // 2
    rerun = _Rerun(tuple(seeds), outcome, 2, origin)
    tasks.append(("seeds", tuple(seeds[:half]), rerun))
    tasks.append(("seeds", tuple(seeds[half:]), rerun))


def _handle(reply, payload, origin, tasks, summary: Summary) -> None:
    status, value = reply
    if status == "done":
        alone = [(seed, o) for seed, o, batched in value if not batched]
        batched = [(seed, o) for seed, o, was_batched in value if was_batched]
        failed = False
        for seed, outcome in alone:
            summary.programs += 1
            if outcome.failed:
                summary.record(Failure((seed,), outcome))
                failed = True
        signatures = {o.signature() for _, o in batched}
        if batched and len(signatures) == 1 and batched[0][1].failed:
            _split([seed for seed, _ in batched], batched[0][1], origin, tasks)
            return                        # the halves report to `origin`
        failing = [(seed, o) for seed, o in batched if o.failed]
        if failing:
            rerun = _Rerun(tuple(payload), failing[0][1], len(failing), origin)
            for seed, _ in failing:
                tasks.append(("seeds", (seed,), rerun))
        summary.programs += len(batched) - len(failing)
        if origin is not None and not failing:
            origin.done(failed, summary)
        return
    if status == "crash":
        outcome = Outcome("crash", f"exit code {value}", f"the worker died ({value})")
    elif status == "timeout":
        outcome = Outcome("timeout", "", f"no result within {value:.0f} s")
    else:
        outcome = Outcome("fuzzer", "error in the fuzzer", value)
    if len(payload) > 1:                  # a crash or hang of a batch: find who did it
        _split(list(payload), outcome, origin, tasks)
        return
    summary.programs += 1
    summary.record(Failure(tuple(payload), outcome))
    if origin is not None:
        origin.done(True, summary)
