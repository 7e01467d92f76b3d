"""The benchmark suite on a CUDA GPU: PowerFusion against torch eager and torch.compile.

Two groups of cases, every one timed interleaved with CUDA events (one sample of each
candidate in turn; a sample repeats the call until it lasts a few milliseconds of GPU
time; the figure is the median sample):

- the row sweep: softmax, layernorm and RMSNorm over 2^26 elements in rows of 256 to
  262144 elements, float32 and bfloat16 (the issue's acceptance grid);
- the model cases of the CPU suite (benchmarks/suite.py) at their full shapes, float32.

PowerFusion runs the suite's numpy-style functions through `pf.jit(target="cuda")` on
torch CUDA tensors; torch eager and torch.compile (dynamic=False) run the same
operators spelled in torch. Each result is checked against the torch spelling run in
float64 on the GPU. GB/s counts each input read once and each output written once
(`pf.explain(...).min_global_bytes`); "% copy" is that over torch's own device-to-
device copy bandwidth, measured in the same run on a 1 GiB tensor.

    python -m benchmarks.gpu                  everything, results to benchmarks/results/
    python -m benchmarks.gpu --cases 'softmax*' --out /tmp/r
    python -m benchmarks.gpu --variants       also each SIMT feature off (VARIANTS)
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import math
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import suite

ROW_SWEEP = (256, 1024, 4096, 16384, 65536, 262144)
# --variants: PowerFusion with one SIMT feature turned off, timed in turn with the
# default where it changes the kernels (pf[<name>] in the results)
VARIANTS = {
    "no clusters": {"POWERFUSION_SIMT_CLUSTERS": "0"},
    # rows on chip only where shared memory alone holds them (as on 2026-11-23)
    "one block's shared memory": {"POWERFUSION_SIMT_CLUSTERS": "0",
                                  "POWERFUSION_SIMT_ROW_REGISTERS": "0"},
    "one row per block": {"POWERFUSION_SIMT_ROWS": "1"},
}
SWEEP_ELEMENTS = 1 << 26
SWEEP_OPS = ("softmax", "layernorm", "rmsnorm")
CANDIDATES = ("pf", "torch", "torch_compile")


@dataclass
class GpuCase:
    name: str
    fn: object                  # numpy-style, for pf.jit
    torch_name: str
    make: object                # rng -> float32 numpy inputs
    dtype: str
    torch_args: object = None
    normwise: bool = False


@dataclass
class GpuResult:
    case: GpuCase
    shapes: list
    min_bytes: int = 0
    global_bytes: int = 0
    ms: dict = field(default_factory=dict)
    samples_ms: dict = field(default_factory=dict)
    first_call_s: dict = field(default_factory=dict)
    correct: bool = False
    max_err: float = math.nan
    failure: str = ""

    def gbps(self, who: str) -> float | None:
        return self.min_bytes / (self.ms[who] * 1e-3) / 1e9 if who in self.ms else None

    def speedup(self, baseline: str) -> float | None:
        if "pf" not in self.ms or baseline not in self.ms:
            return None
        return self.ms[baseline] / self.ms["pf"]


def cases() -> list[GpuCase]:
    out = []
    for op in SWEEP_OPS:
        fn = suite.CASES[op].fn
        for dtype in ("float32", "bfloat16"):
            for n in ROW_SWEEP:
                shape = (SWEEP_ELEMENTS // n, n)
                make = {"softmax": suite._x, "layernorm": suite._x_w_b,
                        "rmsnorm": suite._x_w}[op](shape)
                short = "f32" if dtype == "float32" else "bf16"
                out.append(GpuCase(f"{op}_{short}_{n}", fn, op, make, dtype))
    for c in suite.CASES.values():
        if c.dtype == "float32":
            out.append(GpuCase(c.name, c.fn, c.torch_name, c.full, "float32",
                               c.torch_args, c.normwise))
    # log-softmax over LLaMA 3's vocabulary: rows of 128256 float32 (513 KB), more
    # than one block holds (a thread block cluster of 2 on sm_90)
    out.append(GpuCase("log_softmax_f32_128x128256", suite.CASES["log_softmax"].fn,
                       "log_softmax", suite._x((128, 128256)), "float32"))
    # a 2-D transpose: the padded shared-memory tile schedule (the suite's head
    # transpose keeps its innermost axis and never needs one)
    out.append(GpuCase("transpose_f32_8192x4096", _transpose, "transpose",
                       suite._x((8192, 4096)), "float32"))
    return out


def _transpose(x):
    return x.T                          # pf writes the transposed copy


def _torch_transpose(x):
    return x.t().contiguous()


def _device_inputs(case: GpuCase, torch):
    args = case.make(np.random.default_rng(0))
    tensors = []
    for a in args:
        t = torch.from_numpy(np.ascontiguousarray(a)).cuda()
        if case.dtype == "bfloat16" and t.dtype == torch.float32:
            t = t.to(torch.bfloat16)
        tensors.append(t)
    return tuple(tensors)


def _outputs(y) -> list:
    return list(y) if isinstance(y, (tuple, list)) else [y]


def _check(case: GpuCase, got, ref) -> tuple[bool, float]:
    """Within the CPU suite's tolerance of the float64 torch result? (ok, max |err|)."""
    rtol, atol, scaled = suite.TOLERANCE[case.dtype]
    got, ref = _outputs(got), _outputs(ref)
    if len(got) != len(ref):
        return False, math.nan
    ok, worst = True, 0.0
    for y, r in zip(got, ref):
        y, r = y.double().reshape(r.shape), r.double()
        err = (y - r).abs()
        top = float(r.abs().max()) if r.numel() else 0.0
        bound = atol + rtol * (top if case.normwise else r.abs()) + scaled * top
        worst = max(worst, float(err.max()) if err.numel() else 0.0)
        ok = ok and bool(y.isfinite().all()) and bool((err <= bound).all())
    return ok, worst


def time_interleaved(candidates: dict, torch, repeats: int, min_sample_ms: float = 5.0):
    """Milliseconds per call of each candidate: `repeats` CUDA-event samples, in turn."""
    calls = {}
    for name, fn in candidates.items():
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        once_ms = (time.perf_counter() - start) * 1e3
        calls[name] = max(1, min(1000, math.ceil(min_sample_ms / max(once_ms, 1e-3))))
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(calls[name]):
                fn()
            end.record()
            end.synchronize()
            samples[name].append(begin.elapsed_time(end) / calls[name])
    return samples


def copy_bandwidth(torch, repeats: int = 20) -> float:
    """torch's device-to-device copy of 1 GiB, GB/s counting bytes read and written."""
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = statistics.median(time_interleaved({"copy": lambda: dst.copy_(src)}, torch,
                                            repeats)["copy"])
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def _variant(case: GpuCase, args, env: dict, default_source: str):
    """pf.jit of the case compiled under env, or None when its kernels are the default's."""
    import os

    import powerfusion as pf

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        jf = pf.jit(case.fn, target="cuda")
        if pf.explain(jf, *args).source == default_source:
            return None
        jf(*args)                       # compiled now, under env; later calls reuse it
        return jf
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_case(case: GpuCase, torch, torch_fns: dict, repeats: int,
             baselines: bool = True, variants: bool = False) -> GpuResult:
    import powerfusion as pf

    args = _device_inputs(case, torch)
    res = GpuResult(case, [list(a.shape) for a in args])
    targs = case.torch_args(args) if case.torch_args else args
    tfn = torch_fns[case.torch_name]
    try:
        with torch.no_grad():
            ref = tfn(*(a.double() if a.is_floating_point() else a for a in targs))
        jf = pf.jit(case.fn, target="cuda")
        start = time.perf_counter()
        y = jf(*args)
        torch.cuda.synchronize()
        res.first_call_s["pf"] = time.perf_counter() - start
        report = pf.explain(jf, *args)
        res.min_bytes, res.global_bytes = report.min_global_bytes, report.global_bytes
        res.correct, res.max_err = _check(case, y, ref)
        if not res.correct:
            res.failure = "pf differs from the float64 torch result"
        ref_for_variants = ref if variants else None
        del y, ref
        candidates = {"pf": lambda: jf(*args)}
        for name, env in VARIANTS.items() if variants else ():
            jv = _variant(case, args, env, report.source)
            if jv is not None:
                ok, err = _check(case, jv(*args), ref_for_variants)
                if not ok:
                    res.failure += f" pf[{name}] differs (max err {err:.2g});"
                candidates[f"pf[{name}]"] = (lambda f: lambda: f(*args))(jv)
        if baselines:
            torch._dynamo.reset()        # a fresh compile per case: no recompile limit
            cfn = torch.compile(tfn, dynamic=False)
            start = time.perf_counter()
            with torch.no_grad():
                cfn(*targs)
            torch.cuda.synchronize()
            res.first_call_s["torch_compile"] = time.perf_counter() - start
            candidates |= {"torch": lambda: tfn(*targs), "torch_compile": lambda: cfn(*targs)}
        with torch.no_grad():
            samples = time_interleaved(candidates, torch, repeats)
    except Exception as e:  # noqa: BLE001 - report it, go on with the other cases
        traceback.print_exc()
        res.failure = f"{type(e).__name__}: {str(e).strip()[:300]}"
        return res
    res.samples_ms = samples
    res.ms = {k: statistics.median(v) for k, v in samples.items()}
    return res


def summarise(results: list[GpuResult], copy_gbps: float) -> dict:
    timed = [r for r in results if r.ms]
    out = {"correct": sum(r.correct for r in results), "cases": len(results)}
    for b in ("torch", "torch_compile"):
        vals = [r.speedup(b) for r in timed if r.speedup(b)]
        if vals:
            worst = min(timed, key=lambda r: r.speedup(b) or math.inf)
            out[f"geomean_vs_{b}"] = math.exp(sum(map(math.log, vals)) / len(vals))
            out[f"min_vs_{b}"] = {"case": worst.case.name, "value": worst.speedup(b)}
    long_rows = [r for r in timed if r.case.name.split("_")[0] in SWEEP_OPS
                 and r.case.name.split("_")[-1].isdigit()
                 and int(r.case.name.split("_")[-1]) >= 4096]
    out["long_rows_at_90pct_copy"] = sum(r.gbps("pf") >= 0.9 * copy_gbps for r in long_rows)
    out["long_rows"] = len(long_rows)
    return out


def to_markdown(results, machine: dict, copy_gbps: float, summary: dict, date: str) -> str:
    lines = [f"# PowerFusion on CUDA: {machine['gpu']}, {date}", "",
             f"torch {machine['torch']}, cuda.core {machine['cuda_core']}, commit "
             f"{machine['commit']}. Copy bandwidth (torch device-to-device copy of 1 GiB, "
             f"read + write, same run): **{copy_gbps:.0f} GB/s**. Times: medians of "
             f"interleaved CUDA-event samples; GB/s counts each input read once and each "
             "output written once; `vs X` is X's time over PowerFusion's. Row sweep: "
             f"2^26 elements per case. Cases under ~25 MB stay in the 50 MB L2 between "
             "calls, so their GB/s can exceed the copy bandwidth.", ""]
    s = summary
    for b, label in (("torch", "torch eager"), ("torch_compile", "torch.compile")):
        if f"geomean_vs_{b}" in s:
            lines.append(f"- vs {label}: geometric mean {s[f'geomean_vs_{b}']:.2f}x, "
                         f"minimum {s[f'min_vs_{b}']['value']:.2f}x "
                         f"({s[f'min_vs_{b}']['case']})")
    lines.append(f"- row sweep, rows >= 4096: {s['long_rows_at_90pct_copy']} of "
                 f"{s['long_rows']} at >= 90% of the copy bandwidth")
    lines.append(f"- correct: {s['correct']} of {s['cases']}")
    lines += ["", "| case | dtype | shape | MB | pf ms | pf GB/s | % copy | torch ms | "
              "torch.compile ms | vs torch | vs torch.compile | max err | ok |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        g = r.gbps("pf")
        cells = [r.case.name, r.case.dtype, "x".join(map(str, r.shapes[0])),
                 f"{r.min_bytes / 1e6:.1f}",
                 *(f"{r.ms[k]:.3f}" if k in r.ms else "-" for k in ("pf",)),
                 f"{g:.0f}" if g else "-", f"{100 * g / copy_gbps:.0f}" if g else "-",
                 *(f"{r.ms[k]:.3f}" if k in r.ms else "-" for k in ("torch", "torch_compile")),
                 *(f"{r.speedup(b):.2f}x" if r.speedup(b) else "-"
                   for b in ("torch", "torch_compile")),
                 f"{r.max_err:.1e}", "OK" if r.correct else f"**{r.failure or 'wrong'}**"]
        lines.append("| " + " | ".join(cells) + " |")
    off = [(r, k) for r in results for k in r.ms if k.startswith("pf[") and "pf" in r.ms]
    if off:
        lines += ["", "SIMT features timed off (`--variants`, in turn with the default): "
                  "time with the feature off over time with it on.", "",
                  "| case | feature off | ms | off / on |", "|---|---|---:|---:|"]
        lines += [f"| {r.case.name} | {k[3:-1]} | {r.ms[k]:.3f} | {r.ms[k] / r.ms['pf']:.2f} |"
                  for r, k in off]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="", help="comma-separated names or patterns")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=str(suite.RESULTS_DIR))
    parser.add_argument("--pf-only", action="store_true",
                        help="time PowerFusion alone (quick experiments; writes no results)")
    parser.add_argument("--budget-s", type=float, default=0,
                        help="start no new case after this many seconds (results so far "
                             "are written after every case either way)")
    parser.add_argument("--variants", action="store_true",
                        help="also time PowerFusion with each SIMT feature of VARIANTS off, "
                             "where that changes the kernels")
    args = parser.parse_args(argv)
    import torch

    import cuda.core
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu: no CUDA device")
    chosen = cases()
    if args.cases:
        pats = [p.strip() for p in args.cases.split(",") if p.strip()]
        chosen = [c for c in chosen if any(fnmatch.fnmatchcase(c.name, p) for p in pats)]
    torch_fns = {**suite._torch_functions(), "transpose": _torch_transpose}
    date = datetime.date.today().isoformat()
    machine = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cuda_core": cuda.core.__version__,
               "commit": suite.command_output(["git", "rev-parse", "--short", "HEAD"]).strip()}
    copy_gbps = copy_bandwidth(torch)
    print(f"copy bandwidth: {copy_gbps:.0f} GB/s", flush=True)
    results = []
    began = time.perf_counter()
    out = Path(args.out)
    stem = f"cuda-{machine['gpu'].split()[1].lower() if len(machine['gpu'].split()) > 1 else 'gpu'}-{date}"
    for case in chosen:
        if args.budget_s and time.perf_counter() - began > args.budget_s:
            print(f"time budget spent: {case.name} and later cases not run", flush=True)
            break
        r = run_case(case, torch, torch_fns, args.repeats, baselines=not args.pf_only,
                     variants=args.variants)
        results.append(r)
        g = r.gbps("pf")
        off = "".join(f"  {k}/pf {r.ms[k] / r.ms['pf']:.2f}" for k in r.ms
                      if k.startswith("pf[") and "pf" in r.ms)
        print(f"{case.name:24s} pf {r.ms.get('pf', math.nan):8.3f} ms "
              f"{(g or 0):6.0f} GB/s {100 * (g or 0) / copy_gbps:4.0f}%  "
              f"vs torch {r.speedup('torch') or 0:5.2f}x  vs compile "
              f"{r.speedup('torch_compile') or 0:5.2f}x  {'OK' if r.correct else r.failure}"
              f"{off}", flush=True)
        torch.cuda.empty_cache()
        if not args.pf_only:        # after every case: a run cut short keeps what it did
            _write(out, stem, results, machine, copy_gbps, date)
    if not args.pf_only and results:
        print(to_markdown(results, machine, copy_gbps, summarise(results, copy_gbps), date))
    return 0


def _write(out: Path, stem: str, results, machine: dict, copy_gbps: float, date: str) -> None:
    summary = summarise(results, copy_gbps)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(to_markdown(results, machine, copy_gbps, summary, date))
    (out / f"{stem}.json").write_text(json.dumps({
        "machine": machine, "date": date, "copy_gbps": copy_gbps, "summary": summary,
        "cases": [{"name": r.case.name, "dtype": r.case.dtype, "shapes": r.shapes,
                   "min_global_bytes": r.min_bytes, "global_bytes": r.global_bytes,
                   "ms": r.ms, "samples_ms": r.samples_ms, "first_call_s": r.first_call_s,
                   "gbps_pf": r.gbps("pf"), "correct": r.correct, "max_err": r.max_err,
                   "failure": r.failure or None} for r in results]}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
