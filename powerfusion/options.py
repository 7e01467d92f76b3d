"""Every environment variable PowerFusion reads, declared once: its default, its
meaning and how its text is parsed. Values are read when asked (when a kernel is
planned, built or run), never at import, so a process may change them between calls;
kernels already compiled keep what they were planned with.

    from powerfusion import options
    options.get("POWERFUSION_SIMT_ROWS")      # 8 unless the environment says otherwise

`powerfusion options` (the CLI) prints the table with the values in effect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .errors import PowerFusionError


class OptionError(PowerFusionError, ValueError):
    """An environment variable PowerFusion reads holds a value it cannot use."""


def _switch(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return text == "1"


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError("expected a positive integer")
    return int(text)


@dataclass(frozen=True)
class Option:
    name: str
    default: object                  # the value when the variable is unset or empty
    doc: str
    parse: Callable[[str], object] = str


OPTIONS: dict[str, Option] = {o.name: o for o in [
    Option("POWERFUSION_TARGET", "cpu",
           "the target pf.jit compiles for when none is given (cpu, opencl, cuda, hip)"),
    Option("POWERFUSION_CACHE_DIR", None,
           "where compiled kernels and the tuning database live (default: "
           "$XDG_CACHE_HOME/powerfusion, else ~/.cache/powerfusion)"),
    Option("CC", "gcc", "the C compiler for CPU kernels (a command line: 'ccache gcc' works)"),
    Option("CXX", "g++", "the C++ compiler that builds the torch backend's native glue, once "
           "per torch version (a command line: 'ccache g++' works)"),
    Option("POWERFUSION_OPENCL_DEVICE", None,
           "the OpenCL device: 'platform:device' indices or a part of its name "
           "(default: the first device found)"),
    Option("POWERFUSION_KEEP_FREED_MEMORY", True,
           "0: leave glibc's malloc as it is; by default torch.compile(backend="
           "'powerfusion') makes it keep freed memory for reuse (runtime/host_memory.py: "
           "no page faults for each step's fresh tensors)", _switch),
    Option("POWERFUSION_FUSED_ATTENTION", True,
           "0: attention a torch model writes out (matmul, softmax, matmul) stays so in "
           "inference graphs; by default it becomes one scaled_dot_product_attention call "
           "(frontend/torch_backend/attention.py)", _switch),
    Option("POWERFUSION_NATIVE_GLUE", True,
           "0: torch.compile graphs call their kernels and pooled matmuls through Python "
           "(frontend/torch_backend/launcher.py) instead of the C++ glue built once per "
           "torch version (native_launch.cpp)", _switch),
    Option("POWERFUSION_RECOMPUTE", True,
           "0: a training graph's backward reads every forward value it needs as saved; by "
           "default AOTAutograd's min-cut partitioner saves fewer and recomputes cheap ones "
           "(views, element-wise chains) in the backward, where they fuse",
           _switch),
    Option("POWERFUSION_SIMT_CLUSTERS", True,
           "0: plan SIMT kernels without thread block clusters", _switch),
    Option("POWERFUSION_SIMT_ROW_REGISTERS", True,
           "0: rows kept in registers do not count towards what a SIMT block holds",
           _switch),
    Option("POWERFUSION_SIMT_VECTOR", True,
           "0: SIMT kernels load and store one element per thread (no 128-bit chunks)",
           _switch),
    Option("POWERFUSION_SIMT_ITEMS", 16,
           "elements of a row per thread that SIMT block sizes aim at", _positive_int),
    Option("POWERFUSION_SIMT_ROWS", 8,
           "short rows per SIMT block, one per warp (1: one row per block)", _positive_int),
]}


def get(name: str):
    """The value of option `name` now: parsed from the environment, else its default."""
    option = OPTIONS.get(name)
    if option is None:
        raise KeyError(f"{name!r} is not a PowerFusion option; known: {sorted(OPTIONS)}")
    text = os.environ.get(name, "").strip()
    if not text:
        return option.default
    try:
        return option.parse(text)
    except ValueError as exc:
        raise OptionError(f"${name}={text!r}: {exc}") from None


def describe() -> list[tuple[str, str, str]]:
    """(name, value in effect or "invalid: why", meaning) for every option."""
    rows = []
    for name, option in OPTIONS.items():
        try:
            value = get(name)
            shown = "" if value is None else str(int(value)) if isinstance(value, bool) \
                else str(value)
        except OptionError as exc:
            shown = "invalid: " + str(exc).split(": ", 1)[1]
        rows.append((name, shown, option.doc))
    return rows
