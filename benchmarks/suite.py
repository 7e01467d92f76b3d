"""The benchmark suite: memory-intensive subgraphs at the shapes of real models.

Every case is a plain numpy function: `pf.jit` compiles it unchanged, numpy runs the
same code as a baseline, and run on float64 copies of the inputs it is the reference.
Beside it stands the natural torch spelling (F.softmax, F.layer_norm, ...), run by
torch eager and by torch.compile (Inductor, dynamic=False, warmed up first).

All candidates of a case are timed interleaved (benchmarking.interleaved: one sample
of each in turn), and each figure is a median. GB/s counts the bytes a case must move
(`pf.explain(...).min_global_bytes`: every input read once, every output written
once); "% copy" is PowerFusion's GB/s over the copy bandwidth of the same run: the
median of the probe's DRAM copy sampled at the start, between the cases and at the
end (on a shared machine it swings by 2x within minutes: one sample at a quiet moment
is no yardstick for medians taken over the whole run). Where a case's arithmetic
outlasts its bytes (exp, tanh on two cores), "% roofline" says how close it comes to
the larger of the two: its arithmetic is priced with each transcendental at the speed
pf_math.h's function is measured at in the same run.

    powerfusion bench                      the whole suite, float32 and bf16
    powerfusion bench --quick              small shapes, few repeats (a smoke test)
    powerfusion bench --cases softmax,rmsnorm --no-torch-compile

Results: an aligned table on stdout; JSON, Markdown and a PNG bar chart of the
speedups in benchmarks/results/ (or --out DIR), named cpu-<date>[-quick].*.
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from powerfusion.cli import layernorm, rmsnorm  # the demo's numpy definitions
from powerfusion.runtime.cpu import command_output

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BASELINES = ("numpy", "torch", "torch_compile")
LABEL = {"pf": "pf", "numpy": "numpy", "torch": "torch", "torch_compile": "torch.compile"}
# |err| <= atol + rtol * |ref| + scaled * max|ref|, elementwise. bfloat16 keeps 8
# significant bits: a result within a couple of its ulps passes, and so does one a
# few ulps of the output's scale off near zero (an intermediate rounded to bf16).
TOLERANCE = {"float32": (1e-4, 1e-5, 0.0), "bfloat16": (2.0 ** -7, 1e-3, 2.0 ** -7)}


# -- the subgraphs: ordinary numpy code ------------------------------------------------------
def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x):
    s = x - x.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def add_layernorm(x, residual, w, b):
    h = x + residual
    return h, layernorm(h, w, b)


def add_rmsnorm(x, residual, w):
    h = x + residual
    return h, rmsnorm(h, w)


def bias_gelu(x, b):
    h = x + b      # GELU, tanh approximation (GPT-2's gelu_new)
    return 0.5 * h * (1.0 + np.tanh(0.7978845608028654 * (h + 0.044715 * h ** 3)))


def swiglu(gate, up):
    return gate / (1.0 + np.exp(-gate)) * up      # silu(gate) * up


def rotary(x, cos, sin):
    half = x.shape[-1] // 2            # rotate_half, as in LLaMA's reference code
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def masked_softmax(x, mask):
    s = np.where(mask, x * 0.125, -1e9)           # 1/sqrt(64): BERT-base head size
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy(logits, target, vocab):
    """Per-row loss: logsumexp of the row minus the target's logit. `vocab` is
    arange(V) (int32), `target` (M, 1): the pick is a compare, no gather."""
    m = logits.max(axis=-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=-1))
    return lse - np.where(vocab == target, logits, 0.0).sum(axis=-1)


def head_transpose(x):
    return x.transpose(0, 2, 1, 3)       # (B, S, H, D) -> (B, H, S, D); pf writes a copy


def head_transpose_numpy(x):
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3))


def group_norm(x, w, b):
    n, c, h, wd = x.shape
    g = x.reshape(n, 32, -1)              # 32 groups, as in the SD UNet
    mu = g.mean(axis=-1, keepdims=True)
    d = g - mu
    y = (d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + 1e-5)).reshape(n, c, h, wd)
    return y * w.reshape(c, 1, 1) + b.reshape(c, 1, 1)


def column_sum(x):
    return x.sum(axis=0)


# -- the same in torch, as one would write it ---------------------------------------------
def _torch_functions() -> dict[str, Callable]:
    import torch
    import torch.nn.functional as F

    def t_softmax(x):
        return F.softmax(x, dim=-1)

    def t_log_softmax(x):
        return F.log_softmax(x, dim=-1)

    def t_layernorm(x, w, b):
        return F.layer_norm(x, w.shape, w, b, eps=1e-5)

    def t_rmsnorm(x, w):
        return F.rms_norm(x, w.shape, w, eps=1e-6)

    def t_add_layernorm(x, r, w, b):
        h = x + r
        return h, F.layer_norm(h, w.shape, w, b, eps=1e-5)

    def t_add_rmsnorm(x, r, w):
        h = x + r
        return h, F.rms_norm(h, w.shape, w, eps=1e-6)

    def t_bias_gelu(x, b):
        return F.gelu(x + b, approximate="tanh")

    def t_swiglu(gate, up):
        return F.silu(gate) * up

    def t_rotary(x, cos, sin):
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def t_masked_softmax(x, mask):
        return F.softmax((x * 0.125).masked_fill(~mask, -1e9), dim=-1)

    def t_cross_entropy(logits, target):
        return F.cross_entropy(logits, target, reduction="none")

    def t_head_transpose(x):
        return x.transpose(1, 2).contiguous()

    def t_group_norm(x, w, b):
        return F.group_norm(x, 32, w, b, eps=1e-5)

    def t_column_sum(x):
        return x.sum(dim=0)

    return {f.__name__[2:]: f for f in [
        t_softmax, t_log_softmax, t_layernorm, t_rmsnorm, t_add_layernorm, t_add_rmsnorm,
        t_bias_gelu, t_swiglu, t_rotary, t_masked_softmax, t_cross_entropy,
        t_head_transpose, t_group_norm, t_column_sum]}


# -- cases ----------------------------------------------------------------------------------
def _normal(rng, shape):
    return rng.standard_normal(shape, dtype=np.float32)


def _weight(rng, n):
    return 1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)


def _bias(rng, n):
    return 0.1 * rng.standard_normal(n, dtype=np.float32)


def _x(shape):
    return lambda rng: (_normal(rng, shape),)


def _x_w(shape):
    return lambda rng: (_normal(rng, shape), _weight(rng, shape[-1]))


def _x_w_b(shape):
    return lambda rng: (_normal(rng, shape), _weight(rng, shape[-1]), _bias(rng, shape[-1]))


def _x_b(shape):
    return lambda rng: (_normal(rng, shape), _bias(rng, shape[-1]))


def _x_r_w_b(shape):
    return lambda rng: (_normal(rng, shape), _normal(rng, shape), _weight(rng, shape[-1]),
                        _bias(rng, shape[-1]))


def _x_r_w(shape):
    return lambda rng: (_normal(rng, shape), _normal(rng, shape), _weight(rng, shape[-1]))


def _gate_up(shape):
    return lambda rng: (_normal(rng, shape), _normal(rng, shape))


def _rotary(shape):
    def make(rng):
        s, d = shape[-2], shape[-1]
        inv = 1.0 / 10000.0 ** (np.arange(0, d, 2) / d)
        angles = np.outer(np.arange(s), inv)
        angles = np.concatenate([angles, angles], axis=-1)
        return (_normal(rng, shape), np.cos(angles).astype(np.float32),
                np.sin(angles).astype(np.float32))
    return make


def _masked(shape):
    def make(rng):
        b, s = shape[0], shape[-1]
        lengths = rng.integers(s // 4, s + 1, size=b)       # padded batch: keys past the end
        mask = (np.arange(s)[None, :] < lengths[:, None]).reshape(b, 1, 1, s)
        return _normal(rng, shape), mask
    return make


def _logits_target(shape):
    def make(rng):
        m, v = shape
        return (2.0 * _normal(rng, shape), rng.integers(0, v, size=(m, 1)).astype(np.int32),
                np.arange(v, dtype=np.int32))
    return make


def _group(shape):
    return lambda rng: (_normal(rng, shape), _weight(rng, shape[1]), _bias(rng, shape[1]))


def _ce_torch(args):
    import torch

    logits, target, _ = args
    return logits, target[:, 0].to(torch.int64)


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable                        # numpy-style: pf.jit compiles it, numpy runs it
    torch_name: str                     # its torch spelling in _torch_functions()
    full: Callable                      # rng -> float32 inputs at the model's shape
    quick: Callable                     # rng -> the same at a small shape
    what: str                           # where the shape comes from
    dtype: str = "float32"              # float inputs are cast to it
    numpy_fn: Callable | None = None    # when numpy's spelling differs from fn's
    torch_args: Callable | None = None  # torch inputs from the converted numpy ones
    normwise: bool = False              # check max|err| against max|ref| (long sums)

    def inputs(self, quick: bool, seed: int = 0) -> tuple[np.ndarray, ...]:
        args = (self.quick if quick else self.full)(np.random.default_rng(seed))
        if self.dtype == "float32":
            return args
        dt = _np_dtype(self.dtype)
        return tuple(a.astype(dt) if a.dtype == np.float32 else a for a in args)


def _np_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _cases() -> list[Case]:
    c = Case
    f32 = [
        c("softmax", softmax, "softmax", _x((32, 12, 128, 128)), _x((1, 4, 128, 128)),
          "BERT-base attention scores: batch 32 x 12 heads x 128 x 128"),
        c("softmax_gpt2", softmax, "softmax", _x((12, 1024, 1024)), _x((2, 64, 1024)),
          "GPT-2 attention scores: 12 heads x 1024 x 1024"),
        c("log_softmax", log_softmax, "log_softmax", _x((256, 50257)), _x((8, 50257)),
          "GPT-2 vocabulary logits: 256 rows x 50257"),
        c("layernorm", layernorm, "layernorm", _x_w_b((4096, 768)), _x_w_b((256, 768)),
          "BERT-base hidden states: 8 x 512 tokens x 768"),
        c("layernorm_vit", layernorm, "layernorm", _x_w_b((197 * 32, 768)),
          _x_w_b((197, 768)), "ViT-B/16 tokens: batch 32 x 197 x 768"),
        c("rmsnorm", rmsnorm, "rmsnorm", _x_w((2048, 4096)), _x_w((64, 4096)),
          "LLaMA-7B hidden states: 2048 tokens x 4096"),
        c("add_layernorm", add_layernorm, "add_layernorm", _x_r_w_b((4096, 768)),
          _x_r_w_b((256, 768)), "BERT-base residual add + layernorm, 4096 x 768; "
          "returns the sum and the norm"),
        c("add_rmsnorm", add_rmsnorm, "add_rmsnorm", _x_r_w((2048, 4096)),
          _x_r_w((64, 4096)), "LLaMA-7B residual add + RMSNorm, 2048 x 4096; "
          "returns the sum and the norm"),
        c("bias_gelu", bias_gelu, "bias_gelu", _x_b((4096, 3072)), _x_b((128, 3072)),
          "GPT-2 MLP: 4 x 1024 tokens x 3072, bias + GELU (tanh)"),
        c("swiglu", swiglu, "swiglu", _gate_up((2048, 11008)), _gate_up((32, 11008)),
          "LLaMA-7B MLP: 2048 tokens x 11008, silu(gate) * up"),
        c("rotary", rotary, "rotary", _rotary((1, 32, 2048, 128)), _rotary((1, 4, 128, 128)),
          "LLaMA-7B rotary embedding: 32 heads x 2048 x 128, cos/sin tables"),
        c("masked_softmax", masked_softmax, "masked_softmax", _masked((32, 12, 128, 128)),
          _masked((2, 4, 128, 128)), "BERT-base scaled softmax with a key padding mask "
          "(bool): batch 32 x 12 heads x 128 x 128"),
        c("cross_entropy", cross_entropy, "cross_entropy", _logits_target((512, 50257)),
          _logits_target((8, 50257)), "GPT-2 LM loss per token: 512 rows x 50257 "
          "(logsumexp - target logit)", torch_args=_ce_torch),
        c("head_transpose", head_transpose, "head_transpose", _x((1, 2048, 32, 128)),
          _x((1, 64, 8, 64)), "LLaMA-7B heads: (1, 2048, 32, 128) -> (1, 32, 2048, 128) copy",
          numpy_fn=head_transpose_numpy),
        c("group_norm", group_norm, "group_norm", _group((8, 320, 32, 32)),
          _group((1, 64, 16, 16)), "SD UNet group norm: 8 x 320 x 32 x 32, 32 groups"),
        c("column_sum", column_sum, "column_sum", _x((65536, 1024)), _x((1024, 256)),
          "column reduction: sum over axis 0 of 65536 x 1024", normwise=True),
    ]
    by_name = {k.name: k for k in f32}
    bf16 = [Case(**{**by_name[n].__dict__, "name": f"{n}_bf16", "dtype": "bfloat16",
                    "what": by_name[n].what + "; bfloat16"})
            for n in ("softmax", "layernorm", "rmsnorm", "bias_gelu")]
    return f32 + bf16


CASES = {c.name: c for c in _cases()}


def select(spec: str | None) -> list[Case]:
    """Cases named in a comma-separated list (shell patterns allowed); all when empty."""
    if not spec:
        return list(CASES.values())
    chosen: list[Case] = []
    for pattern in (p.strip() for p in spec.split(",")):
        if not pattern:
            continue
        hits = [c for name, c in CASES.items() if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise SystemExit(f"powerfusion bench: no case {pattern!r}; cases: "
                             f"{', '.join(CASES)}")
        chosen += [c for c in hits if c not in chosen]
    return chosen


# -- running one case -------------------------------------------------------------------------
def _to_torch(a: np.ndarray):
    import torch

    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _as_f64(y) -> np.ndarray:
    if hasattr(y, "detach"):         # a torch tensor
        import torch

        y = y.detach()
        return (y.to(torch.float64) if y.is_floating_point() else y).numpy()
    y = np.asarray(y)
    return y.astype(np.float64)


def _outputs(y) -> list:
    return list(y) if isinstance(y, (tuple, list)) else [y]


def _errors(got, ref: list[np.ndarray]) -> tuple[float, float]:
    """Max absolute error and max-norm relative error over all outputs."""
    outs = _outputs(got)
    if len(outs) != len(ref):
        return math.nan, math.nan
    abs_err, rel_err = 0.0, 0.0
    for y, r in zip(outs, ref):
        y = _as_f64(y)
        if y.shape != r.shape:
            return math.nan, math.nan
        if not r.size:
            continue
        d = float(np.max(np.abs(y - r)))
        scale = float(np.max(np.abs(r)))
        abs_err, rel_err = max(abs_err, d), max(rel_err, d / scale if scale else d)
    return abs_err, rel_err


def _correct(case: Case, got, ref: list[np.ndarray]) -> bool:
    rtol, atol, scaled = TOLERANCE[case.dtype]
    outs = _outputs(got)
    if len(outs) != len(ref):
        return False
    for y, r in zip(outs, ref):
        if str(np.asarray(y).dtype) != case.dtype and np.asarray(y).dtype != np.float32:
            return False
        y = _as_f64(y)
        if y.shape != r.shape or not np.all(np.isfinite(y)):
            return False
        top = np.max(np.abs(r)) if r.size else 0.0
        bound = atol + rtol * (top if case.normwise else np.abs(r)) + scaled * top
        if not np.all(np.abs(y - r) <= bound):
            return False
    return True


def _tolerance(case: Case) -> str:
    rtol, atol, scaled = TOLERANCE[case.dtype]
    text = f"|err| <= {atol:g} + {rtol:g}*" + ("max|ref|" if case.normwise else "|ref|")
    return text + (f" + {scaled:g}*max|ref|" if scaled else "")


@dataclass
class Result:
    case: Case
    shapes: list
    min_bytes: int = 0
    global_bytes: int = 0
    pf_first_call_s: float = math.nan
    compile_first_call_s: float | None = None
    ms: dict | None = None            # candidate -> median ms
    samples_ms: dict | None = None
    errors: dict | None = None        # candidate -> (abs, rel)
    correct: bool = False
    failure: str = ""
    notes: list | None = None
    arithmetic_s: float | None = None  # the plan's arithmetic alone (see arithmetic_seconds)

    def speedup(self, baseline: str) -> float | None:
        if not self.ms or baseline not in self.ms or "pf" not in self.ms:
            return None
        return self.ms[baseline] / self.ms["pf"]

    def gbps(self, who: str) -> float | None:
        if not self.ms or who not in self.ms:
            return None
        return self.min_bytes / (self.ms[who] * 1e-3) / 1e9

    def fraction_of_roofline(self, copy_gbps: float) -> float | None:
        """The roofline's time over PowerFusion's: the larger of moving the bytes at
        the copy bandwidth and doing the arithmetic at pf_math's measured speed."""
        if not self.ms or "pf" not in self.ms or not copy_gbps or self.arithmetic_s is None:
            return None
        floor = max(self.min_bytes / (copy_gbps * 1e9), self.arithmetic_s)
        return floor / (self.ms["pf"] * 1e-3)


def arithmetic_seconds(report, math_s: dict) -> float:
    """The arithmetic of a plan's kernels alone on every core: each transcendental at
    the speed pf_math.h's function was measured at on this machine (one core, L2), the
    rest by instruction count (search/compute.py, the cost model's own estimate)."""
    from powerfusion.runtime.backends import get_target
    from powerfusion.search.compute import compute_seconds

    target = get_target("cpu")
    return sum(compute_seconds(p, target, math_s) for p in report.programs)


def measured_math() -> dict:
    """Seconds per element of each pf_math.h function on one core, by Op."""
    from powerfusion.runtime.calibration import math_by_op, measure_math

    return math_by_op(measure_math())


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def run_case(case: Case, *, quick: bool, repeats: int, torch_fns: dict | None,
             use_compile: bool, min_sample_s: float, math_s: dict | None = None) -> Result:
    import powerfusion as pf
    from powerfusion import benchmarking

    args = case.inputs(quick)
    res = Result(case, [list(a.shape) for a in args], notes=[])
    numpy_fn = case.numpy_fn or case.fn

    # reference: the numpy code in float64
    ref = [np.asarray(r, dtype=np.float64) for r in _outputs(numpy_fn(*(
        a.astype(np.float64) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a
        for a in args)))]

    try:
        jf = pf.jit(case.fn)
        start = time.perf_counter()
        y = jf(*args)
        res.pf_first_call_s = time.perf_counter() - start
        report = pf.explain(jf, *args)
        res.min_bytes, res.global_bytes = report.min_global_bytes, report.global_bytes
        if math_s is not None:
            res.arithmetic_s = arithmetic_seconds(report, math_s)
    except Exception as e:  # noqa: BLE001 - report every failure, go on with the others
        traceback.print_exc(file=sys.stderr)
        res.failure = "pf: " + _short(e)
        return res
    res.errors = {"pf": _errors(y, ref)}
    res.correct = _correct(case, y, ref)
    if not res.correct:
        res.failure = "pf differs from the float64 reference beyond " + _tolerance(case)
    with np.errstate(over="ignore"):
        res.errors["numpy"] = _errors(numpy_fn(*args), ref)
    del y

    candidates: dict[str, Callable[[], object]] = {
        "pf": lambda: jf(*args),
        "numpy": lambda: numpy_fn(*args),
    }
    if torch_fns is not None:
        import torch

        targs = tuple(_to_torch(a) for a in args)
        if case.torch_args:
            targs = case.torch_args(targs)
        tfn = torch_fns[case.torch_name]
        try:
            with torch.no_grad():
                res.errors["torch"] = _errors(tfn(*targs), ref)
            candidates["torch"] = lambda: tfn(*targs)
        except Exception as e:  # noqa: BLE001
            res.notes.append("torch eager failed: " + _short(e))
        if use_compile:
            try:
                cfn = torch.compile(tfn, dynamic=False)
                start = time.perf_counter()
                with torch.no_grad():
                    got = cfn(*targs)
                res.compile_first_call_s = time.perf_counter() - start
                res.errors["torch_compile"] = _errors(got, ref)
                del got
                for _ in range(2):
                    cfn(*targs)
                candidates["torch_compile"] = lambda: cfn(*targs)
            except Exception as e:  # noqa: BLE001
                res.notes.append("torch.compile failed: " + _short(e))
    with np.errstate(over="ignore"):
        samples = benchmarking.interleaved(candidates, repeats, warmup=2,
                                           min_sample_s=min_sample_s)
    res.samples_ms = {k: [s * 1e3 for s in v] for k, v in samples.items()}
    res.ms = {k: statistics.median(v) for k, v in res.samples_ms.items()}
    return res


# -- the machine -------------------------------------------------------------------------------
def machine_info(threads: int) -> dict:
    from powerfusion.runtime.probe import cpu_model

    info = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    try:
        import powerfusion

        info["powerfusion"] = powerfusion.__version__
    except (ImportError, AttributeError):
        pass
    gcc = command_output(["gcc", "--version"]).splitlines()
    info["gcc"] = gcc[0] if gcc else None
    commit = command_output(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse",
                       "--short", "HEAD"]).strip()
    info["commit"] = commit or None
    info["load_average_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return info


# -- reporting ---------------------------------------------------------------------------------
def _geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summarise(results: list[Result], copy_gbps: float) -> dict:
    timed = [r for r in results if r.ms and r.correct]
    summary: dict = {"cases": len(results), "correct": sum(r.correct for r in results),
                     "timed": len(timed), "geomean_speedup": {}, "min_speedup": {}}
    for b in BASELINES:
        pairs = [(r.speedup(b), r.case.name) for r in timed if r.speedup(b) is not None]
        if pairs:
            summary["geomean_speedup"][b] = _geomean([s for s, _ in pairs])
            worst = min(pairs)
            summary["min_speedup"][b] = {"value": worst[0], "case": worst[1]}
    fractions = [r.gbps("pf") / copy_gbps for r in timed if copy_gbps > 0]
    summary["median_fraction_of_copy"] = statistics.median(fractions) if fractions else None
    summary["cases_at_60pct_of_copy"] = sum(f >= 0.6 for f in fractions)
    roofline = [(f, r.case.name) for r in timed
                if (f := r.fraction_of_roofline(copy_gbps)) is not None]
    if roofline:
        worst = min(roofline)
        summary["cases_at_60pct_of_roofline"] = sum(f >= 0.6 for f, _ in roofline)
        summary["min_fraction_of_roofline"] = {"value": worst[0], "case": worst[1]}
    tc = summary["geomean_speedup"].get("torch_compile")
    tc_min = summary["min_speedup"].get("torch_compile", {}).get("value")
    med = summary["median_fraction_of_copy"]
    summary["goals"] = {    # issue 5's bar for this 2-core machine
        "geomean_vs_torch_compile_at_least_2.5": None if tc is None else tc >= 2.5,
        "no_case_below_1.0_vs_torch_compile": None if tc_min is None else tc_min >= 1.0,
        "median_fraction_of_copy_at_least_0.5": None if med is None else med >= 0.5,
    }
    return summary


def _fmt(v, spec: str, missing: str = "-") -> str:
    return missing if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _rows(results: list[Result], copy_gbps: float, baselines: list[str]) -> tuple[list, list]:
    header = ["case", "dtype", "shape", "MB", "pf ms", "pf GB/s", "% copy", "arith ms",
              "% roofline"]
    header += [f"{LABEL[b]} ms" for b in baselines]
    header += [f"vs {LABEL[b]}" for b in baselines]
    header += ["pf max err", "ok"]
    rows = []
    for r in results:
        shape = "x".join(map(str, r.shapes[0])) if r.shapes else "-"
        ms = r.ms or {}
        pf_gbps = r.gbps("pf")
        row = [r.case.name, "f32" if r.case.dtype == "float32" else "bf16", shape,
               _fmt(r.min_bytes / 1e6 if r.min_bytes else None, ".1f"),
               _fmt(ms.get("pf"), ".3f"), _fmt(pf_gbps, ".1f"),
               _fmt(100 * pf_gbps / copy_gbps if pf_gbps and copy_gbps else None, ".0f"),
               _fmt(r.arithmetic_s * 1e3 if r.arithmetic_s is not None else None, ".3f")]
        roofline = r.fraction_of_roofline(copy_gbps)
        row.append(_fmt(100 * roofline if roofline is not None else None, ".0f"))
        row += [_fmt(ms.get(b), ".3f") for b in baselines]
        row += [_fmt(r.speedup(b), ".2f") + ("x" if r.speedup(b) else "") for b in baselines]
        err = (r.errors or {}).get("pf")
        row += [_fmt(err[0] if err else None, ".1e"),
                "OK" if r.correct else "FAIL"]
        rows.append(row)
    return header, rows


def summary_lines(summary: dict) -> list[str]:
    lines = []
    names = {"torch_compile": "torch.compile (Inductor)", "torch": "torch eager",
             "numpy": "numpy"}
    for b in ("torch_compile", "torch", "numpy"):
        g = summary["geomean_speedup"].get(b)
        if g is None:
            continue
        worst = summary["min_speedup"][b]
        target = "  (goal >= 2.5x; min >= 1.0x)" if b == "torch_compile" else ""
        lines.append(f"speedup vs {names[b]}: geometric mean {g:.2f}x, minimum "
                     f"{worst['value']:.2f}x ({worst['case']}){target}")
    med = summary.get("median_fraction_of_copy")
    if med is not None:
        lines.append(f"median fraction of the measured copy bandwidth: {100 * med:.0f}%  "
                     f"(goal >= 50%); cases at >= 60% of it: "
                     f"{summary['cases_at_60pct_of_copy']} of {summary['timed']}")
    worst = summary.get("min_fraction_of_roofline")
    if worst is not None:
        lines.append(f"cases at >= 60% of their roofline (bytes at the copy bandwidth or "
                     f"arithmetic at pf_math's measured speed, whichever is longer): "
                     f"{summary['cases_at_60pct_of_roofline']} of {summary['timed']}; "
                     f"lowest {100 * worst['value']:.0f}% ({worst['case']})")
    lines.append(f"correct: {summary['correct']} of {summary['cases']} cases")
    return lines


def to_json(results: list[Result], machine: dict, copy: dict, summary: dict,
            meta: dict) -> dict:
    cases = []
    for r in results:
        pf_gbps = r.gbps("pf")
        cases.append({
            "name": r.case.name, "what": r.case.what, "dtype": r.case.dtype,
            "shapes": r.shapes,
            "min_global_bytes": r.min_bytes, "global_bytes": r.global_bytes,
            "pf_first_call_s": None if math.isnan(r.pf_first_call_s) else r.pf_first_call_s,
            "torch_compile_first_call_s": r.compile_first_call_s,
            "ms": r.ms or {},
            "gbps": {k: r.gbps(k) for k in (r.ms or {})},
            "fraction_of_copy": pf_gbps / copy["gbps"] if pf_gbps and copy["gbps"] else None,
            "arithmetic_s": r.arithmetic_s,
            "fraction_of_roofline": r.fraction_of_roofline(copy["gbps"]),
            "speedup": {b: r.speedup(b) for b in BASELINES if r.speedup(b) is not None},
            "error": {k: {"max_abs": v[0], "max_rel": v[1]} for k, v in
                      (r.errors or {}).items()},
            "tolerance": _tolerance(r.case),
            "correct": r.correct,
            "failure": r.failure or None,
            "notes": r.notes or [],
            "samples_ms": r.samples_ms or {},
        })
    return {"suite": "powerfusion bench", **meta, "machine": machine,
            "copy_bandwidth": copy, "summary": summary, "cases": cases}


def to_markdown(results: list[Result], machine: dict, copy: dict, summary: dict,
                meta: dict, baselines: list[str]) -> str:
    header, rows = _rows(results, copy["gbps"], baselines)
    machine_line = (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['threads']} threads; "
        f"numpy {machine['numpy']}, torch {machine.get('torch')}, {machine.get('gcc')}; "
        f"commit {machine.get('commit')}; load average at start "
        f"{_fmt_load(machine.get('load_average_start'))}, at end "
        f"{_fmt_load(machine.get('load_average_end'))}.")
    method = (
        f"Copy bandwidth (probe's DRAM copy, read + write, same run): {copy['gbps']:.1f} "
        f"GB/s, the median of {len(copy.get('samples_gbps', [0]))} samples taken between "
        f"the cases (highest {copy.get('max_gbps', copy['gbps']):.1f} GB/s; numpy's "
        f"one-thread copy: {copy.get('numpy_gbps', 0):.1f} GB/s). Times are "
        f"medians of {meta['repeats']} interleaved samples; GB/s counts each input read "
        "once and each output written once; `arith ms` is the plan's arithmetic alone on "
        "every core (each transcendental at the speed its pf_math.h function was measured "
        "at here, one core, L2-resident; the rest by instruction count: "
        "search/compute.py); `% roofline` is the larger of the bytes at the copy "
        "bandwidth and that arithmetic, over PowerFusion's time; `vs X` is X's time "
        "over PowerFusion's.")
    quick = " (--quick: small shapes, a smoke test, not a measurement)" if meta["quick"] else ""
    out = [f"# PowerFusion benchmark suite, CPU, {meta['date']}{quick}", "", machine_line, "",
           method, ""]
    out += ["- " + line for line in summary_lines(summary)]
    out += ["", "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if k < 3 else "---:" for k in range(len(header))) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    out += ["", "Cases:", ""]
    out += [f"- `{r.case.name}`: {r.case.what}" + (f" — **{r.failure}**" if r.failure else "")
            for r in results]
    return "\n".join(out) + "\n"


def _fmt_load(load) -> str:
    return "-" if not load else " ".join(f"{v:.2f}" for v in load)


def plot(results: list[Result], path: Path, baselines: list[str], title: str) -> str | None:
    """A bar chart of the speedups; None when written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no PNG"
    timed = [r for r in results if r.ms]
    if not timed or not baselines:
        return "nothing to plot"
    fig, ax = plt.subplots(figsize=(max(8.0, 0.6 * len(timed) + 2), 4.8))
    width = 0.8 / len(baselines)
    xs = np.arange(len(timed))
    for k, b in enumerate(baselines):
        vals = [r.speedup(b) or 0.0 for r in timed]
        ax.bar(xs + (k - (len(baselines) - 1) / 2) * width, vals, width, label=f"vs {LABEL[b]}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([r.case.name for r in timed], rotation=45, ha="right")
    ax.set_ylabel("speedup of PowerFusion (their time / ours)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- the command -----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="small shapes and few repeats (a smoke test)")
    parser.add_argument("--cases", default="",
                        help="comma-separated case names or patterns (default: all): "
                             + ", ".join(CASES))
    parser.add_argument("--repeats", type=int, default=0,
                        help="interleaved samples per candidate (default 10, 3 with --quick)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for PowerFusion (OMP_NUM_THREADS) and torch "
                             "(default: all cores)")
    parser.add_argument("--no-torch-compile", action="store_true",
                        help="leave torch.compile out (its first calls take long)")
    parser.add_argument("--no-torch", action="store_true", help="leave torch out entirely")
    parser.add_argument("--out", default=None,
                        help=f"directory for the results (default {RESULTS_DIR})")


def run(args) -> int:
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)    # read when OpenMP starts
    cases = select(args.cases)
    try:
        import ml_dtypes  # noqa: F401 - numpy's bfloat16
    except ImportError:
        skipped = [c.name for c in cases if c.dtype == "bfloat16"]
        if skipped:
            print(f"ml_dtypes is not installed (pip install ml_dtypes): skipping "
                  f"{', '.join(skipped)}", file=sys.stderr)
        cases = [c for c in cases if c.dtype != "bfloat16"]
    quick = args.quick
    repeats = args.repeats or (3 if quick else 10)
    min_sample_s = 2e-3 if quick else 1e-2

    torch_fns, use_compile = None, False
    if not args.no_torch:
        try:
            import torch

            if args.threads:
                torch.set_num_threads(args.threads)
            torch_fns = _torch_functions()
            use_compile = not args.no_torch_compile
        except ImportError:
            print("torch is not installed (pip install torch==2.13.0): numpy baseline only",
                  file=sys.stderr)
    baselines = ["numpy"] + (["torch"] if torch_fns else []) + \
                (["torch_compile"] if use_compile else [])

    from powerfusion.runtime import probe

    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or \
        (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    machine = machine_info(threads)
    date = time.strftime("%Y-%m-%d")
    print(f"PowerFusion bench: {len(cases)} cases{' (quick shapes)' if quick else ''} on "
          f"{machine['cpu']}, {machine['cores']} cores; numpy {machine['numpy']}, torch "
          f"{machine.get('torch') or '-'}; baselines: "
          f"{', '.join(LABEL[b] for b in baselines)}", flush=True)
    copy_start = probe.copy_bandwidth()
    print(f"copy bandwidth (probe, {probe.DRAM_BYTES >> 20} MB read + write): "
          f"{copy_start / 1e9:.1f} GB/s\n", flush=True)
    copies = [copy_start]       # sampled between cases too: the machine's noise comes and goes
    math_s = measured_math()    # the arithmetic side of each case's roofline

    results = []
    started = time.perf_counter()
    for case in cases:
        shapes = " ".join("x".join(map(str, a.shape)) for a in case.inputs(True)) \
            if quick else ""
        print(f"{case.name:<18} {case.what}" + (f" (quick: {shapes})" if quick else ""),
              flush=True)
        res = run_case(case, quick=quick, repeats=repeats, torch_fns=torch_fns,
                       use_compile=use_compile, min_sample_s=min_sample_s,
                       math_s=math_s)
        results.append(res)
        line = f"{'':<18} pf first call {res.pf_first_call_s:.2f} s"
        if res.compile_first_call_s is not None:
            line += f", torch.compile first call {res.compile_first_call_s:.1f} s"
        if res.ms:
            line += "; ms " + ", ".join(f"{LABEL[k]} {v:.3f}" for k, v in res.ms.items())
        print(line + (f"  FAIL {res.failure}" if res.failure else ""), flush=True)
        for note in res.notes or []:
            print(f"{'':<18} note: {note}", flush=True)
        gc.collect()
        if not quick:
            copies.append(probe.copy_bandwidth(trials=3))

    copy_end = probe.copy_bandwidth()
    copies.append(copy_end)
    copy = {"gbps": statistics.median(copies) / 1e9, "start_gbps": copy_start / 1e9,
            "end_gbps": copy_end / 1e9, "max_gbps": max(copies) / 1e9,
            "samples_gbps": [c / 1e9 for c in copies],
            "numpy_gbps": probe.numpy_copy_bandwidth() / 1e9, "bytes": probe.DRAM_BYTES,
            "how": "probe.copy_bandwidth(): memcpy on every thread, read + write bytes / "
                   "time, best of a few trials; sampled at the start, after every case and "
                   "at the end; the median of those samples, as every time here is a median"}
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    summary = summarise(results, copy["gbps"])
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": quick, "repeats": repeats,
            "baselines": baselines, "seconds": time.perf_counter() - started,
            "math_s_per_element": {op.name.lower(): v for op, v in math_s.items()}}

    header, rows = _rows(results, copy["gbps"], baselines)
    from powerfusion.benchmarking import format_table

    print(f"\nmedian of {repeats} interleaved samples; GB/s: bytes that must move / time; "
          f"% copy: of {copy['gbps']:.1f} GB/s; vs X: X's time / PowerFusion's")
    print(format_table(header, rows, "lll" + "r" * (len(header) - 4) + "l"))
    print()
    for line in summary_lines(summary):
        print(line)

    out_dir = Path(args.out) if args.out else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"cpu-{date}" + ("-quick" if quick else "")
    data = to_json(results, machine, copy, summary, meta)
    (out_dir / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(to_markdown(results, machine, copy, summary, meta,
                                                    baselines))
    why = plot(results, out_dir / f"{stem}.png", baselines,
               f"PowerFusion vs baselines, {machine['cpu']} ({machine['cores']} cores), "
               f"{date}")
    written = [f"{stem}.json", f"{stem}.md"] + ([] if why else [f"{stem}.png"])
    print(f"\nwrote {', '.join(str(out_dir / w) for w in written)}"
          + (f"\n({why})" if why else ""))
    failed = [r.case.name for r in results if not r.correct]
    if failed:
        print(f"FAIL: {len(failed)} of {len(results)} cases ({', '.join(failed)})")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
