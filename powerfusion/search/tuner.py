"""The tuner: compile and time the cost model's top candidates on this machine.

Candidates are points of the search space that the cost model prices: alternative
computations (as written, online softmax, one-pass variance) crossed with the
placement knob promote leaves open (rows on chip, or re-read from global memory)
and, on a CPU, streaming stores for output rows. The model ranks them; the tuner
measures the first few, and the model's first choice with streaming stores (which
the model does not price), within a time budget, and records the winner and whether
the model's first choice was it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from ..graph.graph import Graph
from ..targets import Target
from . import tuning_db


@dataclass
class TuneResult:
    choice: str                          # the measured winner's label
    model_choice: str                    # the cost model's first choice
    seconds: dict[str, float]            # median seconds per measured candidate
    key: str

    @property
    def model_was_right(self) -> bool:
        return self.choice == self.model_choice


def tune(graph: Graph, input_strides, target: Target, inputs, *, top: int = 4,
         budget_s: float = 20.0, repeat: int = 9, progress: bool = True) -> TuneResult:
    """Measure the top candidates on `inputs` (the caller's storage arrays)."""
    from ..benchmarking import interleaved
    from ..compiler import STREAMING, Executable, candidate_plans, generate_source

    streams = (False, True) if target.family == "cpu" else (False,)
    candidates = candidate_plans(graph, input_strides, target, ("local", "global"), streams)
    plain = [c for c in candidates if not c[0].endswith(STREAMING)]
    first = generate_source(plain[0][1])
    key = tuning_db.key_of(first)
    start = time.perf_counter()
    shortlist = plain[:top] + [c for c in candidates if c[0] == plain[0][0] + STREAMING]
    exes: dict[str, Executable] = {}
    seen_sources: set[str] = set()
    for n, (label, plan, _cost) in enumerate(shortlist):
        if time.perf_counter() - start > budget_s and exes:
            break
        source = first if n == 0 else generate_source(plan)
        if source in seen_sources:      # the same code as a faster-ranked candidate
            continue
        seen_sources.add(source)
        exes[label] = Executable(plan, source)
        if progress:
            _bar(n + 1, len(shortlist), f"compiled {label}")
    # timed in turn, one sample of each per round: on a shared machine the memory
    # bandwidth swings within seconds, and back-to-back runs would time the swing
    samples = interleaved({label: (lambda e=e: e.run(inputs)) for label, e in exes.items()},
                          repeats=repeat)
    seconds = {label: float(np.median(t)) for label, t in samples.items()}
    if progress:
        sys.stderr.write("\n  timed in turn: " + ", ".join(f"{label} {t * 1e3:.3f} ms"
                                                        for label, t in seconds.items()) + "\n")
    choice = min(seconds, key=seconds.get)
    result = TuneResult(choice, plain[0][0], seconds, key)
    tuning_db.record(target.name, key, {"choice": choice, "model_choice": result.model_choice,
                                        "seconds": seconds})
    return result


def _bar(done: int, total: int, label: str) -> None:
    width = 20
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r  tuning [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                     f"{label}   ")
    sys.stderr.flush()


def model_accuracy(target: str) -> tuple[int, int]:
    """(times the cost model's first choice was the measured best, kernels tuned)."""
    entries = tuning_db.load(target).values()
    right = sum(1 for e in entries if e.get("choice") == e.get("model_choice"))
    return right, len(entries)
