"""OpenCL runtime through pyopencl: device, compiler, kernel, allocator.

The device is the first platform's first device, or the one `$POWERFUSION_OPENCL_DEVICE`
names: "P:D" (platform and device index) or a case-insensitive substring of
"<platform> <device>". Built programs are cached per source in this process;
pyopencl keeps the binaries on disk itself. A build failure raises CompileError with
the build log and the path of the kept source.
"""

from __future__ import annotations

import functools
import statistics
import threading
from dataclasses import dataclass

import numpy as np

from .. import options
from ..errors import CompileError, UnsupportedError
from .cache import cache_key, keep_source

DEVICE_ENV = "POWERFUSION_OPENCL_DEVICE"
BUILD_OPTIONS: tuple[str, ...] = ()      # no fast-math: NaN and infinities keep numpy's meaning


def _cl():
    # PoCL runs with as many threads as it likes: the reductions that once came out wrong
    # when its work-groups ran concurrently were PoCL 3.x keeping a __local array used by
    # an out-of-line helper as one static variable for all its threads; the printer
    # inlines those helpers (OpenCLPrinter.header, codegen/simt.py).
    try:
        import pyopencl
    except ImportError:
        raise UnsupportedError("target='opencl' needs pyopencl (pip install pyopencl) and an "
                               "OpenCL driver (e.g. Debian's pocl-opencl-icd)") from None
    return pyopencl


@dataclass(frozen=True)
class OpenCLDevice:
    context: object
    queue: object
    device: object

    @property
    def name(self) -> str:
        return f"{self.device.platform.name.strip()} {self.device.name.strip()}"


@functools.cache
def device() -> OpenCLDevice:
    """The OpenCL device PowerFusion runs on (one per process)."""
    cl = _cl()
    try:
        platforms = cl.get_platforms()
    except cl.Error as exc:
        raise UnsupportedError(f"no OpenCL platform is installed ({exc}); install an ICD, "
                               "e.g. apt-get install pocl-opencl-icd") from None
    found = [(k, j, d) for k, p in enumerate(platforms) for j, d in enumerate(_devices(p))]
    if not found:
        raise UnsupportedError("no OpenCL device found; install an ICD, e.g. "
                               "apt-get install pocl-opencl-icd")
    wanted = options.get(DEVICE_ENV) or ""
    chosen = found[0][2]
    if wanted:
        match = [d for k, j, d in found if wanted == f"{k}:{j}"
                 or wanted.lower() in f"{d.platform.name} {d.name}".lower()]
        if not match:
            names = ", ".join(f"{k}:{j} {d.platform.name.strip()} {d.name.strip()}"
                              for k, j, d in found)
            raise UnsupportedError(f"${DEVICE_ENV}={wanted!r} matches no OpenCL device; "
                                   f"found: {names}")
        chosen = match[0]
    context = cl.Context([chosen])
    queue = cl.CommandQueue(context, chosen,
                            properties=cl.command_queue_properties.PROFILING_ENABLE)
    return OpenCLDevice(context, queue, chosen)


def _devices(platform) -> list:
    try:
        return platform.get_devices()
    except Exception:       # a platform without devices raises DEVICE_NOT_FOUND
        return []


# -- compiler --------------------------------------------------------------------------------
_programs: dict[str, object] = {}
_programs_lock = threading.Lock()


def build_options(dev: "OpenCLDevice") -> tuple[str, ...]:
    """BUILD_OPTIONS, and float32 division and square roots rounded correctly, as numpy's
    are (OpenCL allows 2.5 ULP otherwise), where the device can."""
    cl = _cl()
    exact = dev.device.single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT
    return BUILD_OPTIONS + (("-cl-fp32-correctly-rounded-divide-sqrt",) if exact else ())


def build(source: str):
    """The built cl.Program for source (cached per source and device in this process)."""
    cl = _cl()
    dev = device()
    options = build_options(dev)
    key = cache_key(source, " ".join(options), dev.name)
    with _programs_lock:
        program = _programs.get(key)
        if program is not None:
            return program
        program = cl.Program(dev.context, source)
        try:
            program.build(options=list(options))
        except cl.Error as exc:
            raise _failure(source, program, dev, exc, key, options) from None
        _programs[key] = program
        return program


def _failure(source: str, program, dev: OpenCLDevice, exc, key: str,
             options: tuple[str, ...]) -> CompileError:
    try:
        log = program.get_build_info(dev.device, _cl().program_build_info.LOG)
    except Exception:
        log = ""
    kept = keep_source(f"opencl-{key[:16]}.cl", source)
    return CompileError(f"OpenCL build failed on {dev.name}",
                        command=["clBuildProgram", *options],
                        stderr=(log or str(exc)).strip(), source_path=kept)


# -- kernels ---------------------------------------------------------------------------------
class OpenCLKernel:
    """One kernel of a built program, launched on device buffers."""

    def __init__(self, program, name: str):
        self._kernel = _cl().Kernel(program, name)
        self.name = name
        self._lock = threading.Lock()

    def __call__(self, grid: int, block: int, args: list):
        """Enqueue grid blocks of block threads; returns the event."""
        with self._lock:
            self._kernel.set_args(*args)
            return _cl().enqueue_nd_range_kernel(device().queue, self._kernel,
                                                 (grid * block,), (block,))

    def time(self, grid: int, block: int, args: list, repeat: int = 20,
             warmup: int = 2) -> float:
        """Median device time of one launch, in seconds (what the tuner compares)."""
        for _ in range(warmup):
            self(grid, block, args)
        samples = []
        for _ in range(repeat):
            event = self(grid, block, args)
            event.wait()
            samples.append((event.profile.end - event.profile.start) * 1e-9)
        return statistics.median(samples)


# -- allocator -------------------------------------------------------------------------------
def to_device(array: np.ndarray):
    """A device copy of an array (at least one byte), uploaded before this returns.

    An explicit blocking copy, not COPY_HOST_PTR on a temporary: an implementation
    may defer that copy until after the temporary is gone.
    """
    cl = _cl()
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    buffer = cl.Buffer(device().context, cl.mem_flags.READ_ONLY, size=max(1, data.size))
    if data.size:
        cl.enqueue_copy(device().queue, buffer, data, is_blocking=True)
    return buffer


def empty(nbytes: int):
    cl = _cl()
    return cl.Buffer(device().context, cl.mem_flags.READ_WRITE, size=max(1, nbytes))


def to_host(buffer, out: np.ndarray) -> None:
    """Copy a device buffer into the C-contiguous array out (blocking)."""
    if out.nbytes:
        _cl().enqueue_copy(device().queue, out.reshape(-1).view(np.uint8), buffer)
