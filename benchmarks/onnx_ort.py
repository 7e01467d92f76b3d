"""Memory-bound ONNX subgraphs: pf.onnx.load against onnxruntime (CPU EP, all graph
optimisations), timed in turn (one sample of each per round, a sample 50 ms of
calls of one of them), medians.

Each case is an ONNX model built with onnx.helper at a BERT / GPT-2 / LLaMA shape,
written the way exporters write it (single ops where ONNX has them:
LayerNormalization, Softmax, Gelu, RMSNormalization). Results are checked against
onnxruntime before timing.

    python -m benchmarks.onnx_ort [--repeats 10] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import powerfusion as pf
from powerfusion.benchmarking import format_table, gb_per_s, interleaved, median_s


def _model(nodes, x_shape, params: dict[str, np.ndarray], opset: int = 23):
    inits = [numpy_helper.from_array(v, k) for k, v in params.items()]
    graph = helper.make_graph(nodes, "case", [helper.make_tensor_value_info("x", TP.FLOAT,
                                                                            x_shape)],
                              [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def cases(rng) -> dict[str, tuple[onnx.ModelProto, tuple[int, ...]]]:
    def vec(n, scale=1.0):
        return (scale * rng.standard_normal(n)).astype(np.float32)

    return {
        "softmax (BERT attention 6144x512)": (_model(
            [helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [6144, 512], {}),
            (6144, 512)),
        "layernorm (BERT 4096x768)": (_model(
            [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], epsilon=1e-5)],
            [4096, 768], {"g": vec(768), "b": vec(768)}), (4096, 768)),
        "bias + GELU tanh (GPT-2 MLP 4096x3072)": (_model(
            [helper.make_node("Add", ["x", "b"], ["h"]),
             helper.make_node("Gelu", ["h"], ["y"], approximate="tanh")],
            [4096, 3072], {"b": vec(3072)}), (4096, 3072)),
        "RMSNorm (LLaMA-7B 2048x4096)": (_model(
            [helper.make_node("RMSNormalization", ["x", "g"], ["y"], epsilon=1e-6)],
            [2048, 4096], {"g": vec(4096)}), (2048, 4096)),
        "residual + layernorm (BERT 4096x768)": (_model(
            [helper.make_node("Add", ["x", "r"], ["h"]),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["y"], epsilon=1e-5)],
            [4096, 768], {"r": vec(4096 * 768).reshape(4096, 768), "g": vec(768),
                          "b": vec(768)}), (4096, 768)),
    }


def run(repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # runs are interleaved: threads left spinning would take the cores from the next run
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    rows = []
    for name, (model, shape) in cases(rng).items():
        x = rng.standard_normal(shape).astype(np.float32)
        compiled = pf.onnx.load(model)
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        want = session.run(None, {"x": x})[0]
        got = compiled(x)
        ok = bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))
        # samples of 50 ms, each many calls of one framework: GNU OpenMP's threads spin
        # for a few ms after PowerFusion's calls, which would slow an onnxruntime call
        # right behind them (and sleeping threads wake cold): blocks measure each at
        # its steady state, as a program using one of them runs
        samples = interleaved({"pf": lambda: compiled(x),
                               "ort": lambda: session.run(None, {"x": x})}, repeats,
                              min_sample_s=0.05)
        pf_s, ort_s = median_s(samples["pf"]), median_s(samples["ort"])
        params = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
        nbytes = 2 * x.nbytes + params                   # x read once, y written once
        rows.append({"case": name, "correct": ok, "pf_ms": pf_s * 1e3, "ort_ms": ort_s * 1e3,
                     "speedup": ort_s / pf_s, "pf_gb_s": gb_per_s(nbytes, pf_s),
                     "ort_gb_s": gb_per_s(nbytes, ort_s)})
        print(f"{name}: pf {pf_s * 1e3:.3f} ms, ort {ort_s * 1e3:.3f} ms, "
              f"{ort_s / pf_s:.2f}x, correct={ok}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows = run(args.repeats)
    geo = float(np.exp(np.mean([np.log(r["speedup"]) for r in rows])))
    meta = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count(),
            "onnxruntime": ort.__version__, "onnx": onnx.__version__,
            "repeats": args.repeats, "geomean_speedup": geo,
            "loadavg_after": os.getloadavg()}   # other work on the machine skews both
    stem = Path(args.out) / f"onnx-ort-cpu-{meta['date']}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = format_table(["case", "ok", "pf ms", "ort ms", "ort/pf", "pf GB/s", "ort GB/s"],
                         [[r["case"], "yes" if r["correct"] else "NO", f"{r['pf_ms']:.3f}",
                           f"{r['ort_ms']:.3f}", f"{r['speedup']:.2f}x",
                           f"{r['pf_gb_s']:.1f}", f"{r['ort_gb_s']:.1f}"] for r in rows])
    text = (f"# pf.onnx vs onnxruntime {ort.__version__} (CPU EP, ORT_ENABLE_ALL), "
            f"{meta['date']}\n\n{os.cpu_count()} CPUs, float32, medians of {args.repeats} "
            f"interleaved samples; GB/s counts x read once, y written once and the "
            f"parameters. Load average after the run: "
            f"{', '.join(f'{v:.1f}' for v in meta['loadavg_after'])}.\n\n```\n{table}\n```\n\ngeometric-mean speedup over "
            f"onnxruntime: {geo:.2f}x\n")
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
