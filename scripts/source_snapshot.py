"""Every generated source a refactor must keep: one file per (case, target) in a folder.

    python scripts/source_snapshot.py OUT_DIR
    diff -r BEFORE_DIR AFTER_DIR

Covers the SIMT test cases (tests/test_simt.py, cluster cases included) for CUDA (as
planned for an H100 and an A100), HIP and OpenCL; the GPU benchmark's cases for CUDA, HIP
and OpenCL; and the CPU suite's cases, and the SIMT test cases, as C. Sources come
through the public explain path, so the script runs unchanged across refactors.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import powerfusion as pf                                    # noqa: E402
from benchmarks import gpu, suite                           # noqa: E402
from powerfusion.compiler import explain_graph              # noqa: E402
from powerfusion.errors import PowerFusionError             # noqa: E402


def _graph_sources(out: Path) -> None:
    import graphs as G                                      # tests/graphs.py
    import test_simt

    cases = test_simt.CASES | test_simt.CLUSTER_CASES
    for name, make in sorted(cases.items()):
        graph = make()
        strides = G.strides_of(graph)
        for target in ("cpu", "cuda", "cuda_a100", "hip", "opencl"):
            _write(out, f"simt_test.{name}.{target}",
                   lambda: _explain_graph(graph, strides, target))


def _explain_graph(graph, strides, target: str) -> str:
    if target == "cuda_a100":
        from unittest import mock

        from powerfusion.runtime import simt_executable as se
        with mock.patch.object(se, "_cuda_device_name", lambda: "a100"):
            return explain_graph(graph, input_strides=strides, target="cuda").source
    return explain_graph(graph, input_strides=strides, target=target).source


class _Zeros:
    """An rng whose arrays are zeros: explain needs only shapes and dtypes, and zeros
    of the GPU benchmark's 2**26-element shapes cost no time."""

    def standard_normal(self, shape, dtype=np.float32):
        return np.zeros(shape, dtype)

    def integers(self, lo, hi, size):
        return np.zeros(size, np.int64)


def _function_sources(out: Path) -> None:
    import torch

    rng = _Zeros()
    for case in suite.CASES.values():
        args = case.inputs(quick=True)      # bfloat16 cases: as the suite passes them
        _write(out, f"suite.{case.name}.cpu", lambda: pf.explain(case.fn, *args,
                                                                  target="cpu").source)
    for case in gpu.cases():
        args = case.make(rng)
        if case.dtype == "bfloat16":
            args = tuple(torch.from_numpy(a).to(torch.bfloat16) if a.dtype == np.float32
                         else a for a in args)
        for target in ("cuda", "hip", "opencl"):
            _write(out, f"gpu.{case.name}.{target}",
                   lambda: pf.explain(case.fn, *args, target=target).source)


def _write(out: Path, stem: str, make) -> None:
    try:
        text = make()
    except PowerFusionError as e:       # a refusal is part of what must not change
        text = f"refused: {type(e).__name__}: {e}\n"
    (out / f"{stem}.txt").write_text(text)


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    _graph_sources(out)
    _function_sources(out)
    digest = hashlib.sha256()
    for p in sorted(out.glob("*.txt")):
        digest.update(p.name.encode() + p.read_bytes())
    print(f"{len(list(out.glob('*.txt')))} sources, sha256 {digest.hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
