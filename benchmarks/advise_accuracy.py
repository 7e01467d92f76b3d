"""How well `pf.advise` predicts PowerFusion's speedup over eager PyTorch, on the
models of the end-to-end benchmark (inference): the predicted speedup (eager measured
before the prediction, over the predicted time and its parts), the measured one
(`advise(..., measure=True)`: eager and PowerFusion timed interleaved, medians), their
gap, the Amdahl bound, and the load average when each row was done.

The prediction never reads PowerFusion's time for the model: it prices the compiled
model's calls (`pf.advise`'s docstring says how) with this machine's calibration,
which is measured once and kept in the target file (`powerfusion probe`'s); run the
benchmark where that is already recorded, or on a quiet machine.

    python -m benchmarks.advise_accuracy [--models bert vit] [--batch 1 8]
                                         [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import warnings
from pathlib import Path

from benchmarks.e2e_torch import build_model

PARTS = ("library_calls", "other_torch_calls", "kernels", "calls_from_python")


def _row(desc: str, batch: int, advice) -> dict:
    predicted, measured = advice.predicted_speedup, advice.measured_speedup
    return {"model": desc, "batch": batch, "predicted": predicted, "measured": measured,
            "error": predicted / measured - 1, "bound": advice.bound,
            "eager_ms": 1e3 * advice.baseline_s, "library_ms": 1e3 * advice.library_s,
            "predicted_ms": 1e3 * advice.predicted_s,
            "predicted_parts_ms": dict(zip(PARTS, (
                1e3 * advice.library_calls_s, 1e3 * advice.torch_ops_s,
                1e3 * sum(k.predicted_s for k in advice.kernels), 1e3 * advice.glue_s))),
            "regions": len(advice.kernels), "attention_fused": advice.attention,
            "measured_eager_ms": 1e3 * advice.measured_baseline_s,
            "measured_ms": 1e3 * advice.measured_s, "load_average": os.getloadavg(),
            "cpu_pressure_avg60": _cpu_pressure()}


def _cpu_pressure() -> float | None:
    """The share of the last minute some runnable task waited for a CPU (Linux PSI)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(dict(f.split("=") for f in line.split()[1:])["avg60"]) / 100
    except (OSError, ValueError, KeyError, IndexError):
        return None


def _median_runs(rows: list[dict]) -> list[tuple[dict, list[float]]]:
    """Per model and batch, the run whose error is the median of its runs' (the lower
    middle one of an even count), beside every run's error in order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["batch"], r["model"]), []).append(r)
    out = []
    for key in sorted(groups):
        runs = groups[key]
        ranked = sorted(runs, key=lambda r: r["error"])
        out.append((ranked[(len(ranked) - 1) // 2], [r["error"] for r in runs]))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["bert", "gpt2", "llama", "vit", "resblock"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--runs", type=int, default=1,
                    help="advise on each model this many times, in rounds; the table "
                         "shows the run of median error and every run's error")
    ap.add_argument("--statistic", choices=["median", "min"], default="median",
                    help="how each time is read off its samples (min: a shared machine)")
    ap.add_argument("--out", type=Path, default=None,
                    help="add the rows to advise-accuracy-cpu-DATE.json (same model and "
                         "batch replaced) and write the table of all of them to .md")
    ap.add_argument("--name", default=None,
                    help="file name without suffix (default advise-accuracy-cpu-DATE)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import powerfusion as pf
    from powerfusion.benchmarking import format_table
    from powerfusion.runtime.probe import cpu_model

    rows = []
    # rounds over the models, so that the machine's drift hits them all
    for run, name, batch in itertools.product(range(args.runs), args.models, args.batch):
        model, make_inputs, desc = build_model(name, args.layers)
        model.eval()
        advice = pf.advise(model, make_inputs(batch), measure=True, repeats=args.repeats,
                           statistic=args.statistic)
        rows.append(_row(desc, batch, advice) | {"run": run})
        print(f"{desc}, batch {batch}: predicted {advice.predicted_speedup:.2f}x, "
              f"measured {advice.measured_speedup:.2f}x (load {os.getloadavg()[0]:.2f})",
              flush=True)
    date = datetime.date.today().isoformat()
    stem = args.out / (args.name or f"advise-accuracy-cpu-{date}") if args.out else None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)     # before the run, not after it
    if stem is not None and stem.with_suffix(".json").exists() and json.loads(
            stem.with_suffix(".json").read_text()).get("cpu") == cpu_model():
        # one model at a time (each run short enough to hold the benchmark lock)
        done = {(r["model"], r["batch"]) for r in rows}   # replaced, all their runs
        earlier = json.loads(stem.with_suffix(".json").read_text())
        rows = [r for r in earlier["rows"] if (r["model"], r["batch"]) not in done] + rows
    table = format_table(
        ["model", "batch", "eager ms", "library", "other torch", "kernels", "calls",
         "predicted ms", "eager ms (2)", "measured ms", "predicted", "measured", "error",
         "runs", "errors", "bound", "load"],
        [[r["model"], str(r["batch"]), f"{r['eager_ms']:.2f}",
          *(f"{r['predicted_parts_ms'][k]:.2f}" for k in PARTS),
          f"{r['predicted_ms']:.2f}", f"{r['measured_eager_ms']:.2f}",
          f"{r['measured_ms']:.2f}", f"{r['predicted']:.2f}x", f"{r['measured']:.2f}x",
          f"{100 * r['error']:+.0f}%", str(len(errors)),
          " ".join(f"{100 * e:+.0f}" for e in errors), f"{r['bound']:.2f}x",
          f"{r['load_average'][0]:.2f}"]
         for r, errors in _median_runs(rows)])
    print(table)
    if stem is not None:
        info = {"benchmark": "advise_accuracy", "date": date, "cpu": cpu_model(),
                "logical_cpus": os.cpu_count(), "rows": rows}
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        stem.with_suffix(".md").write_text(
            f"# pf.advise's predicted speedup against the measured one ({date})\n\n"
            f"{info['cpu']} ({info['logical_cpus']} logical CPUs), inference, "
            f"{args.repeats} samples each, times read as their {args.statistic}; each "
            "model advised on `runs` times in rounds, the row the run of median error. "
            "`python -m benchmarks.advise_accuracy`, one model "
            "at a time. Predicted: eager (measured first) over the predicted time, the sum "
            "of library calls (eager's profiled price for the same call, or timed alone: "
            "fused attention), other torch calls (timed alone, hot and right after a "
            "matmul), kernels (cost model, calibrated arithmetic) and calls from Python "
            "(calibrated per region, per graph, per run of calls after a library call, "
            "dynamo's guards per tensor). Measured: eager (2) and PowerFusion interleaved. load: the 1-minute "
            f"load average after the row.\n\n{table}\n")
        print(f"wrote {stem}.md")


if __name__ == "__main__":
    main()
