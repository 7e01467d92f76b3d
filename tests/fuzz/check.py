"""Run a program with pf.jit and judge the result against numpy's.

Outcome kinds:
  ok             pf agrees (or numpy raised and pf raised a typed error)
  mismatch       a result differs: shape, dtype, NaN/Inf positions, or values
  untyped        pf raised something other than a PowerFusionError (a bug inside it)
  rejected       numpy runs the program, pf refuses it with a typed error
  missing-error  numpy raises, pf returns results
  crash          the process died (segfault, abort); found by the worker pool
  timeout        pf did not finish in time; found by the worker pool

Tolerances: integers and booleans exactly; floats whose error bound is 0 (values that
correct rounding determines: inputs, casts of them, max/min, selections) exactly;
other floats within RTOL[dtype] * |numpy| + 2 * bound (analysis.py), which absorbs
cancellation and ill-conditioning wherever they occur, and only there.
"""

from __future__ import annotations

import random
import re
import threading
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass

import numpy as np

import powerfusion as pf

from .analysis import Expected, Info, quiet
from .bounds import BF16
from .program import Program

RTOL = {"float64": 1e-12, "float32": 2e-4, "float16": 2e-3, "bfloat16": 1.6e-2}

# targets that run no device code: the plan pf makes for the dialect (CUDA as on an H100,
# HIP as on an MI250), its SIMT-legalised GIR (launch, collectives, barriers) run by the
# GIR interpreter as the block's threads would, races reported
GIR_TARGETS = {"cuda-gir": "cuda", "hip-gir": "hip"}


# a target whose plans are points of the tuner's search space (every knob, computation,
# placement and recomputing under broadcasts), compiled for the CPU: whatever the tuner
# picks must be right, not only the default plan. "cpu-space" draws the point from the
# program's source; "cpu-space:N" from N (what a report names, to run that point again)
SPACE = "cpu-space"
DRAWN: list = []                # the points drawn, the last one last (for messages)
_patching = threading.RLock()   # one block at a time (nested ones in order) patches it


def is_space(target: str) -> bool:
    return target == SPACE or target.startswith(SPACE + ":")


def point_target(target: str, source: str) -> str:
    """The target that compiles `source` at the point `target` would draw for it."""
    return f"{SPACE}:{zlib.crc32(source.encode())}" if target == SPACE else target


@contextmanager
def compiled_for(target: str, source: str = ""):
    """The jit target to compile a campaign's target with, for the calls made inside the
    block: a real one as it is; a GIR_TARGETS one as its dialect, with pf.jit running its
    plans through the interpreter, and a space target with pf.jit compiling a point of
    the search space (drawn for `source`), until the block ends (the process's later jit
    calls - a test suite's - compile and tune as usual)."""
    if target not in GIR_TARGETS and not is_space(target):
        yield target
        return
    from powerfusion import api
    from powerfusion.runtime.backends import get_target

    if target in GIR_TARGETS:
        from powerfusion.runtime.cpu_executable import InterpretedExecutable
        from powerfusion.search.space import plan_graph

        def compiled(graph, *, input_strides, target, tune_with=None):
            return InterpretedExecutable(plan_graph(graph, input_strides, get_target(target)))
    else:
        seed = int(point_target(target, source).split(":")[1])
        compiled = _at_a_point(random.Random(seed))
    with _patching:
        DRAWN.clear()
        compile_graph, api.compile_graph = api.compile_graph, compiled
        try:
            yield GIR_TARGETS.get(target, "cpu")      # a space target's points are the CPU's
        finally:
            api.compile_graph = compile_graph


def _at_a_point(draw: random.Random):
    """compile_graph at a point of the search space drawn with `draw`: a value of each
    knob, a computation and a placement (where the graph has no such point - a rewrite
    that does not apply, a tile that changes nothing - the plan nearest to it)."""
    from powerfusion.graph.alternatives import REWRITES
    from powerfusion.runtime.backends import executable, get_target, printed
    from powerfusion.search.plan import Candidate
    from powerfusion.search.space import knob_values, plan_graph

    def compiled(graph, *, input_strides, target, tune_with=None):
        device = get_target(target)
        choice = Candidate(draw.choice(["as written", *REWRITES]),
                           draw.choice(("local", "global")),
                           **{knob: draw.choice(values)
                              for knob, values in knob_values(device).items()})
        DRAWN.append(choice)
        plan = plan_graph(graph, input_strides, device, choice)
        return executable(plan, target, printed(plan, target))
    return compiled


@dataclass
class Outcome:
    kind: str
    detail: str = ""             # a short signature: failures with equal ones are one class
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.kind != "ok"

    def signature(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


def dtype_name(dtype) -> str:
    dtype = np.dtype(dtype)
    return "bfloat16" if dtype == BF16 else dtype.name


def _innermost_pf_frame(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "powerfusion" in f.filename
              and "/tests/" not in f.filename]
    if not frames:
        return "outside powerfusion"
    f = frames[-1]
    return f"{f.filename.split('powerfusion/')[-1]}:{f.name}"


def _message_head(exc: BaseException) -> str:
    """The first line of the message without its numbers: one class of failure."""
    head = str(exc).split("\n")[0]
    head = re.sub(r"\(.*?\)|\d+", "_", head)
    return head[:70]


def compare(got, info: Info, k: int) -> tuple[str, str] | None:
    """(detail, message) if output k differs from numpy's, else None."""
    ref = info.array
    where = f"output {k}"
    if not isinstance(got, np.ndarray):
        return f"type {type(got).__name__}", f"{where}: pf returned {type(got).__name__}"
    if got.shape != ref.shape:
        return "shape", f"{where}: shape {got.shape}, numpy {ref.shape}"
    name, got_name = dtype_name(ref.dtype), dtype_name(got.dtype)
    if got_name != name:
        return f"dtype {got_name} for {name}", f"{where}: dtype {got_name}, numpy {name}"
    if ref.dtype.kind in "biu":
        bad = got != ref
    else:
        g, r = got.astype(np.float64), ref.astype(np.float64)
        if not np.array_equal(np.isnan(g), np.isnan(r)):
            return f"NaN {name}", f"{where}: NaN at other positions\n{_show(got, ref, None)}"
        inf = np.isinf(r)
        if not np.array_equal(np.isinf(g), inf) or np.any(g[inf] != r[inf]):
            return f"Inf {name}", f"{where}: infinities differ\n{_show(got, ref, None)}"
        finite = np.isfinite(r)
        e = info.error
        with np.errstate(all="ignore"):
            tol = np.where(e == 0, 0.0, RTOL[name] * np.abs(r) + 2 * e)
            bad = finite & (np.abs(g - r) > tol)
    if np.any(bad):
        kind = "values" if ref.dtype.kind not in "biu" else "values (exact)"
        return f"{kind} {name}", f"{where}: {int(np.sum(bad))} of {bad.size} elements " \
                                 f"differ\n{_show(got, ref, bad, info.error)}"
    return None


def _show(got, ref, bad, error=None, limit: int = 6) -> str:
    if bad is None:
        return f"  pf:    {np.asarray(got).ravel()[:limit]}\n  numpy: {ref.ravel()[:limit]}"
    idx = np.argwhere(np.asarray(bad))[:limit]
    rows = []
    for i in idx:
        i = tuple(int(j) for j in i)
        bound = "" if error is None else f"  (error bound {float(error[i]):.3g})"
        rows.append(f"  at {list(i)}: pf {got[i].item()!r}, numpy {ref[i].item()!r}{bound}")
    return "\n".join(rows)


class Nondeterministic(Exception):
    """Two calls of one compiled function on the same inputs gave different bits."""


def _bits(result) -> list:
    items = result if isinstance(result, (tuple, list)) else [result]
    return [(np.shape(r), str(np.asarray(r).dtype), np.asarray(r).tobytes()) for r in items]


def threads_for(source: str) -> int:
    """One program in eight makes its first call from two threads at once."""
    return 2 if zlib.crc32(source.encode()) % 8 == 0 else 1


def run(program: Program, target: str):
    """pf's results as a list, with the inputs as they were after the call. The function
    is called again (the cached path), and sometimes first from two threads at once:
    all calls must agree bit for bit."""
    source = program.source()
    threads = threads_for(source)
    calls = [program.arrays() for _ in range(threads)]
    with compiled_for(target, source) as compiled_target:
        fn = pf.jit(program.function(), target=compiled_target)
        if threads == 1:
            result = fn(*calls[0])
            firsts = [result]
        else:
            with ThreadPoolExecutor(threads) as pool:
                futures = [pool.submit(fn, *args) for args in calls]
                firsts = [f.result() for f in futures]
            result = firsts[0]
        again = fn(*calls[0])
    if any(_bits(r) != _bits(result) for r in firsts[1:] + [again]):
        how = "two threads' first calls" if threads > 1 else "a second call"
        raise Nondeterministic(f"{how} gave other results than the first")
    results = list(result) if isinstance(result, (tuple, list)) else [result]
    return results, calls[0]


def judge(program: Program, expected: Expected, target: str = "cpu") -> list[Outcome]:
    """One Outcome per output, from one pf call; an exception (or a missing one) is the
    outcome of every output. At a point of the search space, a failure's message names
    the point and the target that compiles the program there again."""
    outcomes = _judged(program, expected, target)
    if not is_space(target) or not any(o.failed for o in outcomes):
        return outcomes
    drawn = DRAWN[-1].label if DRAWN else "no point drawn"
    where = f"\n(at the point {drawn}: --target {point_target(target, program.source())})"
    return [dataclasses.replace(o, message=o.message + where) if o.failed else o
            for o in outcomes]


def _judged(program: Program, expected: Expected, target: str) -> list[Outcome]:
    n = len(program.outputs)
    try:
        with quiet():
            results, arrays = run(program, target)
    except Nondeterministic as exc:
        return [Outcome("mismatch", "nondeterministic", str(exc))] * n
    except pf.PowerFusionError as exc:
        if expected.error is not None or expected.may_refuse:
            return [Outcome("ok")] * n
        return [Outcome("rejected", f"{type(exc).__name__}: {_message_head(exc)}",
                        f"{type(exc).__name__}: {exc}")] * n
    except Exception as exc:            # noqa: BLE001 - classifying is the point
        if expected.error is not None and type(exc) is type(expected.error):
            return [Outcome("ok")] * n
        where = _innermost_pf_frame(exc)
        return [Outcome("untyped", f"{type(exc).__name__} in {where}: {_message_head(exc)}",
                        "".join(traceback.format_exception(exc, limit=-8)))] * n
    if expected.error is not None:
        return [Outcome("missing-error", type(expected.error).__name__,
                        f"numpy raised {type(expected.error).__name__}: {expected.error}")] * n
    if len(results) != n:
        return [Outcome("mismatch", "output count", f"{len(results)} results, numpy {n}")] * n
    for k, (before, after) in enumerate(zip(program.arrays(), arrays)):
        if not np.array_equal(np.asarray(before), np.asarray(after), equal_nan=True):
            return [Outcome("mismatch", "input modified", f"argument {k} was written to")] * n
    outcomes = []
    for k, (got, info) in enumerate(zip(results, expected.outputs)):
        problem = compare(got, info, k)
        outcomes.append(Outcome("mismatch", *problem) if problem else Outcome("ok"))
    return outcomes


def first_failure(outcomes: list[Outcome]) -> Outcome:
    return next((o for o in outcomes if o.failed), Outcome("ok"))


def check(program: Program, expected: Expected, target: str = "cpu") -> Outcome:
    return first_failure(judge(program, expected, target))
