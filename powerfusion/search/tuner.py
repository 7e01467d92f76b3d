"""The tuner: compile and time the best-ranked few candidates on this machine.

Candidates are points of the search space (search/space.py): alternative computations
(as written, online softmax, one-pass variance) crossed with the placement knob
promote leaves open (rows on chip, or re-read from global memory) and, on a CPU, the
schedule knobs (streaming stores, tile, threads, dynamic pieces, vector width). The
cost model ranks them, corrected by what this device's measurements taught
(search/learned.py); the tuner measures the first few within a time budget, times
the fastest of them again head to head (one short round misorders them), and
records the winner, each measurement (the correction's next training data) and
whether the models' first choice was it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..benchmarking import interleaved
from ..errors import UnsupportedError
from ..graph.graph import Graph
from ..runtime.backends import executable, printed
from ..runtime.execute import BufferPool
from ..targets import Target
from . import learned, space, tuning_db
from .plan import Candidate


@dataclass
class TuneResult:
    choice: Candidate                    # the measured winner
    model_choice: Candidate              # the models' first choice (the shortlist's head)
    seconds: dict[Candidate, float]      # median seconds per measured candidate
    key: str
    space: int = 0                       # distinct candidates (by their code) in the space
    measured: list = field(default_factory=list)    # per measured candidate: features, s
    # the fastest few timed again head to head (what chose), median seconds; the first
    # round's `seconds` stay what the correction trains on: one measurement for all
    confirmed: dict[Candidate, float] = field(default_factory=dict)

    @property
    def model_was_right(self) -> bool:
        return self.choice == self.model_choice

    @property
    def entry(self) -> dict:
        """What the tuning database keeps under `key`."""
        return {"choice": self.choice, "model_choice": self.model_choice,
                "seconds": {c.label: t for c, t in self.seconds.items()},
                "confirmed": {c.label: t for c, t in self.confirmed.items()},
                "space": self.space, "measured": self.measured}


def tune(graph: Graph, input_strides, target: Target, inputs, *, top: int = 4,
         budget_s: float = 20.0, repeat: int = 9, progress: bool = True,
         dialect: str = "cpu", record: bool = True,
         correction: learned.Correction | None = None) -> TuneResult:
    """Measure `top` candidates on `inputs` (the caller's storage arrays; for CUDA, the
    caller's CUDA tensors or host arrays) compiled for `dialect` ("cpu" or a SIMT
    dialect), and record the winner in this machine's tuning database (`record=False`:
    leave that to the caller, as a distributed tune's driver does).

    Which: the first `top` by the cost model corrected by `correction` (default: the
    one learned from this device's tuning database). With nothing learned, the cost
    model's first `top` - 1 at the knobs' defaults and its first with streaming
    stores (which it does not price)."""
    points = search_space(graph, input_strides, target, dialect)
    if correction is None:
        correction = learned.Correction.from_db(target.name)
    shortlist = points.shortlist(correction, top)
    start = time.perf_counter()
    runs: dict[Candidate, object] = {}
    # every candidate writes the same arrays: each its own would leave the round's
    # first with the caches to itself and the rest with every other one's outputs to
    # evict (layernorm's streaming stores looked best that way and lose alone:
    # benchmarks/results/search-space-cpu-amd-zen5-2026-12-07-pool*)
    pool = BufferPool()
    for n, k in enumerate(shortlist):
        # past the budget only the untuned point still compiles: what tuning must beat
        if time.perf_counter() - start > budget_s and runs and k != points.untuned:
            continue
        candidate, plan, _cost, code = points.points[k]
        runs[candidate] = _runner(plan, code, dialect, inputs, pool)
        if progress:
            _bar(n + 1, len(shortlist), f"compiled {candidate.label}")
    # timed in turn, one sample of each per round: on a shared machine the memory
    # bandwidth swings within seconds, and back-to-back runs would time the swing
    samples = interleaved(runs, repeats=repeat)
    seconds = {c: float(np.median(t)) for c, t in samples.items()}
    confirmed = _confirmed(runs, seconds, repeat, points.points[points.untuned][0])
    if progress:
        sys.stderr.write("\n  timed in turn: " + ", ".join(f"{c.label} {t * 1e3:.3f} ms"
                                                        for c, t in seconds.items()) + "\n")
    choice = min(confirmed or seconds, key=(confirmed or seconds).get)
    measured = [{"candidate": dataclasses.asdict(points.points[k][0]),
                 "features": points.features[k], "seconds": seconds[points.points[k][0]]}
                for k in shortlist if points.points[k][0] in seconds]
    result = TuneResult(choice, points.points[shortlist[0]][0], seconds, points.key,
                        len(points.points), measured, confirmed)
    if record:
        tuning_db.record(target.name, points.key, result.entry)
    return result


CONTENDERS = 3          # the fastest few of the first round are timed again
CONTENDER_MARGIN = 1.5  # unless the round put them this far behind its fastest
CONFIRM_SAMPLE_S = 0.02


def _confirmed(runs: dict, seconds: dict, repeat: int, untuned: Candidate) -> dict:
    """The first round's fastest few timed again, head to head with long samples, and
    the plan an untuned run compiles beside them: their medians, which decide ({} when
    one stands alone). One short round on a shared machine misorders candidates by up
    to 1.4x (measured: benchmarks/results/search-space-*); a candidate that lost by
    more than CONTENDER_MARGIN is out, but the untuned plan stays in: tuning never
    trades it for a point that only one short round preferred."""
    fastest = min(seconds.values())
    contenders = [c for c in sorted(seconds, key=seconds.get)[:CONTENDERS]
                  if seconds[c] <= CONTENDER_MARGIN * fastest]
    if untuned in seconds and untuned not in contenders:
        contenders.append(untuned)
    if len(contenders) < 2:
        return {}
    again = interleaved({c: runs[c] for c in contenders}, repeats=2 * repeat + 1,
                        min_sample_s=CONFIRM_SAMPLE_S)
    return {c: float(np.median(t)) for c, t in again.items()}


@dataclass
class Space:
    """A graph's search space as the tuner sees it: each point whose code differs from
    every better-ranked one's (a knob that changes nothing in a kernel is no new point),
    in the cost model's order, with the features the correction reads."""

    key: str                        # the tuning database's key: the default plan's code
    points: list[tuple]             # (candidate, plan, estimated seconds, printed code)
    features: list[dict]
    defaults: list[int]             # the points at the knobs' defaults, non-streaming
                                    # (computations x placements x recomputing or not)
    untuned: int = 0                # the point an untuned run compiles (the key's code)

    def shortlist(self, correction: learned.Correction, top: int) -> list[int]:
        """The `top` points to measure: the corrected model's first, or, with nothing
        learned, the cost model's first `top` - 1 at the knobs' defaults and its first
        with streaming stores (which it does not price). Two or more always hold the
        untuned point: what tuning must beat."""
        ranked = self._ranked(correction, top)
        if top > 1 and self.untuned not in ranked:
            ranked = ranked[:top - 1] + [self.untuned]
        return ranked

    def _ranked(self, correction: learned.Correction, top: int) -> list[int]:
        if correction.trained:
            # the correction knows the knobs from other kernels, not how this kernel's
            # computations and placements compare (the cost model's part, and often
            # the largest): each of those comes first at the knobs' defaults, the point
            # the cost model prices (its best-ranked point where the space has no such
            # one). Its best-ranked point instead let a knob the correction favours
            # elsewhere hide a better computation: column_sum's split columns measured
            # only with narrow vectors, 6-9% behind (search-space-*-2026-12-07*)
            ranked = correction.rank(self.features)
            kinds = {}
            for k in self.defaults + ranked:
                candidate = self.points[k][0]
                kinds.setdefault((candidate.computation, candidate.placement,
                                  candidate.recompute), k)
            firsts = sorted(kinds.values(), key=ranked.index)
            return (firsts + [k for k in ranked if k not in firsts])[:top]
        # untrained, the cost model's first is the untuned plan (compile_graph's): it
        # never recomputes under broadcasts, which the other defaults may
        first = self.points[self.untuned][0]
        defaults = [self.untuned] + [k for k in self.defaults if k != self.untuned]
        streamed = [k for k, p in enumerate(self.points)
                    if p[0] == dataclasses.replace(first, streaming=True)]
        if streamed and top > 1:
            return defaults[:top - 1] + streamed
        return defaults[:top]


def search_space(graph: Graph, input_strides, target: Target, dialect: str) -> Space:
    knobs = space.knob_values(target)
    candidates = space.candidate_plans(graph, input_strides, target, ("local", "global"),
                                       knobs["streaming"], knobs)
    # the key is the code of the plan compile_graph makes untuned (it never recomputes
    # under broadcasts); recomputing is an alternative computation: one of the defaults
    default = [(c, p) for c, p, _ in candidates if c == Candidate(c.computation, c.placement)]
    untuned = printed(default[0][1], dialect).source
    key = tuning_db.key_of(untuned)
    seen: set[str] = set()
    points = []
    for candidate, plan, cost in candidates:
        try:
            code = printed(plan, dialect)
        except UnsupportedError:    # e.g. a GPU kernel whose shared memory won't fit
            continue
        if code.source not in seen:
            seen.add(code.source)
            points.append((candidate, plan, cost, code))
    features = [learned.features(c, p, cost, target) for c, p, cost, _ in points]
    defaults = {c for c, _, _ in candidates
                if c == Candidate(c.computation, c.placement, recompute=c.recompute)}
    return Space(key, points, features, [k for k, p in enumerate(points) if p[0] in defaults],
                 next(k for k, p in enumerate(points) if p[3].source == untuned))


def device_inputs(inputs, dialect: str) -> list:
    """Host arrays as the tuner times them: on the device for CUDA (a kernel's time,
    not the copies around it), as they are elsewhere."""
    if dialect != "cuda":
        return list(inputs)
    import torch

    return [torch.from_numpy(a).cuda() for a in inputs]


def _runner(plan, code, dialect: str, inputs, pool: BufferPool):
    """One call of the plan's executable on inputs, finished when it returns: CUDA
    tensors run on the device (synchronised), host arrays as the executable takes
    them (a SIMT runtime's copies in and out included; a CPU one's arrays from pool)."""
    exe = executable(plan, dialect, code, pool)
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
