"""How well `pf.advise` predicts PowerFusion's speedup over eager PyTorch, on the
models of the end-to-end benchmark (inference, batch 1): the predicted speedup, the
measured one (`advise(..., measure=True)`: eager and PowerFusion timed apart, medians),
their gap, and the Amdahl bound.

    python -m benchmarks.advise_accuracy [--models bert vit] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import warnings
from pathlib import Path

from benchmarks.e2e_torch import build_model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["bert", "gpt2", "llama", "vit", "resblock"])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None,
                    help="write advise-accuracy-cpu-DATE.json and .md into this folder")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import powerfusion as pf
    from powerfusion.benchmarking import format_table
    from powerfusion.runtime.probe import cpu_model

    rows = []
    for name in args.models:
        model, make_inputs, desc = build_model(name, args.layers)
        model.eval()
        advice = pf.advise(model, make_inputs(1), measure=True, repeats=args.repeats)
        measured = advice.baseline_s / advice.measured_s
        rows.append({"model": desc, "predicted": advice.predicted_speedup,
                     "measured": measured, "error": advice.predicted_speedup / measured - 1,
                     "bound": advice.bound, "eager_ms": 1e3 * advice.baseline_s,
                     "library_ms": 1e3 * advice.library_s,
                     "predicted_ms": 1e3 * advice.predicted_s,
                     "measured_ms": 1e3 * advice.measured_s})
        print(f"{desc}: predicted {advice.predicted_speedup:.2f}x, measured {measured:.2f}x",
              flush=True)
    table = format_table(
        ["model", "eager ms", "library ms", "predicted ms", "measured ms", "predicted",
         "measured", "error", "bound"],
        [[r["model"], f"{r['eager_ms']:.2f}", f"{r['library_ms']:.2f}",
          f"{r['predicted_ms']:.2f}", f"{r['measured_ms']:.2f}", f"{r['predicted']:.2f}x",
          f"{r['measured']:.2f}x", f"{100 * r['error']:+.0f}%", f"{r['bound']:.2f}x"]
         for r in rows])
    print(table)
    if args.out:
        date = datetime.date.today().isoformat()
        load = os.getloadavg()
        info = {"benchmark": "advise_accuracy", "date": date, "cpu": cpu_model(),
                "load_average": load, "rows": rows}
        stem = args.out / f"advise-accuracy-cpu-{date}"
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        stem.with_suffix(".md").write_text(
            f"# pf.advise's predicted speedup against the measured one ({date})\n\n"
            f"{info['cpu']}, inference at batch 1, {args.repeats} samples each, load average "
            f"{load[0]:.2f}. `python -m benchmarks.advise_accuracy`.\n\n{table}\n")
        print(f"wrote {stem}.md")


if __name__ == "__main__":
    main()
