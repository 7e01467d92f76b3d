"""Whole models on the CPU: eager PyTorch, the default torch.compile (Inductor) and
torch.compile(backend="powerfusion"), inference and a training step.

Models are built from configs with random weights (no downloads): BERT-base, GPT-2
and ViT-base sizes with fewer layers, a small LLaMA, and a UNet ResBlock written in
torch (group norm, SiLU, 3x3 convolutions, residual). Inference runs under
torch.no_grad at each batch size; a training step is forward + backward of the mean
of the output (no optimizer; dropout off, so results compare). Eager and each backend
run in their own process (a backend's memory changes another's page faults in a shared
one: `run_case`) and are timed interleaved (one sample of each in turn); figures are
medians, ratios are against the same run's eager and Inductor, and the load average
is recorded beside them.

The breakdown (`pf.advise.library_time`): a step's time inside library calls (matmul,
convolution, attention, embedding: ATen calls every backend makes), each call timed in
place by a profile hook between its own call and return events, and the rest of a plain
step timed beside each hooked one, which is what a backend controls (its kernels and the
glue between them). torch.profiler is not used for it: its per-event cost lands inside
the library calls' spans too (an mm read 40% long under it). Eager's backward runs its
library calls from C++, out of the hook's sight: its breakdown is not reported.

Each ratio comes with its noise band: the 5th and 95th percentiles of the same ratio of
medians over bootstrap resamples of the run's rounds (one round: one sample of each
backend, interleaved). The band does not cover where a process landed: two processes
of one backend differ by ~2% on a shared VM, for the whole of their lives. With
`--processes N` each backend (eager aside) runs in N processes, a round's step is the
mean of theirs, and each extra process's A/A ratio against the first is printed.

    python -m benchmarks.e2e_torch                        # every model, batch 1 and 8, training
    python -m benchmarks.e2e_torch --models bert vit --batch 1 --no-training
    python -m benchmarks.e2e_torch --processes 2 --out benchmarks/results

Prints a table and writes e2e-torch-cpu-DATE.json and .md into --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

def machine_info() -> dict:
    import torch

    from powerfusion.runtime.probe import cpu_model

    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


class ResBlock:
    """A UNet ResBlock as diffusion models write it (GroupNorm 32, SiLU, 3x3 conv)."""

    @staticmethod
    def build(channels: int):
        import torch
        from torch import nn

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.norm1 = nn.GroupNorm(32, channels)
                self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
                self.norm2 = nn.GroupNorm(32, channels)
                self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

            def forward(self, x):
                h = self.conv1(torch.nn.functional.silu(self.norm1(x)))
                h = self.conv2(torch.nn.functional.silu(self.norm2(h)))
                return x + h

        return Block()


def build_model(name: str, layers: int):
    """(model, make_inputs(batch) -> kwargs, description)."""
    import torch
    import transformers

    attn = {"attn_implementation": "eager"}
    if name == "bert":
        m = transformers.BertModel(transformers.BertConfig(
            hidden_size=768, num_attention_heads=12, intermediate_size=3072,
            num_hidden_layers=layers, **attn))
        return m, lambda b, seq=128: {"input_ids": torch.randint(0, 30522, (b, seq))}, \
            f"BERT-base, {layers} layers, seq 128"
    if name == "gpt2":
        m = transformers.GPT2Model(transformers.GPT2Config(
            n_embd=768, n_head=12, n_layer=layers, use_cache=False, **attn))
        return m, lambda b, seq=128: {"input_ids": torch.randint(0, 50257, (b, seq))}, \
            f"GPT-2, {layers} layers, seq 128"
    if name == "llama":
        m = transformers.LlamaModel(transformers.LlamaConfig(
            hidden_size=512, num_attention_heads=8, num_key_value_heads=4,
            intermediate_size=1408, num_hidden_layers=layers, vocab_size=8000,
            use_cache=False, **attn))
        return m, lambda b, seq=128: {"input_ids": torch.randint(0, 8000, (b, seq))}, \
            f"LLaMA-style d=512, {layers} layers, seq 128"
    if name == "vit":
        m = transformers.ViTModel(transformers.ViTConfig(
            hidden_size=768, num_attention_heads=12, intermediate_size=3072,
            num_hidden_layers=layers, image_size=224, patch_size=16, **attn),
            add_pooling_layer=False)
        return m, lambda b: {"pixel_values": torch.randn(b, 3, 224, 224)}, \
            f"ViT-base/16, {layers} layers, 224x224"
    if name == "resblock":
        m = ResBlock.build(128)
        return m, lambda b: {"x": torch.randn(b, 128, 32, 32)}, \
            "UNet ResBlock, 128 channels, 32x32"
    raise ValueError(f"--models: unknown model {name!r}")


def _first_tensor(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) or hasattr(out, "values"):
        return next(v for v in out.values() if isinstance(v, torch.Tensor))
    return next(v for v in out if isinstance(v, torch.Tensor))


SAMPLE_S = 0.05                       # one sample: the mean of this long a run of steps
WARMUP = 6        # rounds before the timed ones: Inductor's ViT training took ~6 to settle
PROFILE_ROUNDS = 3            # breakdown rounds, each backend in turn (library_time's runs)


def _worker(conn, backend: str, name: str, layers: int, mode: str, batch: int,
            keep_all: bool) -> None:
    """One backend's process for one case: builds the model (seeded: every backend gets
    the same weights and inputs), compiles it, reports its first step, then answers the
    parent's requests ("sample": the mean step of a short run; "profile": the library split) until
    "stop". Its own process: its allocations never change another backend's heap.
    keep_all: malloc keeps freed memory here whatever the backend (the PowerFusion
    backend sets that itself: runtime/host_memory.py)."""
    import torch

    import powerfusion as pf
    from powerfusion.advise import library_time
    from powerfusion.runtime.host_memory import keep_freed_memory, keeps_freed_memory

    if keep_all:
        keep_freed_memory()
    torch.manual_seed(0)
    model, make_inputs, _ = build_model(name, layers)
    torch.manual_seed(batch)
    inputs = make_inputs(batch)
    training = mode == "training"
    model.eval()                      # dropout off in both modes: results comparable
    for p in model.parameters():
        p.requires_grad_(training)
    pf.reset_compile_stats()
    kind = backend_of(backend)         # "inductor#2": a second process of one backend
    compiled = model if kind == "eager" else torch.compile(model, backend=kind)

    def step():
        if training:
            out = _first_tensor(compiled(**inputs))
            out.float().mean().backward()
            return out
        with torch.no_grad():
            return _first_tensor(compiled(**inputs))

    start = time.perf_counter()
    output = step().detach()
    first_s = time.perf_counter() - start
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    conn.send((first_s, output, grads, pf.compile_stats() | {
        "keeps_freed_memory": keeps_freed_memory()}))
    while True:
        request = conn.recv()
        if request == "sample":
            # woken from the pipe, the first step runs cold (threads asleep, caches
            # holding the other processes' data): untimed; then steps for SAMPLE_S
            start = time.perf_counter()
            step()
            runs = max(1, math.ceil(SAMPLE_S / (time.perf_counter() - start)))
            start = time.perf_counter()
            for _ in range(runs):
                step()
            conn.send((time.perf_counter() - start) / runs)
        elif request == "profile":
            conn.send(library_time(step, 4))
        else:
            break


def backend_of(name: str) -> str:
    """The backend a process name runs: "powerfusion#2" is PowerFusion's second."""
    return name.split("#")[0]


def stop_workers(workers: dict) -> None:
    """Ask each (process, connection) to stop; kill what has not after 30 s."""
    for process, conn in workers.values():
        try:
            conn.send("stop")
        except OSError:
            pass
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


def run_case(name: str, layers: int, mode: str, batch: int, backends: list[str],
             repeats: int, warmup: int = WARMUP, keep_all: bool = False) -> dict:
    """Eager and each backend, each in its own process (started one after another, so
    compiles do not overlap), timed interleaved: one step of each in turn.

    One process per backend because a backend's memory changes the others' timings in a
    shared process: glibc maps and trims its heap by what was freed last, so memory one
    backend keeps makes the other's fresh tensors fault (LLaMA training: Inductor at
    20-150 page faults per step beside PowerFusion's regions, 5000 beside pooled matmul
    results, and 25% slower)."""
    import multiprocessing

    from powerfusion.benchmarking import ratio_band

    context = multiprocessing.get_context("spawn")
    names = ["eager", *backends]
    workers, first_s, outputs, grads = {}, {}, {}, {}
    stats = {}
    try:
        for n in names:
            ours, theirs = context.Pipe()
            process = context.Process(target=_worker, daemon=True,
                                      args=(theirs, n, name, layers, mode, batch,
                                            keep_all))
            process.start()
            theirs.close()               # a worker that dies is then an EOFError here
            workers[n] = (process, ours)
            first_s[n], outputs[n], grads[n], stats[n] = ours.recv()

        def ask(n, request):
            workers[n][1].send(request)
            reply = workers[n][1].recv()
            time.sleep(0.005)            # the last one's OpenMP threads stop spinning
            return reply

        samples = {n: [] for n in names}
        for k in range(warmup + repeats):
            for n in names:
                seconds = ask(n, "sample")
                if k >= warmup:
                    samples[n].append(seconds)
        # the library's time and the step's own, from the same moments (plain runs
        # interleaved with profiled ones): the machine's drift would otherwise move one
        # against the other
        split = {n: [] for n in names if n != "eager"}
        for _ in range(PROFILE_ROUNDS):
            for n in split:
                split[n].append(ask(n, "profile"))
    finally:
        stop_workers(workers)
    errors = {n: (o - outputs["eager"]).abs().max().item() for n, o in outputs.items()}
    grad_errors = {}
    if mode == "training":
        grad_errors = {n: max(((a - b).abs().max().item() for a, b in zip(g, grads["eager"])),
                              default=0.0) for n, g in grads.items()}
    # a backend's processes (NAME, NAME#2, ...) pooled: each round's step is the mean of
    # theirs, so one process's placement (~2% on a shared VM) weighs 1/N
    processes = {b: [n for n in names if backend_of(n) == b]
                 for b in dict.fromkeys(map(backend_of, names))}
    rounds = {b: [statistics.fmean(samples[n][r] for n in ns) for r in range(repeats)]
              for b, ns in processes.items()}
    median_ms = {b: 1e3 * statistics.median(s) for b, s in rounds.items()}
    library = {b: 1e3 * statistics.median(lib for n in ns if n in split for _, lib in split[n])
               for b, ns in processes.items() if b != "eager"}
    controlled = {b: 1e3 * statistics.median(max(plain - lib, 0.0) for n in ns if n in split
                                             for plain, lib in split[n])
                  for b, ns in processes.items() if b != "eager"}
    band = {}
    if {"inductor", "powerfusion"} <= set(rounds):
        band["powerfusion_vs_inductor"] = ratio_band(rounds["inductor"],
                                                     rounds["powerfusion"])
    for n in samples:                  # A/A: a second process of one backend against it
        base = backend_of(n)
        if n != base and base in samples:
            band[f"{n}_vs_{base}"] = ratio_band(samples[base], samples[n])
    pf_stats = stats.get("powerfusion", {})
    return {
        "mode": mode, "median_ms": median_ms,
        "process_median_ms": {n: 1e3 * statistics.median(s) for n, s in samples.items()},
        "samples_ms": {n: [1e3 * v for v in s] for n, s in samples.items()},
        "speedup_vs_eager": {n: median_ms["eager"] / v for n, v in median_ms.items()},
        "ratio_band_5_95": band,
        "library_ms": library,
        "controlled_ms": controlled,
        "first_call_s": first_s,
        "max_abs_error_vs_eager": {b: max(errors[n] for n in ns) for b, ns in processes.items()},
        "max_abs_grad_error_vs_eager": {b: max(grad_errors[n] for n in ns)
                                        for b, ns in processes.items()} if grad_errors else {},
        "processes": {b: len(ns) for b, ns in processes.items()},
        "malloc_keeps_freed_memory": {n: st["keeps_freed_memory"] for n, st in stats.items()},
        "powerfusion": {k: pf_stats.get(k, 0) for k in (
            "graphs", "regions", "kernels", "fused_ops", "fallback_ops", "failed_regions",
            "library_ops")} | {"fallback_by_op": pf_stats.get("fallback_by_op", {})},
    }


def _fmt_row(model: str, batch: int, r: dict) -> list[str]:
    m, c = r["median_ms"], r["controlled_ms"]
    pf_vs_ind = m["inductor"] / m["powerfusion"] if "inductor" in m and "powerfusion" in m \
        else float("nan")
    low, high = r["ratio_band_5_95"].get("powerfusion_vs_inductor", (math.nan, math.nan))
    ctl = c["powerfusion"] / c["inductor"] if "inductor" in c and c.get("inductor") else \
        float("nan")
    errs = r["max_abs_error_vs_eager"].get("powerfusion", float("nan"))
    fb = r["powerfusion"]["fallback_ops"]
    return [model, r["mode"], str(batch)] + [f"{m[n]:.2f}" for n in m] + [
        f"{pf_vs_ind:.2f}x", f"{low:.2f}-{high:.2f}", f"{c.get('inductor', float('nan')):.2f}",
        f"{c.get('powerfusion', float('nan')):.2f}", f"{ctl:.2f}", f"{errs:.1e}", str(fb)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["bert", "gpt2", "llama", "vit", "resblock"])
    p.add_argument("--layers", type=int, default=2, help="transformer layers (default 2)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--train-batch", type=int, default=1)
    p.add_argument("--no-training", action="store_true")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--backends", nargs="+", default=["inductor", "powerfusion"],
                   help="backends, each timed in a process of its own; NAME#2 runs a "
                        "second process of NAME (pooled with the first; its A/A against "
                        "the first printed: the process noise)")
    p.add_argument("--processes", type=int, default=1,
                   help="processes per backend (but eager), their steps pooled per round")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="malloc keeps freed memory in every backend's process, not only "
                        "in PowerFusion's (which sets it itself)")
    p.add_argument("--out", type=Path, default=None,
                   help="write e2e-torch-cpu-DATE.json and .md into this folder")
    args = p.parse_args(argv)
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"needs torch and transformers: {e}", file=sys.stderr)
        return 2
    import warnings

    from powerfusion.benchmarking import format_table

    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.manual_seed(0)
    if args.processes < 1:
        p.error("--processes: expected 1 or more")
    backends = [b if k == 1 else f"{b}#{k}" for b in args.backends
                for k in range(1, args.processes + 1)]
    names = ["eager", *dict.fromkeys(map(backend_of, backends))]
    header = ["model", "mode", "batch", *[f"{n} ms" for n in names], "PF vs Inductor",
              "band 5-95",
              "Inductor ctl ms", "PF ctl ms", "PF/Ind ctl", "PF max err", "fallbacks"]
    rows, table = [], []
    load_before = os.getloadavg()
    for name in args.models:
        desc = build_model(name, args.layers)[2]
        cases = [("inference", b) for b in args.batch]
        if not args.no_training:
            cases.append(("training", args.train_batch))
        for mode, batch in cases:
            r = run_case(name, args.layers, mode, batch, backends, args.repeats,
                         keep_all=args.keep_freed_memory)
            r |= {"model": desc, "batch": batch, "load_average": os.getloadavg()}
            rows.append(r)
            table.append(_fmt_row(desc, batch, r))
            print(format_table(header, table[-1:]).splitlines()[-1], flush=True)
            for key, (low, high) in r["ratio_band_5_95"].items():
                if "#" in key:
                    n, base = key.split("_vs_")
                    print(f"    A/A {n} vs {base}: "
                          f"{r['process_median_ms'][base] / r['process_median_ms'][n]:.3f}x, "
                          f"band {low:.3f}-{high:.3f}", flush=True)
    text = format_table(header, table)
    ratios = [r["median_ms"]["inductor"] / r["median_ms"]["powerfusion"] for r in rows
              if {"inductor", "powerfusion"} <= set(r["median_ms"])]
    ctl = [r["controlled_ms"]["powerfusion"] / r["controlled_ms"]["inductor"] for r in rows
           if {"inductor", "powerfusion"} <= set(r["controlled_ms"])
           and r["controlled_ms"]["inductor"] > 0]
    ctl = [x for x in ctl if x > 0]
    geo = (lambda xs: math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan"))
    bands = [r["ratio_band_5_95"]["powerfusion_vs_inductor"] for r in rows
             if "powerfusion_vs_inductor" in r["ratio_band_5_95"]]
    summary = (f"PowerFusion vs Inductor, geometric mean: {geo(ratios):.2f}x end to end "
               f"(cases ahead beyond the noise band: {sum(low > 1 for low, _ in bands)}, "
               f"tied: {sum(low <= 1 <= high for low, high in bands)}, behind: "
               f"{sum(high < 1 for _, high in bands)}); time outside library calls, "
               f"PowerFusion / Inductor: {geo(ctl):.2f}")
    print(text, summary, sep="\n\n")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        date = datetime.date.today().isoformat()
        load_after = os.getloadavg()
        info = {"benchmark": "e2e_torch_cpu", "date": date, "machine": machine_info(),
                "settings": vars(args) | {"out": str(args.out)}, "load_average_before":
                load_before, "load_average_after": load_after, "summary": summary,
                "results": rows}
        stem = args.out / f"e2e-torch-cpu-{date}"
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        m = info["machine"]
        kept_where = "every process" if args.keep_freed_memory else \
            "PowerFusion's process only"
        stem.with_suffix(".md").write_text(
            f"# Whole models, eager vs Inductor vs PowerFusion ({date})\n\n"
            f"{m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']}, "
            f"{args.repeats} interleaved samples per case, each backend in "
            f"{args.processes} process{'es' if args.processes > 1 else ''} of its own "
            f"(a round's step: their mean), medians; malloc keeps freed memory in {kept_where} "
            f"(runtime/host_memory.py); load average "
            f"{load_before[0]:.2f} before, {load_after[0]:.2f} after. "
            "`band 5-95`: the PF vs Inductor ratio's noise band (bootstrap over the "
            "rounds). `ctl ms`: the step's time outside library calls (matmul, "
            "convolution, attention, embedding), each library call timed in place by a "
            "profile hook (`pf.advise.library_time`). `python -m benchmarks.e2e_torch`.\n\n"
            f"{text}\n\n{summary}\n")
        print(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
