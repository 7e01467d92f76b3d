"""The `powerfusion` command.

  powerfusion demo      compile four transformer kernels, check them, time them
  powerfusion explain   GIR, bytes moved and generated C of one builtin example
  powerfusion tune      time the cost model's best candidates, here or on a Ray cluster
  powerfusion probe     measure bandwidth at each memory level, write a target file
  powerfusion bench     the benchmark suite against numpy, torch eager, torch.compile

The examples are plain numpy code: `pf.jit` compiles them unchanged, the same code
run by numpy in float32 is the numpy baseline, and run in float64 it is the reference.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

import powerfusion as pf

from . import benchmarking, options
from .advise import advise_numpy, advise_torch, calibrate
from .api import _numpy_arg
from .benchmarking import format_table
from .errors import PowerFusionError
from .frontend import trace
from .runtime import probe
from .runtime.backends import get_target
from .search import tuning_db
from .search.distributed import Tuned, TuneJob, tune_on_ray
from .search.tuner import device_inputs, model_accuracy, tune


# -- the examples: ordinary numpy functions ----------------------------------------------
def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def layernorm(x, w, b):
    mu = x.mean(axis=-1, keepdims=True)
    d = x - mu
    return d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + 1e-5) * w + b


def rmsnorm(x, w):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-6) * w


def bias_gelu(x, b):
    h = x + b      # GELU, tanh approximation (GPT-2)
    return 0.5 * h * (1.0 + np.tanh(0.7978845608028654 * (h + 0.044715 * h ** 3)))


def _torch_functions() -> dict[str, Callable]:
    """The same kernels as torch eager runs them: one library call where torch has one."""
    import torch
    import torch.nn.functional as F

    return {
        "softmax": lambda x: torch.softmax(x, dim=-1),
        "layernorm": lambda x, w, b: F.layer_norm(x, w.shape, w, b, eps=1e-5),
        "rmsnorm": lambda x, w: F.rms_norm(x, w.shape, w, eps=1e-6),
        "bias_gelu": lambda x, b: F.gelu(x + b, approximate="tanh"),
    }


@dataclass(frozen=True)
class Example:
    fn: Callable
    shape: tuple[int, ...]         # of x; weights and biases are (shape[-1],)
    quick_shape: tuple[int, ...]
    what: str                      # where the shape comes from
    params: tuple[str, ...] = ()   # "w" (around 1) or "b" (around 0), after x

    @property
    def name(self) -> str:
        return self.fn.__name__

    def inputs(self, shape, dtype=np.float32, seed: int = 0) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(shape, dtype=np.float32)
        extra = [(1.0 if p == "w" else 0.0)
                 + 0.1 * rng.standard_normal(shape[-1], dtype=np.float32) for p in self.params]
        return tuple(a.astype(dtype) for a in (x, *extra))


EXAMPLES = {e.name: e for e in [
    Example(softmax, (12 * 512, 512), (3 * 64, 128),
            "BERT-base attention probabilities: 12 heads x 512 queries x 512 keys"),
    Example(layernorm, (8 * 512, 768), (256, 768),
            "BERT-base hidden states: 8 x 512 tokens x 768", ("w", "b")),
    Example(rmsnorm, (2048, 4096), (64, 4096),
            "LLaMA-7B hidden states: 2048 tokens x 4096", ("w",)),
    Example(bias_gelu, (4 * 1024, 3072), (128, 3072),
            "GPT-2 small MLP: 4 x 1024 tokens x 3072", ("b",)),
]}

RTOL, ATOL = 1e-4, 1e-5        # float32 against a float64 reference


# -- demo ---------------------------------------------------------------------------------
@dataclass
class Outcome:
    example: Example
    inputs: tuple
    compiled: object = None
    report: object = None
    first_call_s: float = 0.0
    errors: dict | None = None     # source -> (max abs err, max rel err)
    passed: bool = False
    failure: str = ""


def _errors(y, ref) -> tuple[float, float]:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != ref.shape:
        return math.nan, math.nan
    diff = float(np.max(np.abs(y - ref))) if y.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return diff, diff / scale if scale else diff


def _close(y, ref) -> bool:
    y = np.asarray(y)
    return (y.shape == ref.shape and y.dtype == np.float32 and bool(np.all(np.isfinite(y)))
            and bool(np.all(np.abs(y.astype(np.float64) - ref) <= ATOL + RTOL * np.abs(ref))))


def _run_example(pf, ex: Example, shape, torch_fns) -> Outcome:
    out = Outcome(ex, ex.inputs(shape))
    try:
        out.compiled = pf.jit(ex.fn)
        start = time.perf_counter()
        y = out.compiled(*out.inputs)
        out.first_call_s = time.perf_counter() - start
        out.report = pf.explain(out.compiled, *out.inputs)
    except Exception as e:  # noqa: BLE001 - report every failure, go on with the others
        traceback.print_exc(file=sys.stderr)
        out.failure = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return out
    ref = ex.fn(*(a.astype(np.float64) for a in out.inputs))
    out.errors = {"powerfusion": _errors(y, ref), "numpy": _errors(ex.fn(*out.inputs), ref)}
    if torch_fns:
        import torch

        got = torch_fns[ex.name](*(torch.from_numpy(a) for a in out.inputs)).numpy()
        out.errors["torch"] = _errors(got, ref)
    out.passed = _close(y, ref)
    if not out.passed:
        out.failure = f"differs from the float64 reference beyond rtol={RTOL}, atol={ATOL}"
    return out


def _c_excerpt(source: str, lines: int = 40) -> str:
    """About `lines` lines of C from the first kernel function (past the math header)."""
    text = source.splitlines()
    start = next((k for k, l in enumerate(text) if l.startswith("void ")),
                 next((k for k, l in enumerate(text) if "#pragma omp" in l), 0))
    shown = [f"{k + 1:5} | {l}" for k, l in enumerate(text[start:start + lines], start)]
    more = len(text) - start - len(shown)
    return "\n".join(shown + ([f"      ... {more} more lines" ] if more > 0 else []))


def _show_kernel(out: Outcome, gir_lines: int = 80) -> None:
    r = out.report
    print(f"== {out.example.name}{tuple(out.inputs[0].shape)}: what PowerFusion made of it")
    print(f"global bytes moved: {r.global_bytes:,} "
          f"(minimum {r.min_global_bytes:,}: every input read once, every output written once)")
    for level, moved in r.traffic.items():
        if isinstance(moved, dict):
            moved = "  ".join(f"{k} {v:,} B" for k, v in moved.items())
        print(f"  {level!s:>10}: {moved}")
    gir = r.gir.splitlines()
    print("\nGIR after the passes:")
    print("\n".join("  " + l for l in gir[:gir_lines]))
    if len(gir) > gir_lines:
        print(f"  ... {len(gir) - gir_lines} more lines")
    print("\nGenerated C (excerpt):")
    print(_c_excerpt(r.source))
    print(f"\n(all of it: powerfusion explain {out.example.name} "
          f"--shape {'x'.join(map(str, out.inputs[0].shape))} --source)\n")


def _candidates(out: Outcome, torch_fn) -> dict[str, Callable[[], object]]:
    """PowerFusion, numpy and (when given) torch on the same float32 inputs."""
    args, fn = out.inputs, out.example.fn
    candidates = {"pf": lambda: out.compiled(*args), "numpy": lambda: fn(*args)}
    if torch_fn:
        import torch

        targs = [torch.from_numpy(a) for a in args]
        candidates["torch"] = lambda: torch_fn(*targs)
    return candidates


def _timing_table(outcomes: list[Outcome], torch_fns, repeats: int) -> str:
    header = ["kernel", "first call ms", "pf ms", "pf GB/s", "numpy ms", "numpy GB/s",
              "vs numpy"]
    if torch_fns:
        header += ["torch ms", "torch GB/s", "vs torch"]
    header.append("bytes/min")
    rows = []
    for out in outcomes:
        ex = out.example
        candidates = _candidates(out, torch_fns.get(ex.name))
        med = {k: benchmarking.median_s(v)
               for k, v in benchmarking.interleaved(candidates, repeats).items()}
        nbytes = out.report.min_global_bytes
        row = [ex.name, f"{out.first_call_s * 1e3:.0f}"]
        for k in candidates:
            row += [f"{med[k] * 1e3:.3f}", f"{benchmarking.gb_per_s(nbytes, med[k]):.1f}"]
            if k != "pf":
                row.append(f"{med[k] / med['pf']:.2f}x")
        row.append(f"{out.report.global_bytes / max(nbytes, 1):.2f}")
        rows.append(row)
    return benchmarking.format_table(header, rows)


def cmd_demo(args) -> int:
    if args.fresh_cache:
        os.environ["POWERFUSION_CACHE_DIR"] = tempfile.mkdtemp(prefix="powerfusion-demo-")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)    # read when OpenMP starts

    torch_fns, torch_note = {}, "not installed (pip install torch==2.13.0 to compare)"
    if not args.no_torch:
        try:
            import torch

            if args.threads:
                torch.set_num_threads(args.threads)
            torch_fns = _torch_functions()
            torch_note = f"{torch.__version__}, {torch.get_num_threads()} threads"
        except ImportError:
            pass
    else:
        torch_note = "skipped (--no-torch)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"PowerFusion demo: float32 on the CPU ({cores} cores); numpy {np.__version__}; "
          f"torch {torch_note}\n")

    outcomes = []
    for ex in EXAMPLES.values():
        shape = ex.quick_shape if args.quick else ex.shape
        note = "; fewer rows for --quick" if args.quick else ""
        print(f"compiling {ex.name}{shape}  ({ex.what}{note})", flush=True)
        outcomes.append(_run_example(pf, ex, shape, torch_fns))

    print(f"\nCorrectness against a float64 numpy reference "
          f"(pass: |err| <= {ATOL:g} + {RTOL:g}*|ref| everywhere; rel = max-norm relative)")
    header = ["kernel", "shape", "pf abs err", "pf rel err", "numpy f32 abs", "torch f32 abs",
              "result"]
    rows = []
    for out in outcomes:
        e = out.errors or {}
        cells = [e[k][i] if k in e else None
                 for k, i in [("powerfusion", 0), ("powerfusion", 1), ("numpy", 0), ("torch", 0)]]
        rows.append([out.example.name, "x".join(map(str, out.inputs[0].shape)),
                     *("-" if c is None else f"{c:.2e}" for c in cells),
                     "PASS" if out.passed else "FAIL"])
    print(benchmarking.format_table(header, rows, "llrrrrl"))
    for out in outcomes:
        if out.failure:
            print(f"FAIL {out.example.name}: {out.failure}")
    print()

    shown = next((o for o in outcomes if o.example.name == args.show and o.report), None)
    if shown:
        _show_kernel(shown)

    timed = [o for o in outcomes if o.passed]
    if timed:
        repeats = args.repeats or (3 if args.quick else 15)
        print(f"Timing: median of {repeats} interleaved runs, ms per call, same float32 "
              "inputs.\n"
              "  GB/s: the bytes that must move (inputs read once, outputs written once) "
              "/ time\n"
              "  vs numpy, vs torch: their time / PowerFusion's (above 1: PowerFusion is "
              "faster)\n"
              "  bytes/min: global bytes PowerFusion's kernels move / that minimum\n"
              "  first call: trace + compile (+ gcc, unless the disk cache has the kernel)")
        print(_timing_table(timed, torch_fns, repeats))
    failed = [o.example.name for o in outcomes if not o.passed]
    onnx_ok = _onnx_demo(args)
    if failed or not onnx_ok:
        print(f"\nFAIL: {len(failed)} of {len(outcomes)} kernels ({', '.join(failed)})"
              + ("" if onnx_ok else "; the ONNX model"))
        return 1
    print(f"\nAll {len(outcomes)} kernels PASS.")
    return 0


def _onnx_demo(args) -> bool:
    """A BERT-style ONNX block (residual add, LayerNormalization, MatMul, bias, Gelu)
    through pf.onnx.load against onnxruntime: the MatMul runs in onnxruntime, the rest
    in PowerFusion kernels. Skipped (True) without onnx and onnxruntime."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        print("\nONNX: skipped (pip install onnx onnxruntime to run a model through "
              "pf.onnx.load)")
        return True

    rows, d, hidden = (64 if args.quick else 1024), 256, 1024
    rng = np.random.default_rng(0)
    weights = {"scale": 1 + 0.1 * rng.standard_normal(d), "bias": 0.1 * rng.standard_normal(d),
               "w": rng.standard_normal((d, hidden)) / np.sqrt(d),
               "b": 0.1 * rng.standard_normal(hidden)}
    nodes = [helper.make_node("Add", ["x", "residual"], ["h"]),
             helper.make_node("LayerNormalization", ["h", "scale", "bias"], ["n"], axis=-1),
             helper.make_node("MatMul", ["n", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["mb"]),
             helper.make_node("Gelu", ["mb"], ["y"])]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [rows, d])
          for n in ("x", "residual")]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, hidden])
    graph = helper.make_graph(nodes, "bert_block", vi, [out],
                              [numpy_helper.from_array(v.astype(np.float32), k)
                               for k, v in weights.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(proto)
    model = pf.onnx.load(proto)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    x, residual = (rng.standard_normal((rows, d)).astype(np.float32) for _ in range(2))
    got, (expected,) = model(x, residual), session.run(None, {"x": x, "residual": residual})
    err = float(np.abs(got - expected).max())
    ok = err <= 1e-4 + 1e-4 * float(np.abs(expected).max())
    print(f"\nONNX: Add -> LayerNormalization -> MatMul -> Add -> Gelu on {rows}x{d}, "
          f"pf.onnx.load against onnxruntime: {model!r}")
    print(f"  max |pf - onnxruntime| = {err:.2e}: {'PASS' if ok else 'FAIL'}")
    if ok:
        repeats = args.repeats or (3 if args.quick else 15)
        samples = benchmarking.interleaved({
            "pf": lambda: model(x, residual),
            "ort": lambda: session.run(None, {"x": x, "residual": residual})},
            repeats=repeats)
        pf_ms, ort_ms = (1e3 * benchmarking.median_s(samples[k]) for k in ("pf", "ort"))
        print(f"  {pf_ms:.3f} ms PowerFusion, {ort_ms:.3f} ms onnxruntime: "
              f"{ort_ms / pf_ms:.2f}x (median of {repeats} interleaved runs)")
    return ok


# -- explain ------------------------------------------------------------------------------
def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.replace("x", ",").split(",") if n.strip())
    except ValueError:
        shape = ()
    if not shape or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(
            f"expected a shape such as 4096x768 or 4096,768, got {text!r}")
    return shape


def _parse_dim(text: str) -> tuple[str, int]:
    name, _, size = text.partition("=")
    if not name or not size.isdigit() or int(size) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=SIZE such as batch=8, got {text!r}")
    return name, int(size)


def _explain_onnx(args) -> int:
    model = pf.onnx.load(args.example, target=args.target)
    inputs = model.example_inputs(dict(args.dim or ()))
    report = pf.explain(model, *inputs)
    shapes = ", ".join(f"{n}: {a.dtype}{list(a.shape)}"
                       for n, a in zip(model.input_names, inputs))
    return _print_report(f"{args.example} ({shapes})", report, args)


def _print_report(title: str, report, args) -> int:
    """What `explain` prints for any example: the report, the source and the graph."""
    print(f"{title}\n")
    print(report)
    if args.source:
        print("\nGenerated source:\n")
        print(report.source)
    if args.graph:
        print(_write_graph(report.to_dot(naive=args.naive), args.graph))
    return 0


def cmd_explain(args) -> int:
    if args.example not in EXAMPLES:
        if args.example.endswith(".onnx") or os.path.isfile(args.example):
            return _explain_onnx(args)
        raise SystemExit(f"powerfusion explain: {args.example!r} is neither a builtin "
                         f"example ({', '.join(sorted(EXAMPLES))}) nor an .onnx file")
    ex = EXAMPLES[args.example]
    inputs = ex.inputs(args.shape or ex.shape, np.dtype(args.dtype))
    report = pf.explain(pf.jit(ex.fn), *inputs, target=args.target)
    shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in inputs)
    return _print_report(f"{ex.name}({shapes})", report, args)


def _write_graph(dot: str, path: str) -> str:
    """Write DOT text, or render it with Graphviz when the name asks for an image."""
    out = Path(path)
    if out.suffix in (".svg", ".png"):
        exe = shutil.which("dot")
        if exe is None:
            fallback = out.with_suffix(".dot")
            fallback.write_text(dot)
            return (f"Graphviz's `dot` is not installed (apt-get install graphviz); "
                    f"wrote the DOT text to {fallback} instead")
        subprocess.run([exe, f"-T{out.suffix[1:]}", "-o", str(out)], input=dot.encode(),
                       check=True)
        return f"rendered the GIR-Graph to {out}"
    out.write_text(dot)
    return f"wrote the GIR-Graph (Graphviz DOT) to {out}"


def cmd_tune(args) -> int:
    jobs = _tune_jobs(args)
    settings = {"top": args.top, "budget_s": args.budget, "repeat": args.repeat}
    if args.ray is not None:
        return _tune_on_ray(jobs, args, settings)
    target = get_target(args.target)
    failures = 0
    for job in jobs:
        try:
            result = tune(job.graph, job.input_strides, target,
                          device_inputs(job.inputs, args.target), dialect=args.target,
                          **settings)
        except PowerFusionError as e:
            print(f"powerfusion tune: {job.name}: {type(e).__name__}: {e}", file=sys.stderr)
            failures += 1
            continue
        _print_tuned(job.name, result.entry)
    right, total = model_accuracy(target.name)
    print(f"cost model's first choice was the measured best for {right} of {total} tuned "
          "kernels in the tuning database")
    return 1 if failures else 0


def _tune_jobs(args) -> list[TuneJob]:
    """The builtin example, or the benchmark suite's cases, traced on their inputs."""
    if args.suite or args.cases:
        suite = _bench_suite()
        if suite is None:
            raise SystemExit("powerfusion tune --suite: benchmarks/suite.py not found; run it "
                             "from a checkout of the PowerFusion repository")
        return [_tune_job(c.name, c.fn, c.inputs(args.quick)) for c in suite.select(args.cases)]
    if args.example is None:
        raise SystemExit("powerfusion tune: name an example, or give --suite")
    ex = EXAMPLES[args.example]
    shape = args.shape or (ex.quick_shape if args.quick else ex.shape)
    return [_tune_job(ex.name, ex.fn, ex.inputs(shape, np.dtype("float32")))]


def _tune_job(name: str, fn, arrays) -> TuneJob:
    graph, _ = trace(fn, arrays)
    args = [_numpy_arg(a, f"{name}: argument {k}") for k, a in enumerate(arrays)]
    return TuneJob(name, graph, tuple(a.strides for a in args), tuple(a.storage for a in args))


def _print_tuned(name: str, entry: dict) -> None:
    confirmed = entry.get("confirmed") or {}
    print(f"{name}: measured (median ms; the fastest few timed again, head to head):")
    for label, sec in sorted(entry["seconds"].items(), key=lambda kv: kv[1]):
        again = f"  again {confirmed[label] * 1e3:9.3f}" if label in confirmed else ""
        mark = " <- winner" if label == entry["choice"].label else ""
        model = " (cost model's first choice)" if label == entry["model_choice"].label else ""
        print(f"  {label:32s} {sec * 1e3:9.3f}{again}{mark}{model}")


def _tune_on_ray(jobs: list[TuneJob], args, settings: dict) -> int:
    def show(outcome):
        if isinstance(outcome, Tuned):
            _print_tuned(f"{outcome.job} on {outcome.device.description}", outcome.entry)
        else:
            print(f"powerfusion tune: {outcome.job} on {outcome.device.description}: "
                  f"{outcome.error}", file=sys.stderr)

    report = tune_on_ray(jobs, address=args.ray or None, dialect=args.target,
                         tasks_per_node=args.tasks_per_node, on_result=show, **settings)
    kinds = Counter(report.nodes.values())
    for device, nodes in kinds.items():
        done = sum(1 for t in report.tuned if t.device == device)
        print(f"{device.description}: {nodes} node(s), {done} of {len(jobs)} kernels tuned, "
              f"merged into {tuning_db.db_path(device.target)}")
    return 1 if report.failed else 0


# -- the command line ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="powerfusion",
        description="PowerFusion: a tensor compiler for memory-intensive operators, "
                    "with explicit data movement (GIR).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="compile softmax, layernorm, RMSNorm and bias+GELU; check them "
                     "against numpy; show GIR and C; time them against numpy and torch",
        description="Compile four transformer kernels written in plain numpy, check them "
                    "against a float64 reference, show one kernel's GIR and C, and time "
                    "them against numpy and (when installed) torch eager.")
    demo.add_argument("--quick", action="store_true",
                      help="small shapes and few repeats (a smoke test)")
    demo.add_argument("--repeats", type=int, default=0,
                      help="timed runs per kernel (default 15, 3 with --quick)")
    demo.add_argument("--show", choices=sorted(EXAMPLES), default="softmax",
                      help="the kernel whose GIR and C are printed (default softmax)")
    demo.add_argument("--no-torch", action="store_true", help="do not compare with torch")
    demo.add_argument("--threads", type=int, default=0,
                      help="threads for PowerFusion (OMP_NUM_THREADS) and torch "
                           "(default: theirs, all cores)")
    demo.add_argument("--fresh-cache", action="store_true",
                      help="compile into an empty cache, so first-call times include gcc")
    demo.set_defaults(run=cmd_demo)

    explain = sub.add_parser(
        "explain", help="print the GIR, bytes moved and generated code of a builtin example "
                        "or an ONNX model",
        description="Print pf.explain for a builtin example or an ONNX model (each "
                    "PowerFusion region of it, on random inputs): GIR after the passes, "
                    "bytes moved per memory level, and (with --source) the generated C.")
    explain.add_argument("example", metavar="EXAMPLE|MODEL.onnx",
                         help=f"one of {', '.join(sorted(EXAMPLES))}, or a path to an "
                              ".onnx model")
    explain.add_argument("--dim", type=_parse_dim, action="append", metavar="NAME=SIZE",
                         help="ONNX models: the size of a symbolic input dim (default 1)")
    explain.add_argument("--shape", type=_parse_shape, default=None,
                         help="shape of x, e.g. 4096x768 (default: the demo's shape)")
    explain.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    explain.add_argument("--target", default="cpu")
    explain.add_argument("--source", action="store_true", help="also print the full source")
    explain.add_argument("--graph", metavar="FILE", default=None,
                         help="write the GIR-Graph: FILE.dot as Graphviz text; FILE.svg or "
                              "FILE.png rendered with Graphviz's `dot` when installed")
    explain.add_argument("--naive", action="store_true",
                         help="with --graph: the graph before the passes")
    explain.set_defaults(run=cmd_explain)

    tune = sub.add_parser(
        "tune", help="time the cost model's top candidates for a builtin example or the "
                     "benchmark suite, here or on a Ray cluster, and keep the winners in the "
                     "tuning database",
        description="Compile and time the cost model's top candidates (alternative "
                    "computations x placements) for a builtin example or the benchmark "
                    "suite's kernels on this machine, or with --ray on every kind of device "
                    "of a Ray cluster; the winners go to this machine's tuning database, so "
                    "later runs start tuned.")
    tune.add_argument("example", choices=sorted(EXAMPLES), nargs="?")
    tune.add_argument("--suite", action="store_true",
                      help="every kernel of the benchmark suite instead of one example")
    tune.add_argument("--cases", default=None, metavar="NAMES",
                      help="with --suite: these cases (comma-separated, shell patterns)")
    tune.add_argument("--quick", action="store_true",
                      help="the suite's (or the example's) small shapes")
    tune.add_argument("--shape", type=_parse_shape, default=None,
                      help="shape of x, e.g. 4096x768 (default: the demo's shape)")
    tune.add_argument("--budget", type=float, default=20.0,
                      help="seconds to spend compiling candidates per kernel at most")
    tune.add_argument("--top", type=int, default=4,
                      help="the cost model's best candidates to measure (default 4)")
    tune.add_argument("--repeat", type=int, default=9,
                      help="timed samples per candidate (default 9)")
    tune.add_argument("--target", default="cpu", choices=["cpu", "opencl", "cuda"],
                      help="where to time them (default cpu)")
    tune.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                      help="tune on a Ray cluster (HOST:6379; 'auto': the one running here; "
                           "no address: a new local one), once per kind of device")
    tune.add_argument("--tasks-per-node", type=int, default=1, metavar="N",
                      help="with --ray: CPU tunings at once on one node, each with its share "
                           "of the CPUs (default 1: tunings at once time each other)")
    tune.set_defaults(run=cmd_tune)

    probe = sub.add_parser(
        "probe", help="measure bandwidth at each memory level and write a target file",
        description="Measure the CPU's bandwidth at each memory level (DRAM copy, a "
                    "half-L2 per-core working set, a 16 KB L1 one) with a small C + "
                    "OpenMP kernel, print them, and write a target file the cost model "
                    "reads.")
    probe.add_argument("--out", default=None,
                       help="target file to write (default: $POWERFUSION_CACHE_DIR or "
                            "~/.cache/powerfusion, /target-cpu.json)")
    probe.add_argument("--threads", type=int, default=0,
                       help="threads (OMP_NUM_THREADS; default: all cores)")
    probe.add_argument("--quick", action="store_true", help="shorter trials")
    probe.set_defaults(run=cmd_probe)

    bench = sub.add_parser(
        "bench", help="run the benchmark suite against numpy, torch eager and torch.compile",
        description="Memory-intensive subgraphs at the shapes of real models, timed "
                    "interleaved against numpy, torch eager and torch.compile; prints "
                    "GB/s, the fraction of the measured copy bandwidth and speedups, and "
                    "writes JSON, Markdown and a PNG plot.")
    suite = _bench_suite()
    if suite is not None:
        suite.add_arguments(bench)
    bench.set_defaults(run=cmd_bench)

    adv = sub.add_parser(
        "advise", help="which parts of a numpy function or a torch model are memory-bound, "
                       "and what PowerFusion is predicted to make of them",
        description="Measure the baseline (numpy, or eager PyTorch with a breakdown into "
                    "library compute and the rest), price PowerFusion's kernels with the "
                    "cost model and predict the speedup, bounded by the library's share. "
                    "FUNCTION is path/to/file.py:name, called with random arrays of the "
                    "--shape's; --torch MODULE:FACTORY names a callable returning (model, "
                    "example inputs: a tuple or a dict of keyword arguments).")
    adv.add_argument("function", nargs="?", metavar="FILE.py:FUNCTION")
    adv.add_argument("--shape", type=_parse_shape, action="append", default=[],
                     help="one per argument of FUNCTION, e.g. 2048x1024")
    adv.add_argument("--dtype", choices=["float32", "float16", "float64"], default="float32")
    adv.add_argument("--torch", metavar="MODULE:FACTORY", default=None,
                     help="a torch model instead: FACTORY() returns (model, inputs)")
    adv.add_argument("--measure", action="store_true",
                     help="also compile and time PowerFusion, to set beside the prediction")
    adv.add_argument("--repeats", type=int, default=10)
    adv.add_argument("--plot", metavar="FILE.png", default=None,
                     help="also draw the time per part, baseline against predicted")
    adv.set_defaults(run=cmd_advise)

    opts = sub.add_parser(
        "options", help="list the environment variables PowerFusion reads",
        description="Every environment variable PowerFusion reads, the value in effect "
                    "and what it does.")
    opts.set_defaults(run=cmd_options)
    return parser


def _load(spec: str, what: str):
    """`path/to/file.py:name` or `package.module:name` -> the object it names."""
    source, sep, name = spec.rpartition(":")
    if not sep or not source or not name:
        raise SystemExit(f"powerfusion advise: {what} {spec!r}: expected FILE.py:NAME or "
                         "MODULE:NAME")
    if source.endswith(".py") or os.path.sep in source:
        path = Path(source)
        if not path.is_file():
            raise SystemExit(f"powerfusion advise: {what}: no file {source}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.path.pop(0)
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(source)
        finally:
            sys.path.pop(0)
    if not hasattr(module, name):
        raise SystemExit(f"powerfusion advise: {what}: {source} has no {name!r}")
    return getattr(module, name)


def cmd_advise(args) -> int:
    if (args.torch is None) == (args.function is None):
        raise SystemExit("powerfusion advise: give FILE.py:FUNCTION (with --shape per "
                         "argument) or --torch MODULE:FACTORY")
    if args.torch:
        made = _load(args.torch, "--torch")()
        if not (isinstance(made, tuple) and len(made) == 2):
            raise SystemExit("powerfusion advise: --torch: the factory must return "
                             "(model, inputs)")
        advice = advise_torch(*made, repeats=args.repeats, measure=args.measure)
    else:
        fn = _load(args.function, "FUNCTION")
        if not args.shape:
            raise SystemExit("powerfusion advise: give one --shape per argument of "
                             f"{args.function}")
        rng = np.random.default_rng(0)
        arrays = [rng.standard_normal(shape).astype(args.dtype) for shape in args.shape]
        advice = advise_numpy(fn, *arrays, repeats=args.repeats, measure=args.measure)
    print(advice)
    if args.plot:
        print(f"wrote {advice.plot(args.plot)}")
    return 0


def cmd_options(args) -> int:
    rows = options.describe()
    print(format_table(["variable", "value", "meaning"], [list(r) for r in rows], "lll"))
    return 1 if any(value.startswith("invalid:") for _, value, _ in rows) else 0


# -- probe, bench -------------------------------------------------------------------------
def cmd_probe(args) -> int:
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)    # read when OpenMP starts

    start = time.perf_counter()
    results = probe.measure(quick=args.quick)
    path = probe.write_target(results, args.out)
    print(f"Memory bandwidth of this CPU ({probe.cpu_model()}), read + write bytes / time, "
          "best of several trials:")
    print(probe.format_results(results))
    record = calibrate(path)             # what pf.advise needs beyond the bandwidths
    slowest = max(record["math_s"], key=record["math_s"].get)
    print(f"calibration for pf.advise: one pf.jit call {1e6 * record['jit_call_s']:.1f} us"
          + (f", a torch region {1e6 * record['region_call_s']:.1f} us "
             f"({1e6 * record['region_cold_call_s']:.1f} right after a matmul), a torch "
             f"graph {1e6 * record['graph_call_s']:.1f} us "
             f"({1e6 * record['graph_cold_call_s']:.1f}), the first torch call after a "
             f"matmul +{1e6 * record['resume_s']:.1f} us" if record["region_call_s"] else "")
          + f"; math on one core {1e9 * min(record['math_s'].values()):.2f} to "
          f"{1e9 * record['math_s'][slowest]:.2f} ns per element ({slowest.name.lower()})")
    print(f"\nwrote {path} ({time.perf_counter() - start:.1f} s)")
    return 0


def _bench_suite():
    """benchmarks/suite.py of the source tree this package runs from (None when absent:
    an installed package without its repository)."""
    name = "benchmarks.suite"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "suite.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(name, path)
    suite = importlib.util.module_from_spec(spec)
    sys.modules[name] = suite
    try:
        spec.loader.exec_module(suite)
    except BaseException:
        del sys.modules[name]
        raise
    return suite


def cmd_bench(args) -> int:
    suite = _bench_suite()
    if suite is None:
        print("powerfusion bench: benchmarks/suite.py not found; run it from a checkout of "
              "the PowerFusion repository", file=sys.stderr)
        return 2
    return suite.run(args)


def _version() -> str:
    try:
        return version("powerfusion")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2

    try:
        return args.run(args)
    except PowerFusionError as e:
        print(f"powerfusion {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
