"""Worker processes: pf runs in a child, so a segfault or a hang costs one task, not the
campaign. A task is a list of seeds (generated, merged into one program, judged) or
one program (judged as it is: the shrinker's candidates)."""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import time
import traceback
from multiprocessing.connection import wait

from powerfusion.graph import memory_order

from .analysis import Fragile, analyze
from .check import Outcome, first_failure, judge
from .generator import generate
from .program import Program, merge


def run_seeds(seeds: list[int], target: str, exclude: tuple[str, ...]) -> list:
    """[(seed, Outcome, batched)]: programs numpy runs are merged into one pf call, each
    judged on its own outputs; programs numpy rejects, or that pf may reject (numpy's
    int8), run alone: their verdict is about the whole call."""
    merged, results = [], []
    for seed in seeds:
        try:
            program, expected = generate(seed, exclude)
        except Fragile as exc:           # generation and analysis disagree: a fuzzer bug
            results.append((seed, Outcome("fuzzer", "Fragile after generation", str(exc)),
                            False))
            continue
        if expected.error is not None or expected.may_refuse or len(seeds) == 1:
            outcome = first_failure(judge(program, expected, target))
            results.append((seed, outcome, False))
        else:
            merged.append((seed, program, expected))
    if len(merged) == 1:
        seed, program, expected = merged[0]
        results.append((seed, first_failure(judge(program, expected, target)), False))
    elif merged:
        whole = merge([p for _, p, _ in merged])
        outputs = [info for _, _, e in merged for info in e.outputs]
        expected = type(merged[0][2])(outputs)
        outcomes = judge(whole, expected, target)
        at = 0
        for seed, program, _ in merged:
            mine = outcomes[at:at + len(program.outputs)]
            at += len(program.outputs)
            results.append((seed, first_failure(mine), True))
    return results


def run_program(program: Program, target: str) -> tuple[Outcome, bool]:
    """(pf's outcome, whether numpy raises): a shrinker's candidate, judged as it is."""
    try:
        expected = analyze(program)
    except Fragile as exc:
        return Outcome("invalid", str(exc)), False
    return first_failure(judge(program, expected, target)), expected.error is not None


# bytes of data per worker, its compilers included; $PF_FUZZ_MEMORY_BYTES=0 lifts it (an
# AddressSanitizer run maps terabytes of shadow memory)
MEMORY_LIMIT = int(os.environ.get("PF_FUZZ_MEMORY_BYTES", 6 << 30))


def _main(conn, target: str, exclude: tuple[str, ...]) -> None:
    os.setpgrp()             # the worker and its compilers: one group, killed together
    if MEMORY_LIMIT:
        resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))
    # every reduction over a strided operand through memory_order's rewrite, not only
    # the large ones it pays for: the fuzzer's shapes are mostly small, and whether the
    # rewrite keeps the meaning is what a campaign is for (3000 programs: about 150)
    memory_order.MIN_ELEMENTS = 2
    while True:
        task = conn.recv()
        if task is None:
            return
        kind, payload = task
        try:
            if kind == "seeds":
                conn.send(("done", run_seeds(payload, target, exclude)))
            else:
                conn.send(("done", run_program(payload, target)))
        except Exception:                # noqa: BLE001 - a fuzzer bug: report, go on
            conn.send(("fuzzer-error", traceback.format_exc()))


class Worker:
    """One child process and the task it is running."""

    def __init__(self, target: str, exclude: tuple[str, ...] = ()):
        self.target, self.exclude = target, exclude
        self.task = None
        self.started = 0.0
        self._start()

    def _start(self):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_main, args=(child, self.target, self.exclude),
                                   daemon=True)
        self.process.start()
        child.close()

    def submit(self, task) -> None:
        self.task, self.started = task, time.monotonic()
        self.conn.send(task)

    def collect(self):
        """('done', value) | ('fuzzer-error', text) | ('crash', exit code), once ready."""
        try:
            reply = self.conn.recv()
        except (EOFError, ConnectionError, OSError):
            self.process.join(5)
            code = self.process.exitcode
            self.restart()
            return ("crash", code)
        self.task = None
        return reply

    def _kill(self):
        """The worker and what it started (a compiler pf gave up on may outlive it)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.join(5)

    def restart(self):
        self._kill()
        self.conn.close()
        self.task = None
        self._start()

    def close(self):
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(5)
        self._kill()


def ready(workers: list[Worker], timeout: float) -> list[Worker]:
    """The busy workers with a reply (or a dead process) within `timeout` seconds."""
    busy = {w.conn: w for w in workers if w.task is not None}
    if not busy:
        return []
    sentinels = {w.process.sentinel: w for w in busy.values()}
    hits = wait(list(busy) + list(sentinels), timeout)
    found = []
    for h in hits:
        w = busy.get(h) or sentinels.get(h)
        if w not in found:
            found.append(w)
    return found


def call(worker: Worker, task, timeout: float):
    """Run one task on one worker and wait for it: like collect(), or ('timeout', s)."""
    worker.submit(task)
    if not ready([worker], timeout):
        worker.restart()
        return ("timeout", timeout)
    return worker.collect()
