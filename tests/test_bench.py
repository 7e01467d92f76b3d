"""`powerfusion bench` and `powerfusion probe` run, check out and write what they promise.

Smoke tests only: quick shapes, no torch.compile, nothing timed is asserted on.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys

import pytest

from powerfusion.gir.ir import Level
from powerfusion.targets import Target, detect_cpu


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "powerfusion", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def test_bench_quick_writes_results(tmp_path):
    pytest.importorskip("torch")
    result = _run("bench", "--quick", "--cases", "softmax,layernorm", "--no-torch-compile",
                  "--repeats", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    written = sorted(p.name for p in tmp_path.iterdir())
    [json_name] = [n for n in written if n.endswith(".json")]
    assert json_name.startswith("cpu-") and json_name.replace(".json", ".md") in written
    data = json.loads((tmp_path / json_name).read_text())
    assert {"machine", "copy_bandwidth", "summary", "cases", "date", "repeats"} <= set(data)
    assert {"cpu", "cores", "numpy", "torch", "threads"} <= set(data["machine"])
    assert data["copy_bandwidth"]["gbps"] > 0
    assert [c["name"] for c in data["cases"]] == ["softmax", "layernorm"]
    for case in data["cases"]:
        assert case["correct"], case
        assert case["min_global_bytes"] > 0
        assert {"pf", "numpy", "torch"} <= set(case["ms"])
        assert {"numpy", "torch"} <= set(case["speedup"])
        assert case["error"]["pf"]["max_abs"] < 1e-4
        assert 0 < case["fraction_of_copy"] <= case["fraction_of_roofline"] * (1 + 1e-9)
        floor = max(case["min_global_bytes"] / (data["copy_bandwidth"]["gbps"] * 1e9),
                    case["arithmetic_s"])
        assert case["fraction_of_roofline"] == pytest.approx(floor / (case["ms"]["pf"] * 1e-3))
    summary = data["summary"]
    assert summary["correct"] == summary["cases"] == 2
    assert "torch_compile" not in summary["geomean_speedup"]
    assert summary["median_fraction_of_copy"] > 0
    assert summary["min_fraction_of_roofline"]["case"] in ("softmax", "layernorm")
    assert set(data["math_s_per_element"]) >= {"exp", "tanh", "gelu"}
    assert "geometric mean" in result.stdout and "softmax" in result.stdout


def test_bench_rejects_an_unknown_case(tmp_path):
    result = _run("bench", "--quick", "--cases", "no_such_case", "--out", str(tmp_path))
    assert result.returncode != 0
    assert "no_such_case" in result.stdout + result.stderr


def test_suite_cases_are_plain_numpy():
    from powerfusion.cli import _bench_suite

    suite = _bench_suite()
    for case in suite.CASES.values():
        args = case.inputs(quick=True)
        out = (case.numpy_fn or case.fn)(*args)
        for y in out if isinstance(out, tuple) else (out,):
            assert y.size and (y.dtype == args[0].dtype or y.dtype.kind == "f"), case.name


def test_probe_writes_a_target(tmp_path):
    out = tmp_path / "target.json"
    result = _run("probe", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "global" in result.stdout and "GB/s" in result.stdout
    target = Target.from_json(out.read_text())
    assert target.family == "cpu" and target.cores == detect_cpu().cores
    for level in Level:
        assert target.bandwidth(level) > 0
        assert target.capacity(level) == detect_cpu().capacity(level)
    assert target.l1_bytes == detect_cpu().l1_bytes > 0
    assert Target.from_json(target.to_json()) == target
    from powerfusion.runtime import calibration                # pf.advise's, beside it

    assert "calibration for pf.advise" in result.stdout and calibration.read(out)["math_s"]


def test_measured_cpu_reads_the_probe_file(tmp_path):
    from powerfusion.runtime import probe

    path = tmp_path / "target-cpu.json"
    assert probe.measured_cpu(path) == detect_cpu()          # no file: the detected one
    results = [probe.Measurement("global", 1 << 28, 12.5e9, 2, "test"),
               probe.Measurement("local", 1 << 18, 150e9, 2, "test")]
    probe.write_target(results, path)
    measured = probe.measured_cpu(path)
    assert measured.bandwidth(Level.GLOBAL) == 12.5e9
    assert measured.bandwidth(Level.LOCAL) == 150e9
    assert measured.bandwidth(Level.REGISTER) == detect_cpu().bandwidth(Level.REGISTER)
    data = json.loads(path.read_text())
    data["probe"]["cpu_model"] = "some other CPU"            # a file from another machine
    path.write_text(json.dumps(data))
    assert probe.measured_cpu(path) == detect_cpu()
    # clouds name unlike x86 machines alike ("AMD EPYC"): the family and vector width
    # tell a Zen 1 with AVX2 from a Zen 4 with AVX-512
    data["probe"]["cpu_model"] = probe.cpu_model().split(" (")[0]
    path.write_text(json.dumps(data))
    if platform.machine() in ("x86_64", "AMD64") and os.path.exists("/proc/cpuinfo"):
        assert re.search(r"\(family \d+ model \d+, (AVX-512|AVX2|SSE)\)$", probe.cpu_model())
        assert probe.measured_cpu(path) == detect_cpu()
    path.write_text("{not json")
    assert probe.measured_cpu(path) == detect_cpu()


def test_startup_reports_cold_cached_and_tuned_first_calls(tmp_path):
    """benchmarks/startup.py: one case, three fresh processes, one JSON row."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--cases",
                             "layernorm", "--out", str(tmp_path)], cwd=root,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    [written] = list(tmp_path.iterdir())
    data = json.loads(written.read_text())
    [row] = data["cases"]
    assert row["case"] == "layernorm"
    assert 0 < row["cached_s"] and 0 < row["cold_s"] and 0 < row["tune_s"]
    assert data["summary"]["max_cached_s"] == row["cached_s"]


def test_e2e_ab_variants_name_a_checkout_and_its_settings(tmp_path):
    import argparse

    from benchmarks.e2e_ab import commit_of, parse_variant

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    name, tree, env = parse_variant(f"after={root},POWERFUSION_FUSED_ATTENTION=0")
    assert (name, str(tree), env) == ("after", root, {"POWERFUSION_FUSED_ATTENTION": "0"})
    for bad in (f"{tmp_path}", f"x={tmp_path}", f"x={root},NOVALUE"):
        with pytest.raises(argparse.ArgumentTypeError, match="--variant"):
            parse_variant(bad)
    assert commit_of(tmp_path) == "?"                     # not a git checkout
    assert re.fullmatch(r"[0-9a-f]{7,}(\+changes)?|\?", commit_of(tree))


def test_a_case_arithmetic_floor_counts_each_exp_at_its_measured_speed():
    """softmax's arithmetic: one exp per element at the measured seconds per element,
    over the cores, plus about one instruction per element for the rest."""
    import numpy as np

    import powerfusion as pf
    from benchmarks import suite
    from powerfusion.graph.ops import Op
    from powerfusion.runtime.backends import get_target

    x = np.random.default_rng(0).standard_normal((512, 1024), dtype=np.float32)
    report = pf.explain(suite.softmax, x)
    cores = get_target("cpu").cores
    slow, fast = (suite.arithmetic_seconds(report, {Op.EXP: s}) for s in (1e-6, 1e-9))
    assert (slow - fast) == pytest.approx(x.size * (1e-6 - 1e-9) / cores, rel=1e-9)
    assert 0 < fast < x.size * 1e-8
