"""Running a plan, the same for every runtime: allocate what its kernels write, launch
them in order, hand back the outputs.

The executable contract, which every runtime follows (`Executable` and
`InterpretedExecutable` in cpu_executable.py, `OpenCLExecutable` and the source-only
HIP one in simt_executable.py, `CudaExecutable` in cuda.py): `.plan`, the Plan it runs
(search/plan.py); `.source`, exactly what its runtime compiles (none for the
interpreter); `.run(inputs)`: numpy storage arrays per graph input, with the strides
used at plan time, in; fresh C-contiguous numpy arrays per graph output (bfloat16 as
uint16) out. CUDA also runs on CUDA tensors (cuda.py).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

import numpy as np

from ..dtypes import DType
from ..gir.interpreter import storage_dtype
from ..gir.ir import Program, Role


class BufferPool:
    """Reuses output and scratch arrays the caller no longer holds.

    A fresh large array costs a page fault per 4 KB on first touch, often more than the
    kernel itself; an array only this pool references can be written again.
    """

    # arrays kept per buffer: one the caller holds, one to reuse. Python 3.14 stopped
    # counting some references (borrowed stack references), so the test below could
    # hand out an array still in use: there, nothing is reused.
    KEEP = 2 if sys.version_info < (3, 14) else 0

    def __init__(self):
        self.arrays: dict[str, list[np.ndarray]] = {}
        # the reference count test and the hand-over are one step: two threads calling
        # one function must never be handed the same array
        self._lock = threading.Lock()

    def get(self, name: str, shape, dtype) -> np.ndarray:
        with self._lock:
            kept = self.arrays.setdefault(name, [])
            for array in kept:
                # referenced by the list, by `array` and by getrefcount's argument
                if sys.getrefcount(array) <= 3 and array.shape == tuple(shape) \
                        and array.dtype == dtype:
                    return array
            array = np.empty(shape, dtype)
            if len(kept) < self.KEEP:
                kept.append(array)
            return array


@dataclass(frozen=True)
class LaunchSequence:
    """What running a plan takes, computed once per plan: the global buffers it allocates
    (outputs and temps that stayed in global memory: name, shape, dtype) and its kernels
    in order, each with the names of the buffers its parameters point to."""

    allocations: tuple[tuple[str, tuple[int, ...], DType], ...]
    launches: tuple[tuple[Program, tuple[str, ...]], ...]

    @staticmethod
    def of(plan) -> "LaunchSequence":
        allocations = {name: (name, buf.shape, buf.dtype) for name, buf in plan.buffers.items()
                       if buf.role is not Role.INPUT}
        for ck in plan.kernels:
            for p in ck.program.params:
                if p.name not in allocations and p.name not in plan.input_names:
                    allocations[p.name] = (p.name, p.shape, p.dtype)
        launches = tuple((ck.program, tuple(p.name for p in ck.program.params))
                         for ck in plan.kernels)
        return LaunchSequence(tuple(allocations.values()), launches)


def execute(plan, inputs, launch, pool: BufferPool | None = None) -> list[np.ndarray]:
    """Run a plan's kernels in order: allocate what they write, launch, collect outputs."""
    get = pool.get if pool is not None else (lambda _n, shape, dtype: np.empty(shape, dtype))
    arrays: dict[str, np.ndarray] = dict(zip(plan.input_names, inputs))
    sequence = plan.sequence
    for name, shape, dtype in sequence.allocations:
        arrays[name] = get(name, shape, storage_dtype(dtype))
    for program, _ in sequence.launches:
        launch(program, arrays)
    outs = []
    for spec, shape in zip(plan.outputs, plan.out_shapes):
        if spec[0] == "buffer":
            outs.append(arrays[spec[1]].reshape(shape))
        elif spec[0] == "input":
            outs.append(np.array(inputs[spec[1]]).reshape(shape))
        else:
            outs.append(np.full(shape, spec[1], storage_dtype(spec[2])))
    return _unalias(outs)


def _unalias(outs: list[np.ndarray]) -> list[np.ndarray]:
    """The same value returned twice comes back as two arrays, as numpy would give."""
    seen: set[int] = set()
    result = []
    for a in outs:
        base = id(a.base if a.base is not None else a)
        result.append(a.copy() if base in seen else a)
        seen.add(base)
    return result
