"""Timing a step, profiling eager PyTorch's library calls, and this machine's
calibration of what calling a kernel costs (the figures the prediction adds)."""

from __future__ import annotations

import statistics
import sys
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


# warm-up before a step is timed: at least this many calls and this many seconds (a
# model's first calls fault its activations' pages in and fill the allocator's caches)
WARMUP_CALLS, WARMUP_S = 3, 0.3


def _warm_up(step) -> None:
    start, calls = time.perf_counter(), 0
    while calls < WARMUP_CALLS or time.perf_counter() - start < WARMUP_S:
        step()
        calls += 1


def _time(step, repeats: int, statistic: str = "median") -> float:
    _warm_up(step)
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


def _profiled_runs(step, runs: int):
    """`runs` pairs (seconds of a run timed without the profiler, torch.profiler's
    events of the run after it, with the inputs' shapes), after a warm-up: each
    profiled run beside a plain one, so that the figures read off the profile and the
    step's own time come from the same moments of a machine whose speed drifts."""
    from torch.profiler import profile

    _warm_up(step)
    pairs = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        plain_s = time.perf_counter() - start
        with profile(record_shapes=True) as prof:
            step()
        pairs.append((plain_s, prof.events()))
    return pairs


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


def eager_profile(step, runs: int = 10,
                  statistic: str = "median") -> tuple[float, float, dict]:
    """(step seconds, library seconds, prices) of `step`, from `runs` runs timed plain
    interleaved with `runs` under torch.profiler (`_profiled_runs`): the step's time;
    the time inside library compute (the outermost such ATen calls) per run; and
    prices mapping (aten name, input shapes) to one such call's seconds, at any depth
    (eager's linear runs an addmm, as a compiled graph calls it). Each read off its
    samples by the statistic (a price: over all the calls of its key).

    Absolute times, not shares of the profiled run: the profiler's cost is per event,
    so it slows the many small ops between library calls and hardly a long matmul; a
    share of the profiled run would undercount the library by the profiler's overhead
    on everything else."""
    from ..frontend.torch_backend.support import is_library_compute

    read = _statistic(statistic)
    pairs = _profiled_runs(step, runs)
    library, samples = [], {}
    for _, events in pairs:
        library.append(1e-6 * sum(ev.time_range.elapsed_us()
                                  for ev in _outermost_library(events)))
        for ev in events:
            if is_library_compute(ev.name):
                key = _shapes_key(ev.name, ev.input_shapes or ())
                samples.setdefault(key, []).append(1e-6 * ev.time_range.elapsed_us())
    return (read([plain for plain, _ in pairs]), read(library),
            {key: read(v) for key, v in samples.items()})


# Python-level names of library calls whose aten packet is named otherwise
_PYTHON_LEVEL_LIBRARY = {"conv1d", "conv2d", "conv3d", "conv_transpose1d",
                         "conv_transpose2d", "conv_transpose3d"}


class _LibraryClock:
    """A profile hook (sys.setprofile) summing the wall time of the outermost library
    calls a step makes from Python: a compiled graph's aten calls (`OpOverload`s), the
    torch functions Inductor's wrapper and eager modules call (torch.mm, F.linear).
    Each call is timed between its own c_call and c_return events, so the hook's cost
    falls between calls, not inside them (torch.profiler's per-event cost lands inside
    a library call's span too: an mm read 40% long under it). Calls C++ makes on its
    own (eager autograd's backward, Inductor's kernels) are not seen, but for the native
    glue's pooled matmuls, which time themselves while the clock runs (`with
    _LibraryClock() as clock:`)."""

    def __init__(self):
        from torch._ops import OpOverload

        from ..frontend.torch_backend.support import is_library_compute

        self._overload_call = OpOverload.__call__.__code__
        self._is_library = is_library_compute
        # per open C call: its start; None: a library call inside another; False: other
        self._open: list = []
        self._depth = 0                          # open library calls
        self.seconds, self.calls = 0.0, 0

    def __enter__(self):
        from ..frontend.torch_backend import native

        self._glue, self._previous = native.loaded(), sys.getprofile()
        if self._glue is not None:       # its pooled matmuls time themselves
            self._glue.library_clock(True)
        sys.setprofile(self)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self._previous)
        if self._glue is not None:
            seconds, calls = self._glue.library_clock(False)
            self.seconds += seconds
            self.calls += calls

    def _name(self, frame, fn) -> str:
        if frame.f_code is self._overload_call:
            return frame.f_locals["self"].overloadpacket.__name__
        return getattr(fn, "__name__", "")

    def __call__(self, frame, event, fn):
        if event == "c_call":
            name = self._name(frame, fn)
            if self._is_library(name) or name in _PYTHON_LEVEL_LIBRARY:
                self._depth += 1
                self._open.append(time.perf_counter() if self._depth == 1 else None)
            else:
                self._open.append(False)
        elif event in ("c_return", "c_exception") and self._open:
            end = time.perf_counter()
            start = self._open.pop()
            if start is not False:
                self._depth -= 1
                if start is not None:
                    self.seconds += end - start
                    self.calls += 1


def library_time(step, runs: int = 10, statistic: str = "median") -> tuple[float, float]:
    """(step seconds, library seconds) of `step`: `runs` runs timed plain, each beside
    one whose library calls are timed in place by a profile hook (`_LibraryClock`); each
    read off its samples by the statistic. step - library is what a compiled graph's
    own kernels and glue take (the library calls being the same in every backend)."""
    read = _statistic(statistic)
    _warm_up(step)
    plain, library = [], []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        plain.append(time.perf_counter() - start)
        with _LibraryClock() as clock:
            step()
        library.append(clock.seconds)
    return read(plain), read(library)


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
               if n.op == "call_function" and hasattr(n.target, "region")]
    region = lean.region
    glue = "python" if hasattr(lean, "source") else "native"   # (a generated function)

    def slow():
        region.hot = None                # what a region without a lean path goes through
        return region.forward(x)

    with torch.no_grad():
        region_s = best_of(lambda: lean(x), trials, min_s=1e-3)
        slow_s = best_of(slow, trials, min_s=1e-3)
        whole_s = best_of(lambda: compiled(x), trials, min_s=1e-3)
        view_s = best_of(lambda: x.view(4, 4), trials, min_s=1e-3)
        # the same calls right after a matmul, as in a model: its weights sweep the
        # caches, so the interpreter's and the dispatcher's code and data come back
        # from memory (and a core leaving wide vector code changes its clock)
        view_cold_s = _after_matmul(lambda: x.view(4, 4), trials)
        region_cold_s = _after_matmul(lambda: lean(x), trials)
        whole_cold_s = _after_matmul(lambda: compiled(x), trials)
    # dynamo's part grows with the tensors it guards: priced per model from these
    dynamo_s, per_tensor_s = _guards(trials)
    return figures | {"region_call_s": region_s, "region_slow_call_s": slow_s,
                      "graph_call_s": max(0.0, whole_s - region_s),
                      "resume_s": max(0.0, view_cold_s - view_s),
                      "region_cold_call_s": region_cold_s,
                      "graph_cold_call_s": max(0.0, whole_cold_s - region_cold_s - dynamo_s),
                      "guard_s": dynamo_s, "guard_per_tensor_s": per_tensor_s,
                      "torch_glue": glue}


# the library call the cold figures follow: a transformer's feed-forward matmul
# (BERT-base's, one sequence of 128), 9 MB of weights
AFTER = (128, 768, 3072)
# the parameters of the module dynamo's per-tensor guard cost is measured on
GUARDED = 32


def _dynamo_call_s(fn, args, trials: int) -> float:
    """Seconds torch.compile's own work takes per call of fn on args (dynamo's guards,
    its frame), right after a matmul, whatever the backend: fn compiled with a backend
    whose graph hands back the outputs of its first run."""
    import torch

    def constant(gm, example_inputs, **kw):
        outputs = gm(*example_inputs)
        return lambda *a: outputs

    compiled = torch.compile(fn, backend=constant, dynamic=False)
    with torch.no_grad():
        compiled(*args)
        return _after_matmul(lambda: compiled(*args), trials)


def _guards(trials: int) -> tuple[float, float]:
    """(dynamo's per-call seconds for a module of one parameter, the more per further
    parameter): from modules of 1 and GUARDED parameters, each an input dynamo guards."""
    import torch

    def module(n):
        m = torch.nn.Module()
        m.ps = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(4)) for _ in range(n))
        m.forward = lambda x: x + sum(p.sum() for p in m.ps)
        return m

    x = torch.randn(4)
    one = _dynamo_call_s(module(1), (x,), trials)
    many = _dynamo_call_s(module(GUARDED), (x,), trials)
    return one, max(0.0, many - one) / (GUARDED - 1)


def _after_matmul(fn, trials: int) -> float:
    """Median seconds of one call of fn made right after a matmul of AFTER's sizes."""
    import torch

    m, k, n = AFTER
    a, w = torch.randn(m, k), torch.randn(k, n)
    samples = []
    for _ in range(trials):
        torch.mm(a, w)
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


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
    if torch_calls:
        from ..frontend.torch_backend import native

        glue = "python" if native.module() is None else "native"
        if any(record[k] is None for k in calibration.CALLS) or record["torch_glue"] != glue:
            record = calibrate(path)     # (the glue's calls are priced as they run now)
    return record
