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

import operator
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from .api import _checked_target, explain, jit
from .benchmarking import interleaved
from .errors import UnsupportedError
from .frontend import torch_stats
from .graph.views import contiguous_strides
from .passes.traffic import footprint
from .report import Report
from .runtime import calibration
from .runtime.backends import get_target
from .runtime.calibration import best_of
from .search.compute import compute_seconds
from .search.cost import kernel_cost


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
    predicted_s: float           # PowerFusion's predicted time per step: the sum of
    kernels: list[KernelAdvice] = field(default_factory=list)      # its kernels,
    glue_s: float = 0.0          # calling them (regions, graphs) from Python,
    fallbacks: dict = field(default_factory=dict)   # (ops that would run eagerly, counted)
    measured_s: float | None = None                 # (PowerFusion's measured time, if asked,
    measured_baseline_s: float | None = None        # beside the baseline's, interleaved)
    library_calls_s: float = 0.0  # the library calls of the compiled model (torch) and
    torch_ops_s: float = 0.0     # its other torch calls: views, index, creation, fallbacks
    attention: int = 0           # attention calls fused into one library call (torch)

    @property
    def predicted_speedup(self) -> float:
        return self.baseline_s / self.predicted_s if self.predicted_s > 0 else 1.0

    @property
    def measured_speedup(self) -> float | None:
        """The speedup measured (`measure=True`): baseline and PowerFusion interleaved, so
        that the machine's drift hits both; the prediction is a ratio of its own moment."""
        if self.measured_s is None:
            return None
        return (self.measured_baseline_s or self.baseline_s) / self.measured_s

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
                     f"them" + (f" + {self.library_calls_s * ms:.2f} ms of library calls + "
                                f"{self.torch_ops_s * ms:.2f} ms of other torch calls"
                                if self.library_s else "")
                     + f" -> {self.predicted_s * ms:.2f} ms per call: "
                     f"{self.predicted_speedup:.2f}x {self.baseline}")
        if self.attention:
            lines.append(f"  attention: {self.attention} written out (matmul, softmax, "
                         "matmul) become fused attention calls, priced as such")
        if self.measured_s is not None:
            lines.append(f"  measured: {self.measured_s * ms:.2f} ms "
                         f"({self.measured_speedup:.2f}x; {self.baseline} "
                         f"{(self.measured_baseline_s or self.baseline_s) * ms:.2f} ms beside it)")
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
                "PowerFusion, predicted": (self.library_calls_s, kernel_s,
                                           self.glue_s + self.torch_ops_s)}
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


# how a time is read off its samples: the median (a quiet machine), or the best sample
# (a machine shared with others: the samples they disturbed are not the program's)
STATISTICS = {"median": statistics.median, "min": min}


def _statistic(name: str):
    try:
        return STATISTICS[name]
    except KeyError:
        raise ValueError(f"pf.advise: statistic: expected one of {', '.join(STATISTICS)}, "
                         f"got {name!r}") from None


def _time(step, repeats: int, statistic: str = "median") -> float:
    step()
    step()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return _statistic(statistic)(samples)


def _interleaved(baseline, candidate, repeats: int,
                 statistic: str = "median") -> tuple[float, float]:
    samples = interleaved({"baseline": baseline, "candidate": candidate}, repeats, warmup=2)
    return (_statistic(statistic)(samples["baseline"]),
            _statistic(statistic)(samples["candidate"]))


def _profile_events(step, calls: int, statistic: str = "median"):
    """torch.profiler's events of `calls` runs of step (after one unprofiled), with the
    inputs' shapes, and the wall time of one run under the profiler in microseconds; with
    statistic "min", each run profiled apart and only the fastest one's events kept (the
    run others disturbed least)."""
    from torch.profiler import profile

    step()
    runs = []
    for _ in range(calls if statistic == "min" else 1):
        start = time.perf_counter()
        with profile(record_shapes=True) as prof:
            for _ in range(1 if statistic == "min" else calls):
                step()
        runs.append(((time.perf_counter() - start) * 1e6, prof.events()))
    wall_us, events = min(runs, key=lambda run: run[0])
    return events, wall_us / (1 if statistic == "min" else calls)


def _outermost_library(events):
    """The library-compute events not inside another one."""
    from .frontend.torch_backend.support import is_library_compute

    for ev in events:
        if not is_library_compute(ev.name):
            continue
        parent = ev.cpu_parent
        while parent is not None and not is_library_compute(parent.name):
            parent = parent.cpu_parent
        if parent is None:
            yield ev


def _shapes_key(name: str, shapes) -> tuple:
    """An aten call's price key: its name and its tensor arguments' shapes (0-d tensors
    and non-tensors left out, as the profiler records them as [])."""
    return name, tuple(tuple(s) for s in shapes if isinstance(s, (list, tuple)) and s
                       and all(isinstance(d, int) for d in s))


def eager_profile(step, calls: int = 5, statistic: str = "median") -> tuple[float, dict]:
    """(library share, prices) of `step` under torch.profiler. The share is the fraction
    of the profiled run inside library compute (the outermost such ATen calls), so that
    it applies to a median measured apart from it (the profiler slows the rest down);
    prices maps (aten name, input shapes) to one such library call's share of the
    profiled run, at any depth (eager's linear runs an addmm, as a compiled graph calls
    it): the mean of those calls, or their best with statistic "min". Shares, like the
    library share, so that they apply to eager's time measured apart from the profile
    (a profiled run another process slowed down slows its calls with it)."""
    from .frontend.torch_backend.support import is_library_compute

    events, wall_us = _profile_events(step, calls, statistic)
    runs = 1 if statistic == "min" else calls       # the runs events holds
    total_us = sum(ev.time_range.elapsed_us() for ev in _outermost_library(events)) / runs
    samples: dict[tuple, list[float]] = {}
    for ev in events:
        if is_library_compute(ev.name):
            key = _shapes_key(ev.name, ev.input_shapes or ())
            samples.setdefault(key, []).append(ev.time_range.elapsed_us() / wall_us)
    price = min if statistic == "min" else statistics.fmean
    prices = {key: price(v) for key, v in samples.items()}
    return (min(1.0, total_us / wall_us) if wall_us > 0 else 0.0), prices


def library_share(step, calls: int = 3) -> float:
    """The fraction of `step`'s time spent inside library compute (`eager_profile`)."""
    return eager_profile(step, calls)[0]


def _roofline(program, memory_s: float, target, math_s=None) -> float:
    """A kernel's predicted time: its bytes' time or its arithmetic's, the larger."""
    if target.family != "cpu":
        return memory_s
    return max(memory_s, compute_seconds(program, target, math_s))


def _region_advice(region, compiled, math_s=None) -> KernelAdvice:
    plan = compiled.executable.plan
    # the inputs' strides only tell broadcast (stride-0) dims apart: none in aten graphs
    report = Report.from_plan(plan, "", [contiguous_strides(n.shape) for n in plan.graph.inputs])
    return KernelAdvice(region.label.split(".")[-1], list(region.ops), report.global_bytes,
                        report.min_global_bytes,
                        sum(_roofline(ck.program, kernel_cost(ck, plan.target), plan.target,
                                      math_s) for ck in plan.kernels))


def _measure_calls(trials: int = 25) -> dict:
    """The calibration's call figures: a pf.jit function of one tiny kernel called;
    where torch is installed, a one-region function compiled by the PowerFusion backend,
    its region's lean function called alone (region_call_s), then the whole compiled
    call (the difference: graph_call_s)."""
    x16 = np.ones(16, np.float32)
    tiny = jit(lambda v: v * 2.0 + 1.0)
    figures = {"jit_call_s": best_of(lambda: tiny(x16), trials, min_s=1e-3)}
    try:
        import torch
    except ImportError:
        return figures

    from .frontend import torch_backend as tb

    x = torch.randn(16)
    with tb.collect_graphs() as graphs:
        # a backend of its own: dynamo compiles afresh for it (its cache keys on the backend)
        compiled = torch.compile(lambda v: v * 2.0 + 1.0, dynamic=False,
                                 backend=lambda gm, ex, **kw: tb.powerfusion_backend(gm, ex, **kw))
        with torch.no_grad():
            compiled(x)
            compiled(x)
    (_, gm, _), = graphs
    (lean,) = [n.target for n in gm.graph.nodes
               if n.op == "call_function" and hasattr(n.target, "source")]
    region = lean.__globals__["region"]

    def slow():
        region.hot = None                # what a region without a lean path goes through
        return region.forward(x)

    with torch.no_grad():
        region_s = best_of(lambda: lean(x), trials, min_s=1e-3)
        slow_s = best_of(slow, trials, min_s=1e-3)
        whole_s = best_of(lambda: compiled(x), trials, min_s=1e-3)
    return figures | {"region_call_s": region_s, "region_slow_call_s": slow_s,
                      "graph_call_s": max(0.0, whole_s - region_s)}


def calibrate(path=None) -> dict:
    """Measure this CPU's calibration now (a few seconds; on a quiet machine) and record
    it in the target file (`powerfusion probe` does, after the bandwidths)."""
    calibration.write(calibration.measure(_measure_calls), path)
    return calibration.read(path)


def machine_calibration(path=None, *, torch_calls: bool = False) -> dict:
    """This CPU's calibration (`runtime.calibration`): read from the target file, or
    measured now and recorded there (again where torch's figures are asked for and the
    record, made without torch, lacks them)."""
    record = calibration.calibration(_measure_calls, path)
    if torch_calls and any(record[k] is None for k in calibration.CALLS):
        record = calibrate(path)
    return record


def _materialised(value):
    """A real tensor laid out as a node's metadata (a FakeTensor) says: random floats,
    integer and boolean zeros (valid indices); anything else as it is."""
    import torch

    if not isinstance(value, torch.Tensor):
        return value

    def hint(n):                         # a symbolic size: the value it was traced with
        return n.node.hint if isinstance(n, torch.SymInt) else n

    shape, stride = tuple(map(hint, value.shape)), tuple(map(hint, value.stride()))
    offset = hint(value.storage_offset())
    extent = offset + 1 + sum((n - 1) * st for n, st in zip(shape, stride) if n > 0)
    base = torch.zeros(extent if all(shape) else 0, dtype=value.dtype)
    if value.dtype.is_floating_point:
        base.normal_()
    return base.as_strided(shape, stride, offset)


def _timed_alone(gm, node, repeats: int, statistic: str) -> float:
    """Median seconds of one call of an fx node's function (or module) on tensors shaped
    as its arguments' metadata say (torch calls a compiled graph leaves to PyTorch)."""
    import torch
    import torch.fx

    def value(a):
        return _materialised(a.meta.get("val")) if isinstance(a, torch.fx.Node) else a

    args = torch.fx.node.map_aggregate(node.args, lambda a: value(a))
    kwargs = torch.fx.node.map_aggregate(node.kwargs, lambda a: value(a))
    fn = gm.get_submodule(node.target) if node.op == "call_module" else node.target
    with torch.no_grad():
        return _time(lambda: fn(*args, **kwargs), repeats, statistic)


@dataclass
class _Pricing:
    """What a compiled model's graphs cost, part by part (`_price_graphs`)."""

    kernels: list[KernelAdvice] = field(default_factory=list)
    library_s: float = 0.0       # its library calls (eager's price, or timed alone)
    torch_ops_s: float = 0.0     # its other torch calls (views, index, creation, fallbacks)
    regions: int = 0             # regions called through their lean function,
    slow_regions: int = 0        # and through Region.forward (no lean path)
    attention: int = 0           # fused attention calls the graphs make


def _region_of(gm, node):
    """The Region a node calls (as a module, or through its lean function), or None."""
    from .frontend import torch_backend as tb

    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return module if isinstance(module, tb.Region) else None
    if node.op == "call_function" and hasattr(node.target, "source"):
        return getattr(node.target, "__globals__", {}).get("region")
    return None


def _price_graphs(graphs, prices: dict, math_s, repeats: int, statistic: str) -> _Pricing:
    """Every call of the compiled graphs, priced: regions by the cost model; library
    calls at eager's measured price where eager made the same call (same op, same
    shapes), else timed alone; other torch calls timed alone; getitem is free."""
    import torch
    import torch.fx

    from .frontend.torch_backend.support import is_library_compute

    out = _Pricing()
    for _, gm, _ in graphs:
        for node in gm.graph.nodes:
            if node.op not in ("call_function", "call_module", "call_method"):
                continue
            region = _region_of(gm, node)
            compiled = [] if region is None or region.failed else \
                [c for c in ([region.hot[1]] if region.hot else region.cache.values())
                 if c.executable is not None]
            if compiled:
                lean = node.op == "call_function" and hasattr(node.target, "source")
                out.regions += lean
                out.slow_regions += not lean
                out.kernels += [_region_advice(region, c, math_s) for c in compiled]
                continue
            if region is not None:               # no kernel: torch copies, or eager ops
                out.torch_ops_s += _timed_alone(gm, node, repeats, statistic)
                continue
            if node.target is operator.getitem:
                continue
            target = node.target
            if isinstance(target, torch._ops.OpOverload) and is_library_compute(
                    target.overloadpacket.__name__):
                packet = target.overloadpacket.__name__
                out.attention += "scaled_dot_product" in packet
                shapes = []                      # in argument order, repeats kept
                torch.fx.node.map_arg((node.args, node.kwargs), lambda a: shapes.append(
                    list(getattr(a.meta.get("val"), "shape", ()))))
                key = _shapes_key(f"aten::{packet}", shapes)
                out.library_s += prices.get(key) or _timed_alone(gm, node, repeats, statistic)
            else:
                out.torch_ops_s += _timed_alone(gm, node, repeats, statistic)
    return out


def advise_torch(model, inputs, *, repeats: int = 10, measure: bool = False,
                 statistic: str = "median") -> Advice:
    """Advice for a torch.nn.Module (or function) on example inputs: a tuple of
    positional arguments, a dict of keyword arguments or one tensor. Inference, under
    no_grad. The model is compiled afresh for the advice; other compiled models in the
    process are left as they are.

    The prediction prices what the compiled model calls, never its measured time:
    regions by the cost model (arithmetic from this machine's calibration), library
    calls at eager's profiled price for the same call (or timed alone: fused attention
    is not in eager), other torch calls timed alone, and each region's and graph's call
    at the calibration's figures. statistic: how times are read off their samples,
    "median" or "min" (on a machine others use, the best sample is the program's)."""
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

    machine = machine_calibration(torch_calls=True)
    eager = step_of(model)
    baseline = _time(eager, repeats, statistic)
    share, shares = eager_profile(eager, statistic=statistic)
    library = baseline * share
    prices = {key: baseline * part for key, part in shares.items()}

    before = torch_stats.compile_stats()["fallback_by_op"]
    def backend(gm, example_inputs, **kw):
        return tb.powerfusion_backend(gm, example_inputs, **kw)

    with tb.collect_graphs() as graphs:
        # a backend of its own: dynamo compiles the model again for it (its cache keys on
        # the backend), beside any compiled version the caller holds
        # (static shapes: the advice is for these inputs' shapes, and a second advice on
        # the same model would otherwise compile it for dynamic ones)
        compiled = torch.compile(model, backend=backend, dynamic=False)
        step = step_of(compiled)
        step()
        step()                           # the second call runs the lean functions
    after = torch_stats.compile_stats()["fallback_by_op"]
    # (counted process-wide: another thread compiling at the same time adds its own)
    fallbacks = {op: n - before.get(op, 0) for op, n in after.items()
                 if n > before.get(op, 0)}
    priced = _price_graphs(graphs, prices, machine["math_s"], repeats, statistic)
    glue = (priced.regions * machine["region_call_s"] + len(graphs) * machine["graph_call_s"]
            + priced.slow_regions * machine["region_slow_call_s"])
    predicted = (priced.library_s + priced.torch_ops_s
                 + sum(k.predicted_s for k in priced.kernels) + glue)
    name = type(model).__name__ if isinstance(model, torch.nn.Module) else \
        getattr(model, "__name__", "model")
    advice = Advice(name, "eager PyTorch", baseline, library, predicted, priced.kernels,
                    glue, fallbacks, library_calls_s=priced.library_s,
                    torch_ops_s=priced.torch_ops_s, attention=priced.attention)
    if measure:                 # both again, interleaved: the machine's drift hits both
        advice.measured_baseline_s, advice.measured_s = _interleaved(eager, step, repeats,
                                                                      statistic)
    return advice


def advise_numpy(fn, *arrays, repeats: int = 10, measure: bool = False,
                 target: str | None = None, statistic: str = "median") -> Advice:
    """Advice for a numpy-style function on example arrays: numpy's measured time
    against the cost model's price of PowerFusion's kernels."""
    baseline = _time(lambda: fn(*arrays), repeats, statistic)
    report = explain(fn, *arrays, target=target)
    machine = get_target(_checked_target(target))
    calibrated = machine_calibration()
    kernels = []
    for program, seconds in zip(report.programs, report.predicted_seconds):
        moved = sum(footprint(program)["global"].values())
        # the minimum is the whole function's: one kernel's share of it is not known
        kernels.append(KernelAdvice(program.name, [], moved, report.min_global_bytes
                                    if len(report.programs) == 1 else moved,
                                    _roofline(program, seconds, machine,
                                              calibrated["math_s"])))
    glue = len(kernels) * calibrated["jit_call_s"]
    predicted = sum(k.predicted_s for k in kernels) + glue
    advice = Advice(getattr(fn, "__name__", "function") + "(" + ", ".join(
        f"{np.asarray(a).dtype}{list(np.shape(a))}" for a in arrays) + ")", "numpy",
        baseline, 0.0, predicted, kernels, glue)
    if measure:
        compiled = jit(fn, target=target)
        advice.measured_baseline_s, advice.measured_s = _interleaved(
            lambda: fn(*arrays), lambda: compiled(*arrays), repeats, statistic)
    return advice


def advise(fn, *args, repeats: int = 10, measure: bool = False, statistic: str = "median",
           **kwargs) -> Advice:
    """`pf.advise(model, inputs)` for a torch model or function on example inputs (a
    tuple of arguments or a dict of keyword arguments); `pf.advise(fn, *arrays)` for a
    numpy-style function. statistic: "median" or "min" of each time's samples."""
    _statistic(statistic)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and (isinstance(fn, torch.nn.Module) or (
            len(args) == 1 and isinstance(args[0], (tuple, list, dict))
            and any(isinstance(a, torch.Tensor) for a in (
                args[0].values() if isinstance(args[0], dict) else args[0])))):
        return advise_torch(fn, args[0] if len(args) == 1 else args, repeats=repeats,
                            measure=measure, statistic=statistic)
    return advise_numpy(fn, *args, repeats=repeats, measure=measure, statistic=statistic,
                        **kwargs)
