"""Timing a step, profiling eager PyTorch's library share, and this machine's
calibration of what calling a kernel costs (the figures the prediction adds)."""

from __future__ import annotations

import statistics
import time

import numpy as np

from ..api import jit
from ..benchmarking import interleaved
from ..runtime import calibration
from ..runtime.calibration import best_of


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
    from ..frontend.torch_backend.support import is_library_compute

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
    from ..frontend.torch_backend.support import is_library_compute

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

    from ..frontend import torch_backend as tb

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
