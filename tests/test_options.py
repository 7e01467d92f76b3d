"""The environment variables PowerFusion reads: declared once, parsed with typed errors,
read when a kernel is planned (not at import), listed in the README."""

import re
from pathlib import Path

import numpy as np
import pytest

import powerfusion as pf
from powerfusion import options
from powerfusion.cli import main as cli_main
from powerfusion.options import OptionError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_when_unset(monkeypatch):
    for name in options.OPTIONS:
        monkeypatch.delenv(name, raising=False)
    assert options.get("POWERFUSION_TARGET") == "cpu"
    assert options.get("POWERFUSION_SIMT_ROWS") == 8
    assert options.get("POWERFUSION_SIMT_VECTOR") is True
    assert options.get("POWERFUSION_CACHE_DIR") is None
    monkeypatch.setenv("POWERFUSION_SIMT_ROWS", "  ")      # blank is unset
    assert options.get("POWERFUSION_SIMT_ROWS") == 8


@pytest.mark.parametrize("name, text, why", [
    ("POWERFUSION_SIMT_ROWS", "eight", "expected a positive integer"),
    ("POWERFUSION_SIMT_ITEMS", "0", "expected a positive integer"),
    ("POWERFUSION_SIMT_ITEMS", "-4", "expected a positive integer"),
    ("POWERFUSION_SIMT_VECTOR", "yes", "expected 0 or 1"),
])
def test_bad_values_are_typed_errors_naming_the_variable(monkeypatch, name, text, why):
    monkeypatch.setenv(name, text)
    with pytest.raises(OptionError, match=re.escape(f"${name}={text!r}: {why}")):
        options.get(name)
    assert isinstance(OptionError("x"), (pf.PowerFusionError, ValueError))


def test_unknown_option_is_a_key_error():
    with pytest.raises(KeyError, match="not a PowerFusion option"):
        options.get("POWERFUSION_NOPE")


def test_read_when_planned_not_at_import(monkeypatch):
    """Set after import, a variable still decides: the chunked loads of a SIMT kernel
    go when POWERFUSION_SIMT_VECTOR=0, and a bad value fails the plan, typed."""
    from powerfusion.codegen.simt import emit_simt
    from graphs import softmax, strides_of
    from powerfusion.search.space import plan_graph
    from powerfusion.runtime.simt_executable import simt_target

    graph = softmax(4, 1000)

    def source() -> str:            # the chunk is part of the launch, decided at plan time
        plan = plan_graph(graph, strides_of(graph), simt_target("cuda", "h100"))
        return emit_simt([k.program for k in plan.kernels], "cuda")

    assert "uint4" in source()
    monkeypatch.setenv("POWERFUSION_SIMT_VECTOR", "0")
    assert "uint4" not in source()
    monkeypatch.setenv("POWERFUSION_SIMT_VECTOR", "off")
    with pytest.raises(OptionError, match="POWERFUSION_SIMT_VECTOR"):
        source()


def test_target_option_is_read_by_each_jit(monkeypatch):
    monkeypatch.setenv("POWERFUSION_TARGET", "tpu")
    with pytest.raises(pf.UnsupportedError, match="expected one of cpu.*got 'tpu'"):
        pf.jit(lambda x: x + 1)
    monkeypatch.setenv("POWERFUSION_TARGET", "cpu")
    f = pf.jit(lambda x: x + 1)
    np.testing.assert_array_equal(f(np.ones(4, np.float32)), np.full(4, 2, np.float32))


def test_cli_lists_every_option_and_fails_on_a_bad_one(monkeypatch, capsys):
    assert cli_main(["options"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in options.OPTIONS)
    monkeypatch.setenv("POWERFUSION_SIMT_ROWS", "many")
    assert cli_main(["options"]) == 1
    assert "invalid: expected a positive integer" in capsys.readouterr().out


def test_readme_lists_every_option_with_its_default():
    readme = (ROOT / "README.md").read_text()
    for option in options.OPTIONS.values():
        default = "" if option.default is None else str(int(option.default)) \
            if isinstance(option.default, bool) else str(option.default)
        assert f"| `{option.name}` | {default} |" in readme, option.name


def test_no_module_reads_the_environment_behind_options_back():
    """PowerFusion's variables are read through options.get only."""
    offenders = []
    for path in (ROOT / "powerfusion").rglob("*.py"):
        if path.name == "options.py":
            continue
        for line in path.read_text().splitlines():
            read = re.search(r"environ(\.get\(|\[)[\"'](POWERFUSION_|CC[\"']|CXX[\"'])", line)
            if read and not re.search(r"\]\s*=[^=]", line):          # setting one is fine
                offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, offenders
