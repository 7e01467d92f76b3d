"""`pf.advise`: which parts of a workload are memory-bound, and what PowerFusion can
make of them, before anyone rewrites anything.

For a PyTorch model (with example inputs) it measures eager PyTorch once with
torch.profiler: the time inside library compute (matmul, convolution, attention,
embedding: every backend calls the same ATen functions) and the rest, which is what a
compiler of memory-bound ops can change. It then compiles the model with the
PowerFusion backend, prices every kernel with the cost model (bytes at each memory
level over the Target's bandwidths, or its arithmetic where that takes longer: a
roofline), adds what running them costs from Python, and predicts the step's time;
Amdahl's law bounds the speedup by the library's share.
For a numpy function it prices the kernels of `pf.explain`'s plan against numpy's
measured time.

    print(pf.advise(model, (input_ids,)))
    print(pf.advise(fn, x, w))                       # a numpy-style function
    powerfusion advise --torch mymodels:bert         # a factory returning (model, inputs)
    powerfusion advise layers.py:rmsnorm --shape 2048x4096 --shape 4096

The package: `advice` (the report), `measure` (timing, eager's profile, the
calibration), `pricing` (a kernel's roofline), `torch_models` and `numpy_functions`
(the two kinds of workload).
"""

from __future__ import annotations

from .advice import Advice, KernelAdvice
from .measure import _statistic, calibrate, eager_profile, library_time, machine_calibration
from .numpy_functions import advise_numpy
from .torch_models import advise_torch

__all__ = ["Advice", "KernelAdvice", "advise", "advise_numpy", "advise_torch", "calibrate",
           "eager_profile", "library_time", "machine_calibration"]


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
