"""Whole Hugging Face models as ONNX: pf.onnx.load against onnxruntime (CPU EP,
ORT_ENABLE_ALL, 2 intra-op threads), timed in turn (one sample of each per round), medians.

Models have random weights from transformers configs (no downloads), batch 1, seq 128:
BERT-base dims (hidden 768, 12 heads, intermediate 3072) with 2 layers; GPT-2 (n_embd
768, 12 heads) with 2 layers; a LLaMA-style model (hidden 512, 8 heads, 4 KV heads,
intermediate 1408) with 2 layers; eager attention, so attention is plain ops. Inputs are
input_ids and attention_mask (with the mask an input, transformers' packed-sequence check
and its aten::diff stay out of the trace), the output the last hidden state.

Exporter: both of torch.onnx.export's give standard-op graphs at these shapes. The
legacy TorchScript one (`dynamo=False`, opset 18) needs nothing beyond torch and is the
default; it leaves Identity aliases of shared weights, shape arithmetic and the masks'
ConstantOfShape / Where in the graph. The dynamo one (`--exporter dynamo`, opset 20,
needs onnxscript) folds those away and writes Gelu as one op: fewer nodes, the same
kinds of regions. Models are exported in a child process into a temporary folder, so
this process never loads torch (its OpenMP runtime and threads).

Each model is checked against onnxruntime (max abs error) and torch eager before timing;
rows also count the nodes PowerFusion compiled (regions, kernels) and those it delegated
to onnxruntime (sub-models), and split PowerFusion's time into regions and sub-models.

    python -m benchmarks.onnx_models [--exporter legacy|dynamo|both] [--repeats 10]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

SEQ = 128
MODELS = ("bert", "gpt2", "llama")
LABELS = {"bert": "BERT-base dims, 2 layers", "gpt2": "GPT-2 (768), 2 layers",
          "llama": "LLaMA-style (512, GQA 8/4), 2 layers"}


# -- the child process: build, export, reference outputs ---------------------------------
def _build(name: str):
    import transformers

    if name == "bert":
        return transformers.BertModel(transformers.BertConfig(
            hidden_size=768, num_attention_heads=12, intermediate_size=3072,
            num_hidden_layers=2, vocab_size=30522, max_position_embeddings=512,
            attn_implementation="eager"))
    if name == "gpt2":
        return transformers.GPT2Model(transformers.GPT2Config(
            n_embd=768, n_head=12, n_layer=2, n_positions=512, use_cache=False,
            attn_implementation="eager"))
    return transformers.LlamaModel(transformers.LlamaConfig(
        hidden_size=512, num_attention_heads=8, num_key_value_heads=4,
        intermediate_size=1408, num_hidden_layers=2, vocab_size=8000,
        max_position_embeddings=512, use_cache=False, attn_implementation="eager"))


def export(name: str, exporter: str, folder: str) -> dict:
    """Export one model into folder; its inputs and torch eager's output beside it."""
    import warnings

    import torch
    import transformers

    class LastHidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids,
                              attention_mask=attention_mask).last_hidden_state

    torch.manual_seed(0)
    # the wrapper too: the legacy exporter restores the wrapper's mode on all submodules,
    # and a wrapper left training would switch the model's dropout on after export
    model = LastHidden(_build(name)).eval()
    ids = torch.randint(0, model.model.config.vocab_size, (1, SEQ))
    mask = torch.ones_like(ids)
    path = Path(folder) / f"{name}-{exporter}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        expected = model(ids, mask).numpy()
        start = time.perf_counter()
        torch.onnx.export(model, (ids, mask), str(path), dynamo=exporter == "dynamo",
                          input_names=["input_ids", "attention_mask"],
                          output_names=["hidden"],
                          **({"opset_version": 18} if exporter == "legacy" else {}))
        seconds = time.perf_counter() - start
    np.savez(path.with_suffix(".npz"), input_ids=ids.numpy(), attention_mask=mask.numpy(),
             torch=expected)
    # plain str: torch's version object would import torch here when unpickled
    return {"path": str(path), "export_s": seconds, "torch": str(torch.__version__),
            "transformers": str(transformers.__version__)}


# -- this process: compile, check, time ------------------------------------------------
def _ort_session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # runs are interleaved: threads left spinning would take the cores from the next run
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _counts(model, feeds: dict) -> dict:
    """Nodes PowerFusion compiled and delegated, its regions, kernels and sub-models."""
    from powerfusion.frontend.onnx_model import Region

    regions = [s for s in model.steps if isinstance(s, Region)]
    library = [s for s in model.steps if not isinstance(s, Region)]
    report = model.explain(**feeds)
    return {"nodes": len(model.proto.graph.node),
            "constant_nodes": sum(n.op_type == "Constant" for n in model.proto.graph.node),
            "compiled_nodes": sum(len(r.infos) for r in regions),
            "delegated_nodes": sum(len(s.nodes) for s in library),
            "regions": len(regions), "kernels": report.kernels,
            "library_steps": len(library)}


def _breakdown(model, feeds: dict, runs: int = 10) -> dict:
    """Milliseconds per call in PowerFusion regions and in onnxruntime sub-models."""
    from powerfusion.frontend.onnx_model import Region

    spent = {"regions_ms": 0.0, "library_ms": 0.0}
    for _ in range(runs):
        env = {**model.constants, **model._feeds((), feeds)}
        for step in model.steps:
            start = time.perf_counter()
            step.run(env)
            key = "regions_ms" if isinstance(step, Region) else "library_ms"
            spent[key] += (time.perf_counter() - start) * 1e3 / runs
    return spent


def _on_the_cut(model, feeds: dict) -> None:
    """The model cut as PowerFusion cuts it, each region run by onnxruntime instead: what
    PowerFusion's kernels are measured against, apart from what the cut costs."""
    from powerfusion.frontend.onnx_model import Region

    env = {**model.constants, **model._feeds((), feeds)}
    for step in model.steps:
        (step.library if isinstance(step, Region) else step).run(env)


def run_model(name: str, exported: dict, repeats: int, threads: int) -> dict:
    import powerfusion as pf
    from powerfusion.benchmarking import interleaved, median_s

    data = np.load(Path(exported["path"]).with_suffix(".npz"))
    feeds = {"input_ids": data["input_ids"], "attention_mask": data["attention_mask"]}
    session = _ort_session(exported["path"], threads)
    start = time.perf_counter()
    model = pf.onnx.load(exported["path"])
    got = model(**feeds)
    first_call_s = time.perf_counter() - start          # load, trace, compile (or cache)
    want = session.run(None, feeds)[0]
    samples = interleaved({"onnxruntime": lambda: session.run(None, feeds),
                           "powerfusion": lambda: model(**feeds),
                           "onnxruntime_on_pf_cut": lambda: _on_the_cut(model, feeds)},
                          repeats, warmup=2)
    ort_s, pf_s = median_s(samples["onnxruntime"]), median_s(samples["powerfusion"])
    return {"model": name, "label": LABELS[name], "exporter": exported["exporter"],
            "seq": SEQ, "batch": 1,
            "ort_ms": ort_s * 1e3, "pf_ms": pf_s * 1e3, "speedup": ort_s / pf_s,
            "ort_on_pf_cut_ms": median_s(samples["onnxruntime_on_pf_cut"]) * 1e3,
            "min_ms": {k: min(v) * 1e3 for k, v in samples.items()},
            "max_abs_err_vs_ort": float(np.abs(got - want).max()),
            "max_abs_err_ort_vs_torch": float(np.abs(want - data["torch"]).max()),
            "max_abs_err_vs_torch": float(np.abs(got - data["torch"]).max()),
            "export_s": exported["export_s"], "pf_first_call_s": first_call_s,
            "powerfusion": {**_counts(model, feeds), **_breakdown(model, feeds)},
            "samples_ms": {k: [v * 1e3 for v in s] for k, s in samples.items()}}


def machine_info(versions: dict) -> dict:
    import onnx
    import onnxruntime as ort

    from powerfusion.runtime.probe import cpu_model

    try:
        import onnxscript  # the dynamo exporter's, where installed
        versions = {**versions, "onnxscript": onnxscript.__version__}
    except ImportError:
        pass
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "onnx": onnx.__version__, "onnxruntime": ort.__version__, **versions,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def _markdown(result: dict) -> str:
    from powerfusion.benchmarking import format_table

    meta, rows = result["meta"], result["rows"]
    table = format_table(
        ["model", "exporter", "ort ms", "pf ms", "ort/pf", "min ort/pf ms", "ort on cut ms",
         "max |pf-ort|", "nodes pf/ort", "regions", "kernels", "sub-models",
         "pf in regions / sub-models ms"],
        [[r["label"], r["exporter"], f"{r['ort_ms']:.2f}", f"{r['pf_ms']:.2f}",
          f"{r['speedup']:.2f}x",
          f"{r['min_ms']['onnxruntime']:.2f} / {r['min_ms']['powerfusion']:.2f}",
          f"{r['ort_on_pf_cut_ms']:.2f}", f"{r['max_abs_err_vs_ort']:.1e}",
          f"{r['powerfusion']['compiled_nodes']}/{r['powerfusion']['delegated_nodes']}",
          str(r["powerfusion"]["regions"]), str(r["powerfusion"]["kernels"]),
          str(r["powerfusion"]["library_steps"]),
          f"{r['powerfusion']['regions_ms']:.2f} / {r['powerfusion']['library_ms']:.2f}"]
         for r in rows])
    load = ", ".join(f"{v:.2f}" for v in meta["loadavg_before"]) + " before, " + \
        ", ".join(f"{v:.2f}" for v in meta["loadavg_after"]) + " after"
    m = meta["machine"]
    return (f"# Whole models as ONNX: pf.onnx vs onnxruntime {m['onnxruntime']} "
            f"(CPU EP, ORT_ENABLE_ALL, {meta['threads']} intra-op threads), "
            f"{meta['date']}\n\n"
            f"{m['cpu']}, {m['logical_cpus']} CPUs; torch {m['torch']}, transformers "
            f"{m['transformers']}, onnx {m['onnx']}. Batch 1, seq {SEQ}, float32, random "
            f"weights; medians of {meta['repeats']} interleaved samples (`python -m "
            f"benchmarks.onnx_models`). Load average (1, 5, 15 min): {load}; the machine "
            f"is shared, so figures move with it.\n\n```\n{table}\n```\n\n"
            f"ort on cut: the model cut where PowerFusion cuts it, its regions run by "
            f"onnxruntime sub-models instead (timed with the other two), so pf ms against it "
            f"is PowerFusion's kernels and glue, and it against ort ms is what the cut "
            f"costs onnxruntime (fusions across it, one call per sub-model). "
            f"nodes pf/ort: nodes in PowerFusion regions / nodes run by onnxruntime "
            f"(Constant nodes and Identity aliases of weights are neither); sub-models: "
            f"onnxruntime calls per run. Geometric-mean ort/pf: {meta['geomean_speedup']:.2f}x."
            f"\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", choices=["legacy", "dynamo", "both"], default="legacy")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    exporters = ["legacy", "dynamo"] if args.exporter == "both" else [args.exporter]
    loadavg_before = os.getloadavg()
    rows, versions = [], {}
    with tempfile.TemporaryDirectory(prefix="pf-onnx-models-") as folder:
        # a spawned child: torch never loads here
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            jobs = [(n, e, pool.submit(export, n, e, folder)) for e in exporters
                    for n in args.models]
            exported = [(n, {**job.result(), "exporter": e}) for n, e, job in jobs]
        for name, info in exported:
            versions = {"torch": info["torch"], "transformers": info["transformers"]}
            row = run_model(name, info, args.repeats, args.threads)
            rows.append(row)
            print(f"{row['label']} ({row['exporter']}): ort {row['ort_ms']:.2f} ms, pf "
                  f"{row['pf_ms']:.2f} ms, {row['speedup']:.2f}x, max |pf-ort| "
                  f"{row['max_abs_err_vs_ort']:.1e}", flush=True)
    geo = float(np.exp(np.mean([np.log(r["speedup"]) for r in rows])))
    meta = {"date": datetime.date.today().isoformat(), "machine": machine_info(versions),
            "threads": args.threads, "repeats": args.repeats, "geomean_speedup": geo,
            "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg()}
    result = {"benchmark": "onnx_models_cpu", "meta": meta, "rows": rows}
    stem = Path(args.out) / f"onnx-models-cpu-{meta['date']}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    text = _markdown(result)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
