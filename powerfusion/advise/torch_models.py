"""pf.advise for a PyTorch model: eager measured and profiled once, the model compiled
by the PowerFusion backend, and every call of its graphs priced (regions by the cost
model, library calls at eager's price, other torch calls timed alone)."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

from ..errors import UnsupportedError
from ..frontend import torch_stats
from .advice import Advice, KernelAdvice
from .measure import (_after_matmul, _interleaved, _shapes_key, _time, eager_profile,
                      machine_calibration)
from .pricing import _region_advice


# dynamo's recompile limit while advise compiles (its own entries past the user's)
_RECOMPILE_LIMIT = 64


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


def _timed_alone(gm, node, repeats: int, statistic: str,
                 resume_s: float | None = None) -> float:
    """Median seconds of one call of an fx node's function (or module) on tensors shaped
    as its arguments' metadata say (torch calls a compiled graph leaves to PyTorch).
    With resume_s, the call as it runs among library calls: timed right after a matmul
    too, less the resume the first call after one pays (counted apart), or hot if more."""
    import torch
    import torch.fx

    def value(a):
        return _materialised(a.meta.get("val")) if isinstance(a, torch.fx.Node) else a

    args = torch.fx.node.map_aggregate(node.args, lambda a: value(a))
    kwargs = torch.fx.node.map_aggregate(node.kwargs, lambda a: value(a))
    fn = gm.get_submodule(node.target) if node.op == "call_module" else node.target
    with torch.no_grad():
        hot = _time(lambda: fn(*args, **kwargs), repeats, statistic)
        if resume_s is None:
            return hot
        return max(hot, _after_matmul(lambda: fn(*args, **kwargs), repeats) - resume_s)


@dataclass
class _Pricing:
    """What a compiled model's graphs cost, part by part (`_price_graphs`)."""

    kernels: list[KernelAdvice] = field(default_factory=list)
    library_s: float = 0.0       # its library calls (eager's price, or timed alone)
    torch_ops_s: float = 0.0     # its other torch calls (views, index, creation, fallbacks)
    regions: int = 0             # regions called through their lean function,
    cold_regions: int = 0        # (of which the first after a library call)
    slow_regions: int = 0        # and through Region.forward (no lean path)
    resumes: int = 0             # runs of calls after a library call (or a graph's start)
    attention: int = 0           # fused attention calls the graphs make

    def glue_s(self, machine: dict, graphs: int) -> float:
        """What calling it all costs beyond the kernels' and the torch calls' own
        time: regions, graphs, and the cold start after each library call (the first
        call pays for the caches the library call swept, the first region in a run for
        its own code path; the calls after them run warm)."""
        cold_region = max(machine["region_call_s"],
                          machine["region_cold_call_s"] - machine["resume_s"])
        return (self.resumes * machine["resume_s"] + self.cold_regions * cold_region
                + (self.regions - self.cold_regions) * machine["region_call_s"]
                + self.slow_regions * machine["region_slow_call_s"]
                + graphs * machine["graph_cold_call_s"])


def _region_of(gm, node):
    """The Region a node calls (as a module, or through its lean function), or None."""
    from ..frontend import torch_backend as tb

    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return module if isinstance(module, tb.Region) else None
    if node.op == "call_function":    # a lean function or native Launch names its region
        region = getattr(node.target, "region", None)
        return region if isinstance(region, tb.Region) else None
    return None


def _price_graphs(graphs, prices: dict, machine: dict, repeats: int,
                  statistic: str) -> _Pricing:
    """Every call of the compiled graphs, priced: regions by the cost model; library
    calls at eager's measured price where eager made the same call (same op, same
    shapes), else timed alone; other torch calls timed alone; getitem is free."""
    import torch
    import torch.fx

    from ..frontend.torch_backend.support import called_op, is_library_compute

    out = _Pricing()
    resume_s = machine["resume_s"]
    for _, gm, _ in graphs:
        after_library = True             # a graph starts after the caller's own work
        region_in_run = False
        for node in gm.graph.nodes:
            if node.op not in ("call_function", "call_module", "call_method") \
                    or node.target is operator.getitem:
                continue
            target = called_op(node.target)
            library = isinstance(target, torch._ops.OpOverload) and is_library_compute(
                target.overloadpacket.__name__)
            if library:
                after_library, region_in_run = True, False
            elif after_library:
                out.resumes += 1
                after_library = False
            region = _region_of(gm, node)
            compiled = [] if region is None or region.failed else \
                [c for c in ([region.hot[1]] if region.hot else region.cache.values())
                 if c.executable is not None]
            if compiled:
                lean = node.op == "call_function" and hasattr(node.target, "region")
                out.regions += lean
                out.cold_regions += lean and not region_in_run
                out.slow_regions += not lean
                region_in_run = True
                out.kernels += [_region_advice(region, c, machine["math_s"]) for c in compiled]
                continue
            if region is not None:               # no kernel: torch copies, or eager ops
                out.torch_ops_s += _timed_alone(gm, node, repeats, statistic, resume_s)
                continue
            if library:
                packet = target.overloadpacket.__name__
                out.attention += "scaled_dot_product" in packet
                shapes = []                      # in argument order, repeats kept
                torch.fx.node.map_arg((node.args, node.kwargs), lambda a: shapes.append(
                    list(getattr(a.meta.get("val"), "shape", ()))))
                key = _shapes_key(f"aten::{packet}", shapes)
                out.library_s += prices.get(key) or _timed_alone(gm, node, repeats, statistic)
            else:
                out.torch_ops_s += _timed_alone(gm, node, repeats, statistic, resume_s)
    return out


def advise_torch(model, inputs, *, repeats: int = 10, measure: bool = False,
                 statistic: str = "median") -> Advice:
    """Advice for a torch.nn.Module (or function) on example inputs: a tuple of
    positional arguments, a dict of keyword arguments or one tensor. Inference, under
    no_grad. The model is compiled afresh for the advice; other compiled models in the
    process are left as they are.

    The prediction prices what the compiled model calls, never its measured time:
    regions by the cost model (arithmetic from this machine's calibration), library
    calls at eager's profiled duration for the same call (or timed alone: fused
    attention is not in eager), other torch calls timed alone (hot, and right after a
    matmul), and the calls from Python at the calibration's figures as they run among
    library calls (`_Pricing.glue_s`), dynamo's guards per tensor of the model.
    statistic: how times are read off their samples, "median" or "min" (on a machine
    others use, the best sample is the program's)."""
    import torch

    from ..frontend import torch_backend as tb

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
    baseline, library, prices = eager_profile(eager, repeats, statistic)
    library = min(library, baseline)

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
        # every advice adds its own entries to dynamo's caches of the model's code (and
        # of code models share, as transformers' decorators): past dynamo's recompile
        # limit it would run the model eagerly and the advice would price nothing
        with torch._dynamo.config.patch(recompile_limit=max(
                _RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)):
            step()
            step()                       # the second call runs the lean functions
    if not graphs and library > 0:
        raise UnsupportedError(
            "pf.advise: torch.compile gave the PowerFusion backend no graph of this model "
            "(dynamo ran it eagerly: see torch._dynamo's log); nothing to price")
    after = torch_stats.compile_stats()["fallback_by_op"]
    # (counted process-wide: another thread compiling at the same time adds its own)
    fallbacks = {op: n - before.get(op, 0) for op, n in after.items()
                 if n > before.get(op, 0)}
    priced = _price_graphs(graphs, prices, machine, repeats, statistic)
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    if isinstance(model, torch.nn.Module):
        tensors += [*model.parameters(), *model.buffers()]
    guards = machine["guard_s"] + max(0, len(tensors) - 1) * machine["guard_per_tensor_s"]
    glue = priced.glue_s(machine, len(graphs)) + guards
    predicted = (priced.library_s + priced.torch_ops_s
                 + sum(k.predicted_s for k in priced.kernels) + glue)
    name = type(model).__name__ if isinstance(model, torch.nn.Module) else \
        getattr(model, "__name__", "model")
    advice = Advice(name, "eager PyTorch", baseline, library, predicted, priced.kernels,
                    glue, fallbacks, library_calls_s=priced.library_s,
                    torch_ops_s=priced.torch_ops_s, attention=priced.attention,
                    guards_s=guards)
    if measure:                 # both again, interleaved: the machine's drift hits both
        advice.measured_baseline_s, advice.measured_s = _interleaved(eager, step, repeats,
                                                                      statistic)
    return advice
