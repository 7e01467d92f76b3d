"""The arithmetic side of a CPU kernel's time: a roofline's other wall.

`kernel_cost` prices bytes only, which ranks the alternative computations of one
kernel well (they do the same arithmetic). A kernel heavy in transcendentals (GELU,
erf, tanh) can be bound by its arithmetic instead; `compute_seconds` estimates that
time from the Compute statements of its GIR: how often each runs, times the vector
instructions pf_math.h's function for it takes, over the vector lanes and the cores.
`pf.advise` predicts a kernel's time as the larger of the two.
"""

from __future__ import annotations

import math

from ..gir.ir import Compute, Program, walk
from ..graph.ops import Op
from ..targets import Target

# AVX-512 instructions per 16-lane vector, counted in the loops gcc 12 emits for
# pf_math.h (the rest: about one); division and square root count their throughput
VECTOR_INSTRUCTIONS = {
    Op.EXP: 18, Op.EXP2: 30, Op.EXPM1: 40, Op.LOG: 22, Op.LOG1P: 40, Op.LOG2: 35,
    Op.LOG10: 35, Op.TANH: 36, Op.SIGMOID: 24, Op.SILU: 26, Op.ERF: 55, Op.GELU: 75,
    Op.GELU_TANH: 44, Op.SIN: 60, Op.COS: 60, Op.TAN: 80, Op.POW: 100, Op.DIV: 6,
    Op.SQRT: 6, Op.RSQRT: 8,
}
# vector instructions one core issues per second: two per cycle at about 2.5 GHz with
# 512-bit vectors (benchmarks/math_throughput.py's figures agree within 20% here)
VECTOR_ISSUE_PER_S = 5e9


def compute_seconds(program: Program, target: Target,
                    measured: dict[Op, float] | None = None) -> float:
    """Estimated seconds of arithmetic for one run of program on target's cores.
    `measured`: seconds per element of an op's function on one core, where this machine
    was calibrated (`runtime.calibration`); those ops are priced from it, the rest by
    their instruction counts."""
    lanes = max(1, target.simd_bytes // 4)
    instructions = 0.0
    seconds = 0.0
    for s, loops in walk(program.body):
        if isinstance(s, Compute) and s.op is not None:
            runs = math.prod(lp.var.extent for lp in loops)
            if measured and s.op in measured:
                seconds += runs * measured[s.op]
            else:
                instructions += runs * VECTOR_INSTRUCTIONS.get(s.op, 1) / lanes
    return (instructions / VECTOR_ISSUE_PER_S + seconds) / max(1, target.cores)
