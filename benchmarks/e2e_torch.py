"""End-to-end forward latency of Hugging Face models on the CPU: eager PyTorch, the
default torch.compile (inductor), and torch.compile(backend="powerfusion").

Models are built from configs with random weights (no downloads): BERT-base sizes
(hidden 768, 12 heads, intermediate 3072) with fewer layers, and a small LLaMA.
Candidates are timed interleaved (one sample of each in turn); figures are medians,
and ratios are against eager measured in the same run.

    python benchmarks/e2e_torch.py                 # default: 2 layers, seq 128, batch 1 and 4
    python benchmarks/e2e_torch.py --layers 12 --batch 1 --repeats 20
    python benchmarks/e2e_torch.py --no-inductor   # skip the inductor baseline

Prints a table and writes benchmarks/results/e2e_torch_cpu.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "e2e_torch_cpu.json"


def _cpu_name() -> str:
    from powerfusion.targets.probe import cpu_model

    return cpu_model()


def machine_info() -> dict:
    import torch

    info = {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def build_models(layers: int, llama_layers: int):
    import transformers

    bert = transformers.BertModel(transformers.BertConfig(
        hidden_size=768, num_attention_heads=12, intermediate_size=3072,
        num_hidden_layers=layers, vocab_size=30522, max_position_embeddings=512,
        attn_implementation="eager"))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=512, num_attention_heads=8, num_key_value_heads=4,
        intermediate_size=1408, num_hidden_layers=llama_layers, vocab_size=8000,
        max_position_embeddings=512, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        use_cache=False))
    return {f"bert-base ({layers} layers)": bert.eval(),
            f"llama-small ({llama_layers} layers, d=512)": llama.eval()}


def run(args) -> dict:
    import torch

    import powerfusion.frontend.torch_backend as tb
    from powerfusion.benchmarking import interleaved

    torch.manual_seed(0)
    rows = []
    for name, model in build_models(args.layers, args.llama_layers).items():
        vocab = model.config.vocab_size
        for batch in args.batch:
            ids = torch.randint(0, vocab, (batch, args.seq))
            torch._dynamo.reset()
            tb.reset_compile_stats()
            candidates = {"eager": model}
            if not args.no_inductor:
                candidates["inductor"] = torch.compile(model)
            candidates["powerfusion"] = torch.compile(model, backend="powerfusion")
            fns, compile_s, errors = {}, {}, {}
            with torch.no_grad():
                expected = model(input_ids=ids)[0]
                for cname, m in candidates.items():
                    start = time.perf_counter()
                    out = m(input_ids=ids)[0]           # first call: compiles
                    compile_s[cname] = time.perf_counter() - start
                    errors[cname] = (out - expected).abs().max().item()
                    fns[cname] = (lambda m=m, ids=ids: m(input_ids=ids))
                stats = tb.compile_stats()
                samples = interleaved(fns, repeats=args.repeats, warmup=2)
            med = {c: statistics.median(s) for c, s in samples.items()}
            row = {"model": name, "batch": batch, "seq": args.seq,
                   "median_ms": {c: 1e3 * v for c, v in med.items()},
                   "min_ms": {c: 1e3 * min(s) for c, s in samples.items()},
                   "speedup_vs_eager": {c: med["eager"] / v for c, v in med.items()},
                   "first_call_s": compile_s, "max_abs_error_vs_eager": errors,
                   "powerfusion": {k: stats[k] for k in ("graphs", "regions", "kernels",
                                                         "fused_ops", "fallback_ops",
                                                         "library_ops")},
                   "samples_ms": {c: [1e3 * v for v in s] for c, s in samples.items()}}
            rows.append(row)
            _print_row(row)
    return {"benchmark": "e2e_torch_cpu", "date": datetime.datetime.now().isoformat(
        timespec="seconds"), "machine": machine_info(),
        "settings": {"layers": args.layers, "llama_layers": args.llama_layers,
                     "seq": args.seq, "batch": args.batch, "repeats": args.repeats,
                     "dtype": "float32", "mode": "inference (torch.no_grad)"},
        "results": rows}


_HEADER_PRINTED = False


def _print_row(row: dict) -> None:
    global _HEADER_PRINTED
    cands = list(row["median_ms"])
    if not _HEADER_PRINTED:
        print(f"{'model':36s} {'batch':>5s} " + " ".join(f"{c + ' ms':>14s}" for c in cands)
              + " " + " ".join(f"{c + ' x':>14s}" for c in cands if c != "eager")
              + "   PF kernels/fallbacks   min ms " + "/".join(cands))
        _HEADER_PRINTED = True
    pf = row["powerfusion"]
    print(f"{row['model']:36s} {row['batch']:5d} "
          + " ".join(f"{row['median_ms'][c]:14.2f}" for c in cands) + " "
          + " ".join(f"{row['speedup_vs_eager'][c]:14.2f}" for c in cands if c != "eager")
          + f"   {pf['kernels']}/{pf['fallback_ops']}   "
          + "/".join(f"{row['min_ms'][c]:.1f}" for c in cands), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2, help="BERT-base layers (default 2)")
    p.add_argument("--llama-layers", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-inductor", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"needs torch and transformers: {e}", file=sys.stderr)
        return 2
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
