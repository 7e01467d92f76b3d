"""The `powerfusion` command: help lists the commands; the demo runs and checks out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from powerfusion import benchmarking, cli


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def test_help_lists_the_commands():
    result = _run("-m", "powerfusion", "--help")
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and "explain" in result.stdout


def test_parser_rejects_a_bad_shape():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["explain", "softmax", "--shape", "12xq"])


def test_examples_are_plain_numpy_and_run_without_the_compiler():
    for example in cli.EXAMPLES.values():
        args = example.inputs(example.quick_shape)
        out = example.fn(*args)
        assert out.shape == example.quick_shape and out.dtype == args[0].dtype


def test_format_table_aligns_columns():
    text = benchmarking.format_table(["name", "ms"], [["softmax", "1.5"], ["ln", "12.25"]])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[2].startswith("softmax") and lines[3].endswith("12.25")


def test_interleaved_samples_every_candidate():
    samples = benchmarking.interleaved({"a": lambda: None, "b": lambda: sum(range(100))},
                                       repeats=4, min_sample_s=1e-4)
    assert set(samples) == {"a", "b"} and all(len(s) == 4 for s in samples.values())
    assert all(t > 0 for s in samples.values() for t in s)


def test_interleaved_rounds_start_with_each_candidate_in_turn():
    """The collection between rounds leaves the caches cold for whoever runs first:
    every candidate takes that place as often as the others."""
    order: list[str] = []
    candidates = {name: (lambda name=name: order.append(name)) for name in "abc"}
    benchmarking.interleaved(candidates, repeats=6, warmup=1, min_sample_s=0)
    rounds = [order[3 + 3 * r: 6 + 3 * r] for r in range(6)]      # after the warmups
    assert [r[0] for r in rounds] == list("abcabc")
    assert all(sorted(r) == list("abc") for r in rounds)


def test_interleaved_rounds_follow_each_candidate_with_a_changing_neighbour():
    """Shuffled (the default), a candidate does not always run right after the same
    one, and the orders are the same on every call; a fixed cycle keeps them."""
    def rounds(**kw):
        order: list[str] = []
        candidates = {name: (lambda name=name: order.append(name)) for name in "abcde"}
        benchmarking.interleaved(candidates, repeats=20, min_sample_s=0, **kw)
        return [tuple(order[5 + 5 * r: 10 + 5 * r]) for r in range(20)]

    def predecessors(of, runs):
        return {r[r.index(of) - 1] for r in runs if r.index(of) > 0}

    shuffled = rounds()
    assert shuffled == rounds() and len(set(shuffled)) > 5
    assert [r[0] for r in shuffled] == list("abcde") * 4
    assert all(len(predecessors(c, shuffled)) > 1 for c in "abcde")
    assert all(predecessors(c, rounds(shuffled=False)) == {"abcde"["abcde".index(c) - 1]}
               for c in "abcde")


def test_demo_quick_passes():
    result = _run("-m", "powerfusion.cli", "demo", "--quick")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    lines = result.stdout.splitlines()
    passes = [line for line in lines if line.rstrip().endswith("PASS")
              and not line.lstrip().startswith("max |pf - onnxruntime|")]
    assert len(passes) == len(cli.EXAMPLES), result.stdout
    assert "FAIL" not in result.stdout
    try:                                  # the ONNX block, checked against onnxruntime
        import onnx, onnxruntime  # noqa: F401, E401
    except ImportError:
        assert "ONNX: skipped" in result.stdout
    else:
        assert any(line.lstrip().startswith("max |pf - onnxruntime|") and
                   line.rstrip().endswith(": PASS") for line in lines), result.stdout
    assert "GIR after the passes" in result.stdout and "Generated C" in result.stdout


def test_explain_prints_the_report():
    result = _run("-m", "powerfusion", "explain", "rmsnorm", "--shape", "8x256", "--source")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "global bytes" in result.stdout and "Generated source" in result.stdout


def test_explain_writes_the_gir_graph(tmp_path):
    from powerfusion.cli import main

    out = tmp_path / "softmax.dot"
    assert main(["explain", "softmax", "--shape", "8x64", "--graph", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("digraph") and "color=" in text
    naive = tmp_path / "naive.dot"
    assert main(["explain", "softmax", "--shape", "8x64", "--graph", str(naive),
                 "--naive"]) == 0
    assert "color=red" in naive.read_text()      # global round trips before the passes


def test_tune_command_records_a_winner(tmp_path, monkeypatch, capsys):
    from powerfusion.cli import main

    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    assert main(["tune", "softmax", "--shape", "16x128", "--budget", "10"]) == 0
    printed = capsys.readouterr().out
    assert "winner" in printed and "tuned kernels" in printed


def test_tune_command_tunes_an_opencl_target(tmp_path, monkeypatch, capsys):
    from helpers import opencl_or_skip
    from powerfusion.cli import main
    from powerfusion.search import tuning_db

    opencl_or_skip()
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    assert main(["tune", "softmax", "--shape", "4x40000", "--budget", "10",
                 "--target", "opencl"]) == 0
    assert "winner" in capsys.readouterr().out
    assert len(tuning_db.load("opencl")) == 1 and not tuning_db.load("cpu")
