"""CPU runtime: C source in, callable kernel out.

Every kernel has the C signature `void entry(void **args)`: one array of data
pointers, in the order the code generator chose. Shared objects are cached on
disk (see cache.py) under a key of source, compiler identity and flags, and
each is dlopened once per process. An entry that passes the cache's digest check
yet fails to load is deleted and built once more.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .. import options
from ..errors import CompileError
from ..targets import detect_cpu
from .cache import DiskCache, cache_dir, cache_key, keep_source


def _vector_width_flags() -> tuple[str, ...]:
    """gcc's tuning for some AVX-512 CPUs prefers 256-bit vectors; the passes plan for the
    Target's SIMD width (the sums pass's blocks, register budgets), so the code uses it."""
    simd = detect_cpu().simd_bytes
    return (f"-mprefer-vector-width={simd * 8}",) if simd > 16 else ()


DEFAULT_FLAGS: tuple[str, ...] = (
    "-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
    # x * y + z rounds twice, as numpy's does: no fused multiply-add the source does not
    # ask for (pf_math.h asks for its own), so a value comes out the same wherever it is
    # computed and the same as numpy's
    "-ffp-contract=off",
    *_vector_width_flags(),
    "-fPIC", "-shared", "-std=gnu11",
    # a helper the generated code calls but the header lacks must fail here, not at dlopen
    "-Werror=implicit-function-declaration",
)
LIBS: tuple[str, ...] = ("-lm",)     # after the source, where the linker wants them
COMPILE_TIMEOUT_S = 120.0

# how often this process ran the compiler and how often the disk cache answered
stats = {"compiles": 0, "disk_hits": 0}

_loaded: dict[str, ctypes.CDLL] = {}   # cache key -> library, so each .so is opened once
_loaded_lock = threading.Lock()


def compiler_command() -> list[str]:
    """`$CC` (may hold arguments, e.g. "ccache gcc"), else gcc."""
    return shlex.split(options.get("CC"))


@functools.cache
def _identity(cc: tuple[str, ...]) -> str:
    version = command_output([*cc, "--version"]).splitlines()
    parts = [version[0] if version else "unknown compiler"]
    # -march=native means different code on different machines: key on what it resolves to
    target = command_output([*cc, "-march=native", "-Q", "--help=target"])
    march = re.search(r"^\s*-march=\s+(\S+)", target, re.MULTILINE)
    if march:
        parts.append(f"march={march.group(1)}")
    parts.append("target=" + cache_key(target, _cpu_flags())[:16])
    return " ".join(parts)


def compiler_identity() -> str:
    """Compiler version plus the CPU that `-march=native` targets; cached per process."""
    return _identity(tuple(compiler_command()))


def command_output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                              check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def compile_shared(source: str, *, name: str = "kernel",
                   flags: Sequence[str] = DEFAULT_FLAGS) -> Path:
    """Path of a cached shared object built from `source`; compiles when absent.

    Raises CompileError (command, stderr, kept source) when the compiler fails.
    """
    return _compile(source, name, tuple(flags))[1]


def _compile(source: str, name: str, flags: tuple[str, ...]) -> tuple[str, Path]:
    cc = compiler_command()
    key = cache_key(source, compiler_identity(), " ".join(cc), "\0".join(flags), name)
    cache = DiskCache(cache_dir() / "cpu")
    path = cache.lookup(key, ".so")
    if path is not None:
        stats["disk_hits"] += 1
        return key, path
    build = functools.partial(_run_compiler, cc, source, name, flags, key=key)
    return key, cache.store(key, ".so", build)


def _run_compiler(cc: list[str], source: str, name: str, flags: tuple[str, ...],
                  out: Path, key: str) -> None:
    stats["compiles"] += 1
    # a fixed file name in the cache's private scratch dir (out's): the .so embeds the
    # source's base name, so racing processes still produce identical bytes
    src = out.parent / f"{name}.c"
    src.write_text(source)
    command = [*cc, *flags, "-o", str(out), str(src), *LIBS]
    try:
        returncode, stderr = bounded_run(command)
    except subprocess.TimeoutExpired as exc:
        raise _failure(f"compiler timed out after {COMPILE_TIMEOUT_S:g} s", command,
                       _text(exc.stderr), source, name, key) from None
    except OSError as exc:
        raise _failure(f"cannot run the C compiler ({exc}); install gcc or set $CC",
                       command, "", source, name, key) from None
    if returncode != 0:
        hint = " (it ran out of its memory limit)" if "memory" in stderr.lower() else ""
        raise _failure(f"C compiler failed with exit status {returncode}{hint}",
                       command, stderr, source, name, key)


COMPILE_MEMORY_BYTES = 4 << 30   # gcc needs well under 1 GB for any kernel we generate;
                                 # some chains (x ** (2**31 - 1) of a bool sum) send it
                                 # past 15 GB: it fails fast instead of taking the machine


def bounded_run(command: list[str]) -> tuple[int, str]:
    """Run the compiler in its own process group, under a memory limit (set by the shell:
    a preexec_fn is unsafe while other threads run); on timeout the whole group goes
    (killing only the gcc driver would leave cc1 running)."""
    if shutil.which(command[0]) is None:
        raise FileNotFoundError(errno.ENOENT, "not found", command[0])
    limited = ["/bin/sh", "-c", f'ulimit -v {COMPILE_MEMORY_BYTES >> 10} && exec "$@"',
               "sh", *command]
    proc = subprocess.Popen(limited, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        raise subprocess.TimeoutExpired(command, COMPILE_TIMEOUT_S, stderr=stderr) from None
    return proc.returncode, stderr


def _failure(message: str, command: list[str], stderr: str, source: str,
             name: str, key: str) -> CompileError:
    """A CompileError whose source is kept under <cache>/failed/ for inspection."""
    kept = keep_source(f"{name}-{key[:16]}.c", source)
    if kept is not None:
        command = [kept if arg.endswith(f"{os.sep}{name}.c") else arg for arg in command]
    return CompileError(message, command=command, stderr=stderr, source_path=kept)


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _library(source: str, name: str, flags: Sequence[str]) -> tuple[ctypes.CDLL, Path]:
    key, path = _compile(source, name, tuple(flags))
    with _loaded_lock:
        lib = _loaded.get(key)
        if lib is None:
            lib, path = _open(source, name, tuple(flags), key, path)
            _loaded[key] = lib
    return lib, path


def _open(source: str, name: str, flags: tuple[str, ...], key: str,
          path: Path) -> tuple[ctypes.CDLL, Path]:
    """dlopen the cached library. One that passed the digest check yet does not load
    (garbage published with its sidecar, or removed since) is rebuilt once."""
    try:
        return ctypes.CDLL(str(path)), path
    except OSError as exc:
        first = exc
    DiskCache(path.parent).discard(key, ".so")
    key, path = _compile(source, name, flags)
    try:
        return ctypes.CDLL(str(path)), path
    except OSError as exc:
        raise CompileError(f"the freshly built library does not load: {exc} (the cached one "
                           f"did not either: {first})") from None


class CpuKernel:
    """One entry point `void entry(void **args)` of a loaded library.

    Calls release the GIL (plain ctypes.CDLL functions do). The pointer array
    is preallocated per thread, so concurrent calls from threads stay safe.
    """

    def __init__(self, fn, n_args: int | None, entry: str, path: Path):
        fn.restype = None
        fn.argtypes = None          # we always pass a c_void_p array; skip conversions
        self._fn = fn
        # the ctypes function itself, for callers that build their own pointer array per
        # call (`(ctypes.c_void_p * n)(*pointers)`): one Python call less per launch
        self.c_function = fn
        self.n_args = n_args
        self.entry = entry
        self.path = path
        self._local = threading.local()

    def __call__(self, pointers: Sequence[int]) -> None:
        args = getattr(self._local, "args", None)
        if args is None or len(args) != len(pointers):
            args = self._local.args = self._new_args(len(pointers))
        args[:] = pointers
        self._fn(args)

    def _new_args(self, n: int) -> ctypes.Array:
        if self.n_args is not None and n != self.n_args:
            raise ValueError(f"kernel {self.entry} takes {self.n_args} pointers, got {n}")
        return (ctypes.c_void_p * n)()

    def time(self, pointers: Sequence[int], repeat: int = 20, warmup: int = 2) -> float:
        """Median wall time of one call, in seconds (what the tuner compares)."""
        for _ in range(warmup):
            self(pointers)
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            self(pointers)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    def __repr__(self) -> str:
        return f"CpuKernel({self.entry!r}, n_args={self.n_args}, path='{self.path}')"


def load_kernel(source: str, entry: str, n_args: int | None = None, *,
                name: str = "kernel", flags: Sequence[str] = DEFAULT_FLAGS) -> CpuKernel:
    """Compile (cached), load once per process, and wrap `entry`."""
    return load_kernels(source, [entry], name=name, flags=flags, n_args=[n_args])[entry]


def load_kernels(source: str, entries: Sequence[str], *, name: str = "kernel",
                 flags: Sequence[str] = DEFAULT_FLAGS,
                 n_args: Sequence[int | None] | None = None) -> dict[str, CpuKernel]:
    """Several entry points of one translation unit, compiled once."""
    lib, path = _library(source, name, flags)
    counts = list(n_args) if n_args is not None else [None] * len(entries)
    kernels = {}
    for entry, count in zip(entries, counts, strict=True):
        try:
            fn = lib[entry]     # a fresh function object per kernel
        except AttributeError:
            raise CompileError(f"entry point {entry!r} not found in the compiled library",
                               source_path=str(path)) from None
        kernels[entry] = CpuKernel(fn, count, entry, path)
    return kernels
