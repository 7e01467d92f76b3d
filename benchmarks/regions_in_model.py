"""Each PowerFusion region's time inside a model's step against its time called alone.

Between library calls (a matmul streams megabytes of weights through the caches) a
region's glue and kernels run cold: in BERT at batch 1 a region's Python glue cost
15-40 us more in the model than alone, its kernels 2-3x more. Timings of a region alone
flatter it; this prints both, per region, from the same process: the whole lean call,
its kernels (the C launches), and the pool's hand-out of memory (`take`); each a median
per call times calls per step, so the parts need not add up to the whole.

    python -m benchmarks.regions_in_model --model bert --batch 1
    python -m benchmarks.regions_in_model --model llama --training

Inference by default; --training times the regions of the forward and the backward.
It times the Python glue (launcher.lean_function's parts): the native glue, one C++
call a region, is switched off here.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time


def _timed(table: dict, key: str, fn):
    def timed(*args):
        start = time.perf_counter()
        result = fn(*args)
        table[key].append(time.perf_counter() - start)
        return result
    return timed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--training", action="store_true")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    os.environ["POWERFUSION_NATIVE_GLUE"] = "0"      # the Python glue's parts are timed

    import torch

    from benchmarks.e2e_torch import _first_tensor, build_model
    from powerfusion.frontend.torch_backend import launcher

    times: dict[str, list] = collections.defaultdict(list)
    calls: dict[str, tuple] = {}
    lean_function = launcher.lean_function

    def instrumented(region, pool=None):
        lean = lean_function(region, pool)
        if lean is None:
            return None
        label, env = region.label, lean.__globals__
        for name in [k for k in env if k[0] == "K" and k[1:].isdigit()]:
            env[name] = _timed(times, f"{label} kernels", env[name])
        env["take"] = _timed(times, f"{label} take", env["take"])
        whole = _timed(times, label, lean)

        def call(*a):
            calls[label] = (lean, a)
            return whole(*a)
        return call

    launcher.lean_function = instrumented
    torch.manual_seed(0)
    model, make_inputs, description = build_model(args.model, args.layers)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(args.training)
    inputs = make_inputs(args.batch)
    compiled = torch.compile(model, backend="powerfusion")

    def step():
        if args.training:
            _first_tensor(compiled(**inputs)).float().mean().backward()
        else:
            with torch.no_grad():
                _first_tensor(compiled(**inputs))

    for _ in range(3):
        step()
    times.clear()
    for _ in range(args.steps):
        step()
    in_model = {k: statistics.median(v) * len(v) / args.steps for k, v in times.items()}
    alone = {}
    with torch.no_grad():
        for label, (lean, a) in calls.items():
            times.clear()
            runs = args.steps * 5
            for _ in range(runs):
                start = time.perf_counter()
                lean(*a)
                times[label].append(time.perf_counter() - start)
            alone.update({k: statistics.median(v) * len(v) / runs for k, v in times.items()})
    print(f"{description}, batch {args.batch}, {'training' if args.training else 'inference'}:"
          " microseconds per step, in the model / alone")
    print(f"{'region':40s} {'whole':>15s} {'kernels':>15s} {'take':>13s}")
    total = [0.0, 0.0]
    for label in sorted(calls):
        row = [label]
        for part in ("", " kernels", " take"):
            key = label + part
            row.append(f"{1e6 * in_model.get(key, 0):6.1f} / {1e6 * alone.get(key, 0):6.1f}")
        total[0] += in_model.get(label, 0)
        total[1] += alone.get(label, 0)
        print(f"{row[0]:40s} {row[1]:>15s} {row[2]:>15s} {row[3]:>13s}")
    print(f"{'all regions':40s} {1e6 * total[0]:6.1f} / {1e6 * total[1]:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
