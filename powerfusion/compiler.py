"""The pipeline, stage after stage: graph -> plan (search) -> code -> executable.

`compile_graph` is what `pf.jit` calls; `explain_graph` runs the same pipeline and
reports what each stage made instead of loading code.
"""

from __future__ import annotations

from .graph.graph import Graph
from .report import Report
from .runtime.backends import executable, get_target, printed
from .runtime.cpu_executable import generate_source
from .runtime.simt_executable import simt_module
from .search import tuning_db
from .search.cost import kernel_cost
from .search.space import plan_graph
from .search.tuner import tune


def compile_graph(graph: Graph, *, input_strides, target: str = "cpu", tune_with=None):
    """An executable for the target: C + OpenMP on the CPU, or a SIMT dialect.

    A winner recorded in the tuning database (per device description) is used;
    `tune_with` (the caller's input arrays or CUDA tensors) measures the candidates
    first when there is none.
    """
    plan = plan_graph(graph, input_strides, get_target(target))
    code = printed(plan, target)
    entry = tuning_db.lookup(plan.target.name, tuning_db.key_of(code.source))
    if entry is None and tune_with is not None:
        entry = {"choice": tune(graph, input_strides, plan.target, tune_with,
                                dialect=target).choice}
    if entry is not None and entry.get("choice") != plan.choice:
        plan = plan_graph(graph, input_strides, plan.target, entry["choice"])
        code = printed(plan, target)
    return executable(plan, target, code)


def explain_graph(graph: Graph, *, input_strides, target: str = "cpu"):
    """The report of what compile_graph would build; needs no device."""
    plan = plan_graph(graph, input_strides, get_target(target))
    seconds = [kernel_cost(ck, plan.target) for ck in plan.kernels]
    if target == "cpu":
        return Report.from_plan(plan, generate_source(plan), input_strides, seconds=seconds)
    module = simt_module(plan, target)
    return Report.from_plan(plan, module.source, input_strides, module.kernels, seconds)
