"""pf.advise and `powerfusion advise`: the breakdown adds up, the prediction is built
from the plan PowerFusion compiles, fallbacks are named, bad requests are refused."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import powerfusion as pf
from powerfusion.cli import main as cli_main


def _layernorm(x, w):
    mu = x.mean(axis=-1, keepdims=True)
    d = x - mu
    return d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + 1e-5) * w


def test_numpy_function():
    x = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    w = np.ones(512, np.float32)
    advice = pf.advise(_layernorm, x, w, repeats=3, measure=True)
    assert advice.baseline == "numpy" and advice.library_s == 0
    (kernel,) = advice.kernels
    assert kernel.global_bytes == kernel.min_bytes == (2 * 256 * 512 + 512) * 4
    assert advice.predicted_s >= kernel.predicted_s > 0
    assert advice.measured_s > 0 and advice.baseline_s > 0
    text = str(advice)
    assert "_layernorm(float32[256, 512], float32[512])" in text and "x numpy" in text


def test_transcendentals_raise_the_prediction_past_the_bytes():
    """A GELU-heavy kernel moves the bytes of a copy but does far more arithmetic: the
    roofline's compute side must price it above the copy's time."""
    from powerfusion.search.compute import compute_seconds

    x = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)
    gelu, copy = (pf.explain(f, x) for f in (lambda v: pf.gelu(v), lambda v: v * 2.0))
    (g,), (c,) = gelu.programs, copy.programs
    from powerfusion.runtime.backends import get_target

    cpu = get_target("cpu")
    assert compute_seconds(g, cpu) > 20 * compute_seconds(c, cpu)
    advice_g, advice_c = (pf.advise(f, x, repeats=1) for f in (lambda v: pf.gelu(v),
                                                                lambda v: v * 2.0))
    assert advice_g.kernels[0].global_bytes == advice_c.kernels[0].global_bytes
    assert advice_g.kernels[0].predicted_s >= advice_c.kernels[0].predicted_s


def test_torch_model_breakdown_and_fallbacks():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 256)
            self.norm = torch.nn.LayerNorm(256)

        def forward(self, x):
            h = torch.nn.functional.gelu(self.fc(x))
            return self.norm(h).cumprod(dim=-1)      # cumprod: no lowering, counted

    advice = pf.advise(Net().eval(), (torch.randn(32, 64),), repeats=3, measure=True)
    assert advice.baseline == "eager PyTorch"
    assert 0 < advice.library_s < advice.baseline_s
    assert advice.bound == pytest.approx(advice.baseline_s / advice.library_s)
    assert advice.kernels and all(k.global_bytes >= k.min_bytes > 0 for k in advice.kernels)
    ops = {op for k in advice.kernels for op in k.ops}
    assert "aten.gelu.default" in ops and "aten.native_layer_norm.default" in ops
    assert advice.fallbacks == {"aten.cumprod.default": 1}
    assert advice.library_calls_s > 0 and advice.torch_ops_s > 0     # addmm; cumprod
    assert advice.predicted_s == pytest.approx(
        advice.library_calls_s + advice.torch_ops_s
        + sum(k.predicted_s for k in advice.kernels) + advice.glue_s)
    text = str(advice)
    assert "library compute" in text and "aten.cumprod.default x1" in text
    assert advice.measured_s > 0


def test_cli_numpy_and_torch(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    (tmp_path / "layers.py").write_text(textwrap.dedent("""
        import numpy as np
        def rms(x, w):
            return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-6) * w
    """))
    (tmp_path / "models.py").write_text(textwrap.dedent("""
        import torch
        def mlp():
            m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.SiLU()).eval()
            return m, {"input": torch.randn(8, 32)}
    """))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["advise", "layers.py:rms", "--shape", "64x128", "--shape", "128",
                     "--repeats", "2"]) == 0
    assert "rms(float32[64, 128], float32[128])" in capsys.readouterr().out
    assert cli_main(["advise", "--torch", "models:mlp", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "Sequential: " in out and "sigmoid, mul" in out and "x eager PyTorch" in out


@pytest.mark.parametrize("argv, message", [
    (["advise"], "give FILE.py:FUNCTION"),
    (["advise", "layers.py:rms"], "no file layers.py"),
    (["advise", "nocolon"], "expected FILE.py:NAME"),
])
def test_cli_refuses_bad_requests(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=message):
        cli_main(argv)


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    x = np.ones((64, 64), np.float32)
    path = pf.advise(lambda v: v + 1, x, repeats=1).plot(str(tmp_path / "a.png"))
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG" and path.endswith("a.png")


def test_nothing_to_compile_and_bad_inputs():
    advice = pf.advise(lambda v: v, np.ones((4, 4), np.float32), repeats=1)
    assert advice.kernels == [] and advice.predicted_speedup == 1.0
    assert "nothing to compile" in str(advice)
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(8, 8).eval()
    assert pf.advise(model, torch.ones(2, 8), repeats=1).baseline == "eager PyTorch"
    from powerfusion.advise import advise_torch

    with pytest.raises(TypeError, match="inputs: expected a tensor, a tuple"):
        advise_torch(model, 3.0, repeats=1)
    with pytest.raises(ValueError, match="statistic: expected one of median, min"):
        pf.advise(model, (torch.ones(2, 8),), repeats=1, statistic="mean")
    best = pf.advise(lambda v: v + 1, np.ones((8, 8), np.float32), repeats=3, measure=True,
                     statistic="min")
    assert 0 < best.measured_s and 0 < best.measured_baseline_s


def test_advice_leaves_other_compiled_models_alone():
    """No dynamo reset: a model the caller compiled keeps its compiled code, and advice
    given twice compiles twice (its own backend each time)."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU()).eval()
    x = torch.randn(4, 16)
    compiles = []

    def counting(gm, example_inputs):
        compiles.append(1)
        return gm.forward

    mine = torch.compile(model, backend=counting)
    with torch.no_grad():
        mine(x)
    for _ in range(2):
        assert len(pf.advise(model, (x,), repeats=1).kernels) == 1
    with torch.no_grad():
        mine(x)
    assert len(compiles) == 1


def _calibration_file(path, **figures):
    """A target file whose calibration record describes this machine (CPU model and
    cores as the probe names them) with the figures given."""
    import json

    from powerfusion.frontend.torch_backend import native
    from powerfusion.runtime.probe import _cores, cpu_model

    glue = "python" if native.module() is None else "native"     # the glue in use here
    record = {"cpu_model": cpu_model(), "cores": _cores(), "date": "2026-12-05T00:00:00",
              "torch_glue": glue,
              "math_s": {"gelu": 1e-6}, "jit_call_s": 3e-4, "region_call_s": 1e-3,
              "region_slow_call_s": 4e-3, "graph_call_s": 2e-3, "resume_s": 5e-4,
              "region_cold_call_s": 3e-3, "graph_cold_call_s": 7e-3, "guard_s": 1e-4,
              "guard_per_tensor_s": 1e-5} | figures
    path.write_text(json.dumps({"calibration": record}))
    return record


def test_calibration_is_read_from_the_device_description(tmp_path, monkeypatch):
    """The glue is the calibration's figures per region, per graph and per run of calls
    after library work, and a calibrated function's arithmetic is priced per element
    from it: large figures written to the target file show up in the prediction as
    they are."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    _calibration_file(tmp_path / "target-cpu.json")
    from powerfusion.runtime import calibration

    recorded = calibration.read(tmp_path / "target-cpu.json")
    from powerfusion.graph.ops import Op

    assert recorded["math_s"] == {Op.GELU: 1e-6} and recorded["region_call_s"] == 1e-3

    model = torch.nn.Sequential(torch.nn.Linear(16, 512), torch.nn.GELU()).eval()
    advice = pf.advise(model, (torch.randn(64, 16),), repeats=2, statistic="min")
    (kernel,) = advice.kernels
    # the graph (cold), two runs of calls resumed after library work (the weight's
    # transpose at the start, the region after the matmul), the region itself the first
    # in its run: its cold call less the resume already counted
    # and dynamo's guards on the input and the linear's weight and bias
    assert advice.guards_s == pytest.approx(1e-4 + 2 * 1e-5)
    assert advice.glue_s == pytest.approx(7e-3 + 2 * 5e-4 + (3e-3 - 5e-4) + 1.2e-4)
    from powerfusion.runtime.probe import _cores

    assert kernel.predicted_s >= 64 * 512 * 1e-6 / _cores()          # GELU per element
    assert advice.predicted_s == pytest.approx(
        advice.library_calls_s + advice.torch_ops_s + kernel.predicted_s + advice.glue_s)

    x = np.ones((8, 8), np.float32)
    assert pf.advise(lambda v: v + 1, x, repeats=1).glue_s == pytest.approx(3e-4)


def test_a_calibration_through_the_other_glue_is_measured_again(tmp_path):
    """The call figures price the glue as it runs: measured through the Python glue,
    they are measured again where the native glue runs now (and the other way)."""
    pytest.importorskip("torch")
    from powerfusion.advise import machine_calibration

    path = tmp_path / "target-cpu.json"
    glue = _calibration_file(path)["torch_glue"]
    other = "python" if glue == "native" else "native"
    _calibration_file(path, torch_glue=other)
    record = machine_calibration(path, torch_calls=True)
    assert record["torch_glue"] == glue and record["region_call_s"] != 1e-3
    assert machine_calibration(path, torch_calls=True) == record       # kept from now on


def test_calibration_of_another_machine_or_malformed(tmp_path):
    from powerfusion.runtime import calibration

    path = tmp_path / "target-cpu.json"
    _calibration_file(path, cpu_model="a CPU this is not")
    assert calibration.read(path) is None                            # measured again
    _calibration_file(path, math_s={"no_such_op": 1.0})
    with pytest.raises(calibration.CalibrationError, match="malformed record.*probe"):
        calibration.read(path)
    assert issubclass(calibration.CalibrationError, pf.PowerFusionError)


def test_calibration_measured_and_recorded_beside_the_probe(tmp_path):
    """Where the target file has no calibration, one is measured and written into it,
    keeping what the probe wrote; reading it back gives the same figures."""
    import json

    from powerfusion.advise import machine_calibration
    from powerfusion.runtime import calibration

    path = tmp_path / "target-cpu.json"
    path.write_text(json.dumps({"probe": {"cores": 1}, "name": "kept"}))
    record = machine_calibration(path)
    data = json.loads(path.read_text())
    assert data["name"] == "kept" and data["probe"] == {"cores": 1}
    assert record == calibration.read(path)
    assert all(v > 0 for v in record["math_s"].values()) and record["jit_call_s"] > 0


def test_compute_seconds_prices_calibrated_ops_per_element():
    from powerfusion.graph.ops import Op
    from powerfusion.runtime.backends import get_target
    from powerfusion.search.compute import compute_seconds

    x = np.ones((256, 1024), np.float32)
    (program,) = pf.explain(lambda v: pf.gelu(v), x).programs
    cpu = get_target("cpu")
    slow = compute_seconds(program, cpu, {Op.GELU: 1e-6})
    assert slow >= 256 * 1024 * 1e-6 / cpu.cores > 10 * compute_seconds(program, cpu)


def test_advice_past_dynamos_recompile_limit(monkeypatch):
    """Each advice adds its own compiled entries for the model's code: advising on one
    model many times must still price its graphs, and where dynamo runs the model
    eagerly all the same the advice says so instead of predicting from nothing."""
    torch = pytest.importorskip("torch")
    from powerfusion.advise import torch_models

    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU()).eval()
    x = torch.randn(8, 16)
    with torch._dynamo.config.patch(recompile_limit=2):
        for _ in range(4):
            assert len(pf.advise(model, (x,), repeats=1).kernels) == 1
        monkeypatch.setattr(torch_models, "_RECOMPILE_LIMIT", 1)
        with pytest.raises(pf.UnsupportedError, match="no graph of this model"):
            pf.advise(model, (x,), repeats=1)
