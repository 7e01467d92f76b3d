"""The torch.compile backend against PyTorch's own OpInfo database.

Every entry of `torch.testing._internal.common_methods_invocations.op_db` that
supports the dtype on the CPU gets its sample inputs run through
`torch.compile(fn, backend="powerfusion", dynamic=False)` and compared with eager
PyTorch, in float32 and bfloat16. A sample is *claimed* when the aten graph the
backend receives holds at least one op of `torch_backend.HANDLERS`; for claimed
samples a wrong result is a defect, and for every sample an exception that eager
does not raise is a defect (an op the backend cannot do must fall back to eager).

Outcomes of one sample:

- ok: PowerFusion compiled at least one region, every region ran, results match
  (on two calls: the first runs each region's general path, the second the lean one);
- fell_back: a region gave up (tracing, compiling or running it failed) and ran
  eagerly; results match (they are eager's);
- eager_only: no region was formed (no claimed op, or every claimed op declined
  by its predicate, e.g. a rounding division). A cheap screen (make_fx with the
  backend's decompositions) rules out samples whose graph holds no claimed op
  before anything is compiled: those are eager_only too;
- wrong / raised: the defects. Each is checked again with a reference backend that
  is the same AOTAutograd pipeline with the same decompositions but no PowerFusion;
  where that reference is wrong or raises too, the cause is PyTorch's (counted as
  wrong_torch / raised_torch, not ours);
- skipped: eager raises on the sample, or eager itself is not deterministic.

Results match when, element by element, the compiled value is close to eager's
(torch.testing's default tolerances for the dtype) or no further from a float64
reference than eager is, give or take that tolerance (as Inductor's OpInfo tests
compare low-precision results against a reference computed in higher precision).

CI runs a capped sweep: `POWERFUSION_OPINFO_SAMPLES` samples per op and dtype
(default 1: sample 0 in float32, sample 1 in bfloat16), about three minutes on two
cores. The recorded run (benchmarks/results/opinfo-cpu-2026-12-04.json: 25 samples
per op and dtype, about half an hour), or every sample (--all, hours):

    python -m tests.test_opinfo --samples 25 --out benchmarks/results/opinfo-cpu-DATE.json

Options: --samples N (per op and dtype), --ops NAME,NAME, --dtypes float32,bfloat16.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import operator
import os
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")        # torch.testing._internal needs it

import torch.utils._pytree as pytree  # noqa: E402

from powerfusion.frontend import torch_backend as tb  # noqa: E402

# -- known defects of the core compiler (pf.jit reproduces them without torch) -------------
# (op full_name, dtype name) -> the core defect. The sweep still runs these samples; a
# wrong result or raise there is reported as "known", not failed. Empty it as core fixes land.
KNOWN_CORE_FAILURES: dict[tuple[str, str], str] = {
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# (rtol, atol): torch.testing's defaults, but for bfloat16, which PowerFusion computes
# in float32 without rounding each intermediate as eager does: Inductor's atol, 1e-2
# (a difference of nearly-equal values keeps only the rounding noise of its operands)
_TOL = {torch.float16: (1e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-2),
        torch.float32: (1.3e-6, 1e-5), torch.float64: (1e-7, 1e-7)}
# (op, dtype) -> (rtol, atol) where the defaults are too tight, and why
_TOL_OVERRIDES = {
    # (1 - t) x - (1 + (pw - 1) t) logsigmoid(x), times weight: a difference of two
    # values up to ~9 whose bfloat16 roundings eager keeps (half an ulp at 8 is 0.03)
    # and PowerFusion does not; PowerFusion's is the closer to float32 arithmetic
    ("nn.functional.binary_cross_entropy_with_logits", "bfloat16"): (1.6e-2, 0.3),
}
_CI_SAMPLES = int(os.environ.get("POWERFUSION_OPINFO_SAMPLES", "1"))


@dataclass
class Record:
    op: str
    dtype: str
    index: int
    outcome: str
    claimed: bool = False
    detail: str = ""
    known: str = ""
    seconds: float = 0.0
    warnings: list = field(default_factory=list)


# -- one sample ------------------------------------------------------------------------------
class _Recorder:
    """Collects the aten ops of the graphs the backend receives, its warnings, and why
    regions gave up."""

    def __init__(self):
        self.ops: set = set()
        self.messages: list[str] = []
        self.gave_up: list[str] = []


@contextlib.contextmanager
def _recording():
    rec = _Recorder()
    original = tb.compile_aten_graph

    def wrapped(gm, example_inputs, kind="forward"):
        rec.ops.update(n.target for n in gm.graph.nodes
                       if n.op == "call_function" and n.target is not operator.getitem)
        return original(gm, example_inputs, kind=kind)

    class Handler(logging.Handler):
        def emit(self, record):
            rec.messages.append(record.getMessage())

    give_up = tb.Region._give_up

    def giving_up(region, op, reason):
        rec.gave_up.append(f"{op}: {reason}")
        return give_up(region, op, reason)

    logger = logging.getLogger("powerfusion")
    handler, propagate = Handler(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    tb.compile_aten_graph = wrapped
    tb.Region._give_up = giving_up
    try:
        yield rec
    finally:
        tb.compile_aten_graph = original
        tb.Region._give_up = give_up
        logger.removeHandler(handler)
        logger.propagate = propagate


def _reference_backend(gm, example_inputs, **kwargs):
    """The backend's pipeline (AOTAutograd, the same decompositions) without PowerFusion."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def plain(g, _inputs):
        return make_boxed_func(g.forward)

    return aot_autograd(fw_compiler=plain, bw_compiler=plain, inference_compiler=plain,
                        decompositions=tb.decompositions())(gm, example_inputs, **kwargs)


def _callable(op, sample):
    """fn(*tensors) applying op to the sample, and the sample's tensors (cloned)."""
    leaves, spec = pytree.tree_flatten((sample.input, sample.args, sample.kwargs))
    slots = [k for k, x in enumerate(leaves) if isinstance(x, torch.Tensor)]

    def fn(*tensors):
        values = list(leaves)
        for k, t in zip(slots, tensors):
            values[k] = t
        x, args, kwargs = pytree.tree_unflatten(values, spec)
        return op(x, *args, **kwargs)

    def tensors():
        return [leaves[k].detach().clone() for k in slots]

    return fn, tensors


def _run(fn, args, backend=None):
    torch.manual_seed(0)
    with torch.no_grad():
        if backend is None:
            return fn(*args)
        torch._dynamo.reset()
        return torch.compile(fn, backend=backend, dynamic=False)(*args)


def _run_twice(fn, tensors, backend):
    """fn compiled by backend, called on two fresh copies of the sample: the first call
    compiles and runs each region's general path, the second its lean path (the
    generated launcher, memory from the graph's pool) - what a model runs every step."""
    torch.manual_seed(0)
    with torch.no_grad():
        torch._dynamo.reset()
        compiled = torch.compile(fn, backend=backend, dynamic=False)
        first = compiled(*tensors())
        torch.manual_seed(0)
        return first, compiled(*tensors())


def _leaves(out):
    return pytree.tree_flatten(out)[0]


def _mismatch(got, expected, reference=None, tol=None) -> str | None:
    """Why got differs from expected (eager's), or None when they agree."""
    got, expected = _leaves(got), _leaves(expected)
    ref = _leaves(reference) if reference is not None else [None] * len(expected)
    if len(got) != len(expected):
        return f"{len(got)} results, eager gives {len(expected)}"
    if len(ref) != len(expected):
        ref = [None] * len(expected)
    for k, (g, e, r) in enumerate(zip(got, expected, ref)):
        if not isinstance(e, torch.Tensor):
            if isinstance(g, torch.Tensor) or not (g == e or (g != g and e != e)):
                return f"result {k}: {g!r}, eager {e!r}"
            continue
        if not isinstance(g, torch.Tensor):
            return f"result {k}: {type(g).__name__}, eager a tensor"
        if g.shape != e.shape or g.dtype != e.dtype:
            return f"result {k}: {g.dtype}{list(g.shape)}, eager {e.dtype}{list(e.shape)}"
        if e.is_complex():
            g, e = torch.view_as_real(g), torch.view_as_real(e)
            r = torch.view_as_real(r) if isinstance(r, torch.Tensor) and r.is_complex() \
                else None
        if not (e.is_floating_point()):
            if not torch.equal(g, e):
                bad = (g != e).nonzero()[0].tolist()
                return f"result {k} at {bad}: {g[tuple(bad)].item()}, eager " \
                       f"{e[tuple(bad)].item()}"
            continue
        rtol, atol = tol or _TOL.get(e.dtype, (1.3e-6, 1e-5))
        g64, e64 = g.double(), e.double()
        close = torch.isclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True)
        if isinstance(r, torch.Tensor) and r.shape == e.shape:
            r64 = r.double()
            slack = (e64 - r64).abs() + atol + rtol * r64.abs()
            close |= (g64 - r64).abs() <= slack
            close |= torch.isnan(g64) & torch.isnan(r64)
        if not bool(close.all()):
            bad = (~close).nonzero()[0].tolist()
            at = tuple(bad)
            extra = f", float64 {r[at].item()!r}" if isinstance(r, torch.Tensor) and \
                r.shape == e.shape else ""
            return (f"result {k} at {bad}: {g[at].item()!r}, eager {e[at].item()!r}{extra} "
                    f"({int((~close).sum())} of {e.numel()} elements differ)")
    return None


def _float64_reference(fn, args):
    """fn on the float arguments widened to float64 (None when that fails)."""
    wide = [a.double() if a.is_floating_point() else a for a in args]
    try:
        return _run(fn, wide)
    except Exception:                    # noqa: BLE001 - the reference is optional
        return None


def _wrong(fn, tensors, got, expected, tol=None) -> str | None:
    """Why got is wrong: unlike eager and further from float64 than eager is."""
    if _mismatch(got, expected, tol=tol) is None:
        return None
    return _mismatch(got, expected, _float64_reference(fn, tensors()), tol=tol)


def _identical(a, b) -> bool:
    """Whether two eager runs agree bit for bit (NaNs in the same places)."""
    la, lb = _leaves(a), _leaves(b)
    if len(la) != len(lb):
        return False
    for x, y in zip(la, lb):
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            return False
        if not isinstance(x, torch.Tensor):
            if not (x == y or (x != x and y != y)):
                return False
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.is_complex():
            x, y = torch.view_as_real(x), torch.view_as_real(y)
        if x.is_floating_point():
            if not torch.equal(x.isnan(), y.isnan()):
                return False
            x, y = x.nan_to_num(), y.nan_to_num()
        if not torch.equal(x, y):
            return False
    return True


def _claims(fn, args) -> bool:
    """Whether the aten graph of fn (PyTorch's decompositions, as the backend gets
    it) holds an op PowerFusion handles; True when that can't be told. A cheap
    screen: samples it rules out are never compiled, PowerFusion would not see them."""
    from torch.fx.experimental.proxy_tensor import make_fx

    try:
        with torch.no_grad():
            gm = make_fx(fn, decomposition_table=tb.decompositions(),
                         tracing_mode="fake")(*args)
    except Exception:                    # noqa: BLE001 - let the real compile tell
        return True
    return any(n.target in tb.HANDLERS for n in gm.graph.nodes if n.op == "call_function")


# ops whose results are undefined memory: no two runs need agree
_UNDEFINED = {"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided",
              "empty_permuted"}


def run_sample(op, sample, dtype_name: str, index: int) -> Record:
    fn, tensors = _callable(op, sample)
    rec = Record(op.full_name, dtype_name, index, "skipped")
    start = time.perf_counter()
    try:
        return _run_sample(op, fn, tensors, rec)
    finally:
        rec.seconds = round(time.perf_counter() - start, 3)


def _run_sample(op, fn, tensors, rec: Record) -> Record:
    if op.name in _UNDEFINED:
        rec.detail = "the results are undefined (uninitialised memory)"
        return rec
    try:
        expected = _run(fn, tensors())
    except Exception as e:               # noqa: BLE001 - eager rejects the sample
        rec.detail = f"eager raises {type(e).__name__}"
        return rec
    try:
        if not _identical(_run(fn, tensors()), expected):
            rec.detail = "eager is not deterministic"
            return rec
    except Exception as e:               # noqa: BLE001
        rec.detail = f"eager raises {type(e).__name__} the second time"
        return rec
    if not _claims(fn, tensors()):
        rec.outcome = "eager_only"
        return rec

    tb.reset_compile_stats()
    with _recording() as seen:
        try:
            (got, again), error = _run_twice(fn, tensors, "powerfusion"), None
        except Exception as e:           # noqa: BLE001 - a defect, classified below
            got, error = None, e
    torch._dynamo.reset()
    stats = tb.compile_stats()
    rec.claimed = any(t in tb.HANDLERS for t in seen.ops)
    rec.warnings = list(dict.fromkeys(seen.messages))
    if error is not None:
        rec.outcome, rec.detail = "raised", f"{type(error).__name__}: {error}"[:500]
        try:
            _run(fn, tensors(), backend=_reference_backend)
        except Exception:                # noqa: BLE001 - PyTorch's own pipeline raises
            rec.outcome = "raised_torch"
    else:
        tol = _TOL_OVERRIDES.get((rec.op, rec.dtype))
        why = _wrong(fn, tensors, got, expected, tol)
        if why is None and (why := _wrong(fn, tensors, again, expected, tol)) is not None:
            why, got = f"on the second call: {why}", again
        if why is not None:
            rec.outcome, rec.detail = "wrong", why
            # PyTorch's decomposition itself differs from eager, and PowerFusion
            # computes what the decomposition says
            try:
                reference = _run(fn, tensors(), backend=_reference_backend)
                if _wrong(fn, tensors, reference, expected) is not None and \
                        _mismatch(got, reference) is None:
                    rec.outcome = "wrong_torch"
            except Exception:            # noqa: BLE001 - then it stays wrong
                pass
        elif stats["failed_regions"]:
            rec.outcome = "fell_back"
            rec.detail = "; ".join(dict.fromkeys(seen.gave_up))[:500]
        elif stats["compiles"]:
            rec.outcome = "ok"
        else:
            rec.outcome = "eager_only"
    if rec.outcome in ("wrong", "raised"):
        rec.known = KNOWN_CORE_FAILURES.get((rec.op, rec.dtype), "")
    return rec


# -- the sweep -------------------------------------------------------------------------------
def _op_db():
    from torch.testing._internal.common_methods_invocations import op_db
    return op_db


def sweep(ops=None, dtypes=("float32", "bfloat16"), samples: int | None = 1,
          progress=None) -> list[Record]:
    """Records of the op_db entries named in ops (all by default), each dtype's
    samples: all of them when samples is None, else `samples` of them, starting at
    the dtype's position in dtypes (float32 at sample 0, bfloat16 at sample 1), so
    that a capped sweep sees more distinct samples."""
    quiet = logging.getLogger("torch._dynamo")    # graph breaks of ops it can't trace
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return _sweep(ops, dtypes, samples, progress)
    finally:
        quiet.setLevel(level)


def _sweep(ops, dtypes, samples, progress) -> list[Record]:
    records = []
    wanted = set(ops) if ops else None
    for op in _op_db():
        if wanted is not None and op.full_name not in wanted and op.name not in wanted:
            continue
        for position, dtype_name in enumerate(dtypes):
            dtype = DTYPES[dtype_name]
            if dtype not in op.supported_dtypes("cpu"):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    gen = op.sample_inputs("cpu", dtype, requires_grad=False)
                    if samples is None:
                        batch = list(enumerate(gen))
                    else:
                        batch = list(enumerate(itertools.islice(gen, position + samples)))
                        batch = batch[-samples:]
            except Exception as e:       # noqa: BLE001 - the database's own problem
                records.append(Record(op.full_name, dtype_name, -1, "skipped",
                                      detail=f"sample_inputs raises {type(e).__name__}"))
                continue
            for k, sample in batch:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = run_sample(op, sample, dtype_name, k)
                records.append(r)
                if progress is not None:
                    progress(r)
    return records


def summarize(records: list[Record]) -> dict:
    """Counts over the records: ops (claimed: some sample's graph holds an op
    PowerFusion handles; compiled: some sample ran PowerFusion kernels), samples by
    dtype and outcome, and the defects, fallbacks and PyTorch-side failures listed."""
    by_dtype: dict = defaultdict(Counter)
    for r in records:
        if r.index < 0:
            continue
        c = by_dtype[r.dtype]
        c["samples"] += 1
        c[r.outcome] += 1
        c["claimed"] += r.claimed
        c["known"] += bool(r.known)
        c["seconds"] += r.seconds
    for c in by_dtype.values():
        c["seconds"] = round(c["seconds"], 1)

    def total(key):
        return sum(c[key] for c in by_dtype.values())

    def listed(*outcomes):
        return [asdict(r) for r in records if r.outcome in outcomes]

    return {
        "ops_in_database": len({r.op for r in records}),
        "ops_claimed": len({r.op for r in records if r.claimed}),
        "ops_compiled": len({r.op for r in records if r.outcome in ("ok", "wrong")}),
        "samples": total("samples"),
        "samples_claimed": total("claimed"),
        "samples_compiled": total("ok") + total("wrong"),
        "wrong": total("wrong"),
        "raised": total("raised"),
        "fell_back": total("fell_back"),
        "known_core_failures": total("known"),
        "by_dtype": {d: dict(sorted(c.items())) for d, c in sorted(by_dtype.items())},
        "defects": listed("wrong", "raised"),
        "fell_back_samples": listed("fell_back"),
        "torch_side": listed("wrong_torch", "raised_torch"),
        "sample_inputs_failed": [f"{r.op} {r.dtype}" for r in records if r.index < 0],
    }


# -- CI --------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh():
    torch._dynamo.reset()
    tb.reset_compile_stats()
    yield
    torch._dynamo.reset()


def test_opinfo_sweep_matches_eager():
    """No wrong result and no raised error over the database (capped samples)."""
    start = time.perf_counter()
    summary = summarize(sweep(samples=_CI_SAMPLES))
    seconds = time.perf_counter() - start
    print(f"\nOpInfo sweep: {summary['ops_compiled']} ops compiled "
          f"({summary['ops_claimed']} claimed), {summary['samples']} samples "
          f"({summary['samples_compiled']} compiled), {summary['wrong']} wrong, "
          f"{summary['raised']} raised, {summary['fell_back']} fell back, {seconds:.0f} s")
    failing = {(d["op"], d["dtype"]) for d in summary["defects"]}
    stale = sorted(set(KNOWN_CORE_FAILURES) - failing)
    if stale:
        print(f"KNOWN_CORE_FAILURES entries that passed this run: {stale}")
    unexpected = [d for d in summary["defects"] if not d["known"]]
    assert not unexpected, "\n".join(
        f"{d['op']} {d['dtype']} sample {d['index']}: {d['outcome']}: {d['detail']}"
        for d in unexpected)
    assert summary["ops_compiled"] > 100


# -- python -m tests.test_opinfo -----------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--all", action="store_true", help="every sample of every op")
    p.add_argument("--samples", type=int, default=_CI_SAMPLES,
                   help="samples per op and dtype (ignored with --all)")
    p.add_argument("--ops", default="", help="comma-separated OpInfo names")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--out", default="", help="write the summary as JSON here")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.getLogger("torch").setLevel(logging.ERROR)

    def progress(r):
        if a.verbose or r.outcome in ("wrong", "raised"):
            print(f"{r.outcome:12} {r.op} {r.dtype} #{r.index} {r.known and '(known) '}"
                  f"{r.detail[:300]}", flush=True)

    start = time.perf_counter()
    records = sweep(ops=[s for s in a.ops.split(",") if s] or None,
                    dtypes=tuple(a.dtypes.split(",")),
                    samples=None if a.all else a.samples, progress=progress)
    summary = summarize(records)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["samples_per_op_and_dtype"] = "all" if a.all else a.samples
    summary["torch"] = torch.__version__
    counts = {k: v for k, v in summary.items() if not isinstance(v, list)}
    print(json.dumps(counts, indent=1))
    if a.out:
        for key in ("fell_back_samples", "torch_side"):    # the reason is in detail
            for r in summary[key]:
                del r["warnings"]
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
    return 1 if any(not d["known"] for d in summary["defects"]) else 0


if __name__ == "__main__":
    sys.exit(main())
