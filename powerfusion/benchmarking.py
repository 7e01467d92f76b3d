"""Timing helpers shared by `powerfusion demo` and the benchmark suite.

Candidates are timed interleaved (one sample of each, then the next round), so a
change in the machine's state (frequency, another process) hits all of them alike,
and each figure is the median of its samples. A sample of a fast function repeats it
enough times to rise well above the timer's resolution.
"""

from __future__ import annotations

import gc
import math
import random
import statistics
import time
from collections.abc import Callable


def _one_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int = 10, *,
                warmup: int = 1, min_sample_s: float = 2e-3,
                shuffled: bool = True) -> dict[str, list[float]]:
    """Seconds per call of each candidate, `repeats` samples each, taken in turn.

    Each candidate runs `warmup` times first (its first-call cost is not measured
    here). A sample averages as many calls as it takes to last `min_sample_s`. Each
    round starts with the next candidate: the garbage collection between rounds walks
    the heap and leaves the caches cold for whoever runs first (identical kernels, a
    12 MB working set: 1.3-1.5x slower when always first), so that cost is shared.
    The others follow in a new order each round (`shuffled=False`: a fixed cycle): in a
    cycle a kernel runs right after the same one in every sample and takes that one's
    leavings each time, a bias no number of rounds removes; shuffled, that neighbour is
    one context among several and the median passes over it. (On average over the
    suite the two orders measure alike: benchmarks/results/interleave-order-*.)
    That collection takes the young generations only, what the samples made: a full
    one walks every object of the process, a fifth of a second per round beside torch
    and a model, and tuning took seconds per kernel for it.
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected at least 1, got {repeats}")
    calls = {}
    for name, fn in candidates.items():
        for _ in range(max(warmup, 1)):
            once = _one_call(fn)
        calls[name] = max(1, math.ceil(min_sample_s / max(once, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    was_enabled = gc.isenabled()
    gc.disable()                      # a collection inside one sample skews it
    try:
        names = list(candidates)
        shuffle = random.Random(0).shuffle          # the same orders every call
        for r in range(repeats):
            k = r % len(names)                      # who opens this round
            rest = names[k + 1:] + names[:k]
            if shuffled:
                shuffle(rest)
            for name in [names[k], *rest]:
                fn, n = candidates[name], calls[name]
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                samples[name].append((time.perf_counter() - start) / n)
            gc.collect(1)
    finally:
        if was_enabled:
            gc.enable()
    return samples


def median_s(samples: list[float]) -> float:
    return statistics.median(samples)


def ratio_band(baseline: list[float], candidate: list[float], draws: int = 2000,
               seed: int = 0) -> tuple[float, float]:
    """The noise band of median(baseline) / median(candidate) for samples taken in
    rounds (baseline[k] and candidate[k] interleaved): the 5th and 95th percentiles of
    that ratio over bootstrap resamples of the rounds. A band holding 1.0 is a tie."""
    if draws < 1:
        raise ValueError(f"ratio_band: draws: expected a positive count, got {draws}")
    if len(baseline) != len(candidate) or not baseline:
        raise ValueError(f"ratio_band: expected two equally long, non-empty sample lists, "
                         f"got {len(baseline)} and {len(candidate)} samples")
    rng = random.Random(seed)
    rounds = range(len(baseline))
    ratios = []
    for _ in range(draws):
        picked = [rng.choice(rounds) for _ in rounds]
        ratios.append(statistics.median(baseline[k] for k in picked)
                      / statistics.median(candidate[k] for k in picked))
    ratios.sort()
    return ratios[int(0.05 * draws)], ratios[math.ceil(0.95 * draws) - 1]


def gb_per_s(nbytes: int, seconds: float) -> float:
    """Effective bandwidth: the bytes that must move, over the time taken (GB = 1e9 B)."""
    return nbytes / seconds / 1e9 if seconds > 0 else math.inf


def format_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """An aligned text table. `align` has one character per column: 'l' or 'r'
    (default: first column left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]

    def line(cells):
        parts = [str(c).ljust(w) if a == "l" else str(c).rjust(w)
                 for c, w, a in zip(cells, widths, align)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
