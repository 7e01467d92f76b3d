"""A kernel's predicted time: the cost model's bytes over bandwidths, or its
arithmetic at this machine's calibrated rate, the larger (a roofline)."""

from __future__ import annotations

from ..graph.views import contiguous_strides
from ..report import Report
from ..search.compute import compute_seconds
from ..search.cost import kernel_cost
from .advice import KernelAdvice


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
