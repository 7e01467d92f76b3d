"""`pf.advise`: which parts of a workload are memory-bound, and what PowerFusion can
make of them, before anyone rewrites anything.

For a PyTorch model (with example inputs) it measures eager PyTorch once with
torch.profiler: the time inside library compute (matmul, convolution, attention,
embedding: every backend calls the same ATen functions) and the rest, which is what a
compiler of memory-bound ops can change. It then compiles the model with the
PowerFusion backend, prices every kernel with the cost model (bytes at each memory
level over the Target's bandwidths, or its arithmetic where that takes longer: a
roofline), adds what running them costs from Python, and predicts the step's time; Amdahl's law bounds the speedup by the library's share.
For a numpy function it prices the kernels of `pf.explain`'s plan against numpy's
measured time.

    print(pf.advise(model, (input_ids,)))
    print(pf.advise(fn, x, w))                       # a numpy-style function
    powerfusion advise --torch mymodels:bert         # a factory returning (model, inputs)
    powerfusion advise layers.py:rmsnorm --shape 2048x4096 --shape 4096
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from .api import _checked_target, explain, jit
from .benchmarking import interleaved, median_s
from .errors import UnsupportedError
from .frontend import torch_stats
from .graph.views import contiguous_strides
from .passes.traffic import footprint
from .report import Report
from .runtime.backends import get_target
from .search.compute import compute_seconds
from .search.cost import kernel_cost

# What running compiled kernels costs from Python, beyond the kernels' own time, on a
# CPU (benchmarks/torch_overhead.py measures it; results in benchmarks/results/):
REGION_CALL_S = 8e-6         # a region: guard, allocation, pointers, launch
VIEW_CHAIN_S = 1.5e-6        # a folded chain of views: one as_strided and its guard
GRAPH_CALL_S = 15e-6         # dynamo's guards and AOTAutograd's wrapper, per graph


@dataclass
class KernelAdvice:
    """One PowerFusion region (torch) or kernel (numpy) as the cost model sees it."""

    name: str
    ops: list[str]
    global_bytes: int            # bytes the kernels move at the outermost memory level
    min_bytes: int               # every input read once, every output written once
    predicted_s: float           # the cost model's time for its kernels


@dataclass
class Advice:
    what: str                    # the model or function advised on
    baseline: str                # "eager PyTorch" or "numpy"
    baseline_s: float            # measured time per step
    library_s: float             # of which inside library compute (stays as it is)
    predicted_s: float           # PowerFusion's predicted time per step
    kernels: list[KernelAdvice] = field(default_factory=list)
    glue_s: float = 0.0          # the predicted cost of running the kernels from Python
    fallbacks: dict = field(default_factory=dict)   # ops that would run eagerly, counted
    measured_s: float | None = None                 # PowerFusion's measured time, if asked

    @property
    def predicted_speedup(self) -> float:
        return self.baseline_s / self.predicted_s if self.predicted_s > 0 else 1.0

    @property
    def bound(self) -> float:
        """The most any compiler of memory-bound ops can give: library time stays."""
        return self.baseline_s / self.library_s if self.library_s > 0 else float("inf")

    def __str__(self) -> str:
        ms = 1e3
        share = self.library_s / self.baseline_s if self.baseline_s else 0.0
        lines = [f"{self.what}: {self.baseline_s * ms:.2f} ms per call with {self.baseline} "
                 "(measured)"]
        if self.library_s:
            lines += [f"  library compute (matmul, convolution, attention, embedding): "
                      f"{self.library_s * ms:.2f} ms ({share:.0%})",
                      f"  memory-bound ops and the glue between them: "
                      f"{(self.baseline_s - self.library_s) * ms:.2f} ms ({1 - share:.0%})"]
        kernel_s = sum(k.predicted_s for k in self.kernels)
        if not self.kernels and not self.library_s:
            lines.append("PowerFusion: nothing to compile (no kernel: the results are "
                         "inputs or constants)")
            return "\n".join(lines)
        lines.append(f"PowerFusion: {len(self.kernels)} "
                     f"{'regions' if self.library_s else 'kernels'}, predicted "
                     f"{kernel_s * ms:.2f} ms of kernels + {self.glue_s * ms:.2f} ms to run "
                     f"them -> {self.predicted_s * ms:.2f} ms per call: "
                     f"{self.predicted_speedup:.2f}x {self.baseline}")
        if self.measured_s is not None:
            lines.append(f"  measured: {self.measured_s * ms:.2f} ms "
                         f"({self.baseline_s / self.measured_s:.2f}x)")
        if self.library_s:
            lines.append(f"  at most {self.bound:.2f}x: {share:.0%} of the time is library "
                         "compute, which no fusion changes")
        if self.fallbacks:
            lines.append("  ops PowerFusion would leave to PyTorch eagerly: " + ", ".join(
                f"{op} x{n}" for op, n in sorted(self.fallbacks.items())))
        if self.kernels:
            lines.append("")
            width = max(len(k.name) for k in self.kernels)
            lines.append(f"  {'':{width}}  predicted  bytes moved / minimum  ops")
            for k in sorted(self.kernels, key=lambda k: -k.predicted_s):
                ratio = k.global_bytes / k.min_bytes if k.min_bytes else 1.0
                ops = ", ".join(dict.fromkeys(o.split(".")[1] if o.startswith("aten.") else o
                                              for o in k.ops))
                lines.append(f"  {k.name:{width}}  {k.predicted_s * 1e6:7.1f} us  "
                             f"{_mb(k.global_bytes):>8} / {_mb(k.min_bytes):<8} "
                             f"{ratio:4.2f}x  {ops[:60]}")
        return "\n".join(lines)


    def plot(self, path: str) -> str:
        """Draw the time per part, the baseline beside the prediction (and the
        measurement, if taken), to path (PNG); returns the path."""
        try:
            import matplotlib
        except ImportError:
            raise UnsupportedError("a plot needs matplotlib: pip install matplotlib") from None
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        kernel_s = sum(k.predicted_s for k in self.kernels)
        bars = {self.baseline: (self.library_s, self.baseline_s - self.library_s, 0.0),
                "PowerFusion, predicted": (self.library_s, kernel_s, self.glue_s)}
        if self.measured_s is not None:
            bars["PowerFusion, measured"] = (self.library_s, 0.0,
                                             max(0.0, self.measured_s - self.library_s))
        fig, ax = plt.subplots(figsize=(7, 3))
        names = list(bars)
        left = [0.0] * len(names)
        for k, (part, colour) in enumerate([("library compute", "#999999"),
                                            ("memory-bound ops / kernels", "#1f77b4"),
                                            ("glue (measured: everything else)", "#ff7f0e")]):
            widths = [1e3 * bars[n][k] for n in names]
            ax.barh(names, widths, left=left, color=colour, label=part)
            left = [a + b for a, b in zip(left, widths)]
        ax.set_xlabel("ms per call")
        ax.set_title(f"{self.what}: predicted {self.predicted_speedup:.2f}x, at most "
                     f"{self.bound:.2f}x" if self.library_s else self.what, fontsize=9)
        ax.invert_yaxis()
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def _median_time(step, repeats: int) -> float:
    step()
    step()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _interleaved_medians(baseline, candidate, repeats: int) -> tuple[float, float]:
    samples = interleaved({"baseline": baseline, "candidate": candidate}, repeats, warmup=2)
    return median_s(samples["baseline"]), median_s(samples["candidate"])


def library_share(step, calls: int = 3) -> float:
    """The fraction of `step`'s time spent inside library compute (the outermost such
    ATen calls), from torch.profiler; a fraction of the profiled run itself, so that it
    applies to a median measured apart from it (the profiler slows the rest down)."""
    from torch.profiler import profile

    from .frontend.torch_backend.support import is_library_compute

    step()
    start = time.perf_counter()
    with profile() as prof:
        for _ in range(calls):
            step()
    wall_us = (time.perf_counter() - start) * 1e6
    total_us = 0.0
    for ev in prof.events():
        if not is_library_compute(ev.name):
            continue
        parent = ev.cpu_parent
        while parent is not None and not is_library_compute(parent.name):
            parent = parent.cpu_parent
        if parent is None:
            total_us += ev.time_range.elapsed_us()
    return min(1.0, total_us / wall_us) if wall_us > 0 else 0.0


def _roofline(program, memory_s: float, target) -> float:
    """A kernel's predicted time: its bytes' time or its arithmetic's, the larger."""
    if target.family != "cpu":
        return memory_s
    return max(memory_s, compute_seconds(program, target))


def _region_advice(region, compiled) -> KernelAdvice:
    plan = compiled.executable.plan
    # the inputs' strides only tell broadcast (stride-0) dims apart: none in aten graphs
    report = Report.from_plan(plan, "", [contiguous_strides(n.shape) for n in plan.graph.inputs])
    return KernelAdvice(region.label.split(".")[-1], list(region.ops), report.global_bytes,
                        report.min_global_bytes,
                        sum(_roofline(ck.program, kernel_cost(ck, plan.target), plan.target)
                            for ck in plan.kernels))


def advise_torch(model, inputs, *, repeats: int = 10, measure: bool = False) -> Advice:
    """Advice for a torch.nn.Module (or function) on example inputs: a tuple of
    positional arguments, a dict of keyword arguments or one tensor. Inference, under
    no_grad. The model is compiled afresh for the advice; other compiled models in the
    process are left as they are."""
    import torch

    from .frontend import torch_backend as tb

    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if isinstance(inputs, dict):
        args, kwargs = (), dict(inputs)
    elif isinstance(inputs, (tuple, list)):
        args, kwargs = tuple(inputs), {}
    else:
        raise TypeError(f"pf.advise: inputs: expected a tensor, a tuple of arguments or a "
                        f"dict of keyword arguments, got {type(inputs).__name__}")

    def step_of(fn):
        def step():
            with torch.no_grad():
                return fn(*args, **kwargs)
        return step

    eager = step_of(model)
    baseline = _median_time(eager, repeats)
    library = baseline * library_share(eager)

    before = torch_stats.compile_stats()["fallback_by_op"]
    def backend(gm, example_inputs, **kw):
        return tb.powerfusion_backend(gm, example_inputs, **kw)

    with tb.collect_graphs() as graphs:
        # a backend of its own: dynamo compiles the model again for it (its cache keys on
        # the backend), beside any compiled version the caller holds
        compiled = torch.compile(model, backend=backend)
        step = step_of(compiled)
        step()
    after = torch_stats.compile_stats()["fallback_by_op"]
    # (counted process-wide: another thread compiling at the same time adds its own)
    fallbacks = {op: n - before.get(op, 0) for op, n in after.items()
                 if n > before.get(op, 0)}
    regions = [m for _, gm, _ in graphs for m in gm.modules() if isinstance(m, tb.Region)]
    kernels = [_region_advice(r, c) for r in regions for c in r.cache.values()
               if c.executable is not None and not r.failed]
    glue = (len(regions) * REGION_CALL_S + sum(n for _, _, n in graphs) * VIEW_CHAIN_S
            + len(graphs) * GRAPH_CALL_S)
    predicted = library + sum(k.predicted_s for k in kernels) + glue
    name = type(model).__name__ if isinstance(model, torch.nn.Module) else \
        getattr(model, "__name__", "model")
    advice = Advice(name, "eager PyTorch", baseline, library, predicted, kernels, glue,
                    fallbacks)
    if measure:                 # both again, interleaved: the machine's drift hits both
        advice.baseline_s, advice.measured_s = _interleaved_medians(eager, step, repeats)
        advice.library_s = advice.baseline_s * library / baseline
        advice.predicted_s += advice.library_s - library
    return advice


def advise_numpy(fn, *arrays, repeats: int = 10, measure: bool = False,
                 target: str | None = None) -> Advice:
    """Advice for a numpy-style function on example arrays: numpy's measured time
    against the cost model's price of PowerFusion's kernels."""
    baseline = _median_time(lambda: fn(*arrays), repeats)
    report = explain(fn, *arrays, target=target)
    machine = get_target(_checked_target(target))
    kernels = []
    for program, seconds in zip(report.programs, report.predicted_seconds):
        moved = sum(footprint(program)["global"].values())
        # the minimum is the whole function's: one kernel's share of it is not known
        kernels.append(KernelAdvice(program.name, [], moved, report.min_global_bytes
                                    if len(report.programs) == 1 else moved,
                                    _roofline(program, seconds, machine)))
    glue = len(kernels) * REGION_CALL_S
    predicted = sum(k.predicted_s for k in kernels) + glue
    advice = Advice(getattr(fn, "__name__", "function") + "(" + ", ".join(
        f"{np.asarray(a).dtype}{list(np.shape(a))}" for a in arrays) + ")", "numpy",
        baseline, 0.0, predicted, kernels, glue)
    if measure:
        compiled = jit(fn, target=target)
        advice.baseline_s, advice.measured_s = _interleaved_medians(
            lambda: fn(*arrays), lambda: compiled(*arrays), repeats)
    return advice


def advise(fn, *args, repeats: int = 10, measure: bool = False, **kwargs) -> Advice:
    """`pf.advise(model, inputs)` for a torch model or function on example inputs (a
    tuple of arguments or a dict of keyword arguments); `pf.advise(fn, *arrays)` for a
    numpy-style function."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and (isinstance(fn, torch.nn.Module) or (
            len(args) == 1 and isinstance(args[0], (tuple, list, dict))
            and any(isinstance(a, torch.Tensor) for a in (
                args[0].values() if isinstance(args[0], dict) else args[0])))):
        return advise_torch(fn, args[0] if len(args) == 1 else args, repeats=repeats,
                            measure=measure)
    return advise_numpy(fn, *args, repeats=repeats, measure=measure, **kwargs)
