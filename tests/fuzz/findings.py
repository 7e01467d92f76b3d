"""Re-check every repro in FINDINGS.md against the current compiler.

    python -m tests.fuzz.findings [--target opencl]

Each `- repro:` line of FINDINGS.md holds one line of Python that defines the inputs
and `f`; it runs in a child process (a crash is an answer too), numpy's f(...) against
pf.jit(f)(...). Prints one line per finding: `open` with what is still wrong, or
`passes`.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import subprocess
import sys

from .worker import MEMORY_LIMIT

HERE = os.path.dirname(os.path.abspath(__file__))
REPRO = re.compile(r"^- repro: `(.*)`\s*$")
TITLE = re.compile(r"^## (F\d+)\.?\s*(.*)$")

DRIVER = r'''
import inspect, re, sys, warnings
import numpy as np, ml_dtypes, powerfusion as pf
from numpy import nan, inf
warnings.simplefilter("ignore")
np.seterr(all="ignore")
exec(re.split(r"; pf\.jit\(f", sys.argv[1])[0])
args = [globals()[p] for p in inspect.signature(f).parameters]
try:
    want = f(*args)
except Exception as exc:
    want = exc
from tests.fuzz.check import compiled_for     # cuda-gir, hip-gir: the interpreter's plans
try:
    with compiled_for(sys.argv[2]) as target:
        got = pf.jit(f, target=target)(*args)
except Exception as exc:
    got = exc

def same(g, w):
    g, w = np.asarray(g), np.asarray(w)
    if g.shape != w.shape or g.dtype != w.dtype:
        return f"shape/dtype {g.shape} {g.dtype}, numpy {w.shape} {w.dtype}"
    if w.dtype.kind in "biu":
        return "" if np.array_equal(g, w) else f"values {g.ravel()[:4]}, numpy {w.ravel()[:4]}"
    g64, w64 = g.astype(np.float64), w.astype(np.float64)
    ok = np.array_equal(np.isnan(g64), np.isnan(w64)) and np.allclose(
        g64, w64, rtol=2e-4, atol=0, equal_nan=True)
    return "" if ok else f"values {g.ravel()[:4]}, numpy {w.ravel()[:4]}"

PF_DTYPES = {"bool", "int32", "int64", "float16", "bfloat16", "float32", "float64"}
foreign = not isinstance(want, Exception) and any(
    str(np.asarray(w).dtype) not in PF_DTYPES for w in (want if isinstance(want, tuple)
                                                        else (want,)))
if foreign and isinstance(got, pf.PowerFusionError):
    print("passes (numpy's dtype is not pf's: a typed refusal)")
elif isinstance(want, Exception):
    ok = isinstance(got, (pf.PowerFusionError, type(want)))
    print("passes" if ok else f"open: numpy raises {type(want).__name__}, pf gives {got!r:.80}")
elif isinstance(got, Exception):
    print(f"open: pf raises {type(got).__name__}: {str(got).splitlines()[0][:90]}")
else:
    gs = got if isinstance(got, tuple) else (got,)
    ws = want if isinstance(want, tuple) else (want,)
    problems = [same(g, w) for g, w in zip(gs, ws)]
    print("open: " + "; ".join(p for p in problems if p) if any(problems) else "passes")
'''


def findings(path: str):
    """(id, title, repro) for every repro line of the findings file."""
    current = ("?", "")
    for line in open(path):
        m = TITLE.match(line)
        if m:
            current = (m.group(1), m.group(2).strip())
        m = REPRO.match(line.strip())
        if m:
            yield current[0], current[1], m.group(1)


def _limits():
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))


def check(repro: str, target: str, timeout: float = 180) -> str:
    """The verdict on one repro, from a child process in its own session (so that a
    compiler it starts dies with it) with a memory limit."""
    child = subprocess.Popen([sys.executable, "-c", DRIVER, repro, target], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, preexec_fn=_limits)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return f"open: no answer in {timeout:.0f} s"
    finally:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if child.returncode:
        tail = (err.strip().splitlines() or [""])[-1]
        return f"open: the process died ({child.returncode}) {tail[:80]}"
    return out.strip().splitlines()[-1] if out.strip() else "open: no output"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--file", default=os.path.join(HERE, "FINDINGS.md"))
    args = parser.parse_args(argv)
    still_open = 0
    for ident, title, repro in findings(args.file):
        verdict = check(repro, args.target)
        still_open += verdict.startswith("open")
        print(f"{ident:4s} {verdict[:110]:110s}  {title[:60]}", flush=True)
    return 1 if still_open else 0


if __name__ == "__main__":
    sys.exit(main())
