"""pf.advise for a numpy-style function: numpy's measured time against the cost
model's price of the kernels of PowerFusion's plan."""

from __future__ import annotations

import numpy as np

from ..api import _checked_target, explain, jit
from ..passes.traffic import footprint
from ..runtime.backends import get_target
from .advice import Advice, KernelAdvice
from .measure import _interleaved, _time, machine_calibration
from .pricing import _roofline


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
