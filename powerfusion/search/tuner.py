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

import dataclasses
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..benchmarking import interleaved
from ..errors import UnsupportedError
from ..graph.graph import Graph
from ..runtime.backends import executable, printed
from ..targets import Target
from . import tuning_db
from .plan import Candidate
from .space import candidate_plans


@dataclass
class TuneResult:
    choice: Candidate                    # the measured winner
    model_choice: Candidate              # the cost model's first choice
    seconds: dict[Candidate, float]      # median seconds per measured candidate
    key: str

    @property
    def model_was_right(self) -> bool:
        return self.choice == self.model_choice

    @property
    def entry(self) -> dict:
        """What the tuning database keeps under `key`."""
        return {"choice": self.choice, "model_choice": self.model_choice,
                "seconds": {c.label: t for c, t in self.seconds.items()}}


def tune(graph: Graph, input_strides, target: Target, inputs, *, top: int = 4,
         budget_s: float = 20.0, repeat: int = 9, progress: bool = True,
         dialect: str = "cpu", record: bool = True) -> TuneResult:
    """Measure the top candidates on `inputs` (the caller's storage arrays; for CUDA,
    the caller's CUDA tensors or host arrays) compiled for `dialect` ("cpu" or a SIMT
    dialect), and record the winner in this machine's tuning database (`record=False`:
    leave that to the caller, as a distributed tune's driver does)."""
    streams = (False, True) if target.family == "cpu" else (False,)
    candidates = candidate_plans(graph, input_strides, target, ("local", "global"), streams)
    plain = [c for c in candidates if not c[0].streaming]
    first = printed(plain[0][1], dialect)
    key = tuning_db.key_of(first.source)
    start = time.perf_counter()
    streamed = dataclasses.replace(plain[0][0], streaming=True)
    shortlist = plain[:top] + [c for c in candidates if c[0] == streamed]
    runs: dict[Candidate, object] = {}
    seen_sources: set[str] = set()
    for n, (candidate, plan, _cost) in enumerate(shortlist):
        if time.perf_counter() - start > budget_s and runs:
            break
        try:
            code = first if n == 0 else printed(plan, dialect)
        except UnsupportedError:        # e.g. a GPU kernel whose shared memory won't fit
            continue
        if code.source in seen_sources:     # the same code as a faster-ranked candidate
            continue
        seen_sources.add(code.source)
        runs[candidate] = _runner(plan, code, dialect, inputs)
        if progress:
            _bar(n + 1, len(shortlist), f"compiled {candidate.label}")
    # timed in turn, one sample of each per round: on a shared machine the memory
    # bandwidth swings within seconds, and back-to-back runs would time the swing
    samples = interleaved(runs, repeats=repeat)
    seconds = {c: float(np.median(t)) for c, t in samples.items()}
    if progress:
        sys.stderr.write("\n  timed in turn: " + ", ".join(f"{c.label} {t * 1e3:.3f} ms"
                                                        for c, t in seconds.items()) + "\n")
    choice = min(seconds, key=seconds.get)
    result = TuneResult(choice, plain[0][0], seconds, key)
    if record:
        tuning_db.record(target.name, key, result.entry)
    return result


def device_inputs(inputs, dialect: str) -> list:
    """Host arrays as the tuner times them: on the device for CUDA (a kernel's time,
    not the copies around it), as they are elsewhere."""
    if dialect != "cuda":
        return list(inputs)
    import torch

    return [torch.from_numpy(a).cuda() for a in inputs]


def _runner(plan, code, dialect: str, inputs):
    """One call of the plan's executable on inputs, finished when it returns: CUDA
    tensors run on the device (synchronised), host arrays as the executable takes
    them (a SIMT runtime's copies in and out included)."""
    exe = executable(plan, dialect, code)
    if dialect == "cuda" and inputs and all(getattr(a, "is_cuda", False) for a in inputs):
        import torch

        def on_device():
            exe.run_device(list(inputs))
            torch.cuda.synchronize()
        return on_device
    return lambda: exe.run(inputs)


def _bar(done: int, total: int, label: str) -> None:
    width = 20
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r  tuning [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                     f"{label}   ")
    sys.stderr.flush()


def model_accuracy(target: str) -> tuple[int, int]:
    """(times the cost model's first choice was the measured best, kernels tuned)."""
    entries = tuning_db.load(target).values()
    right = sum(1 for e in entries if e["choice"] == e.get("model_choice"))
    return right, len(entries)
