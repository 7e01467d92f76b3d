"""The native glue (native_launch.cpp), built once per torch and Python version into the
kernel cache and loaded on first need; None where it cannot be (no C++ compiler, no
torch headers, a build failure: one warning), and the Python glue runs instead.

`POWERFUSION_NATIVE_GLUE=0` keeps the Python glue (what the tests compare against).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shlex
import sys
import sysconfig
import threading
from pathlib import Path

from ... import options
from ...errors import CompileError
from ...runtime.cache import DiskCache, cache_dir, cache_key
from ...runtime.cpu import bounded_run
from .. import torch_stats as stats
from .support import logger

NAME = "powerfusion_torch_launch"
SOURCE = Path(__file__).with_name("native_launch.cpp")

_lock = threading.Lock()
_state: dict = {}


def module():
    """The built extension module, or None (the Python glue then)."""
    if not options.get("POWERFUSION_NATIVE_GLUE"):
        return None
    if "module" not in _state:
        with _lock:
            if "module" not in _state:
                _state["module"] = _load()
    return _state["module"]


def loaded():
    """The module if this process has loaded it (whatever the option says now), or None."""
    return _state.get("module")


def _command() -> tuple[list[str], list[str]]:
    """(the compiler and its flags, the link flags) for an extension of this torch."""
    import torch
    from torch.utils import cpp_extension

    cxx = shlex.split(options.get("CXX"))
    includes = [*cpp_extension.include_paths(), sysconfig.get_paths()["include"]]
    flags = [*cxx, "-O2", "-shared", "-fPIC", "-std=c++20", "-w",
             f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
             *[f"-I{p}" for p in includes]]
    libs = [*[f"-L{p}" for p in cpp_extension.library_paths()],
            *[f"-Wl,-rpath,{p}" for p in cpp_extension.library_paths()],
            "-ltorch", "-ltorch_cpu", "-lc10", "-ltorch_python"]
    return flags, libs


def _build(out: Path) -> None:
    command, libs = _command()
    source = out.parent / SOURCE.name
    source.write_text(SOURCE.read_text())
    returncode, stderr = bounded_run([*command, "-o", str(out), str(source), *libs])
    if returncode != 0:
        raise CompileError(f"{command[0]} failed with exit status {returncode}: "
                           f"{stderr.strip()[-2000:]}")


def _load():
    try:
        import torch

        command, libs = _command()
        key = cache_key(SOURCE.read_text(), torch.__version__, sys.version, *command, *libs)
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        path = DiskCache(cache_dir() / "torch").get_or_create(key, suffix, _build)
        spec = importlib.util.spec_from_file_location(
            NAME, path, loader=importlib.machinery.ExtensionFileLoader(NAME, str(path)))
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        return loaded
    except Exception as e:               # noqa: BLE001 - the Python glue is as right
        reason = f"{type(e).__name__}: {e}"
        if stats.first_time(("native glue", reason)):
            logger.warning("PowerFusion: building the native glue failed, the Python glue "
                           "runs instead: %s", reason)
        return None
