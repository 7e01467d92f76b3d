"""CUDA runtime through NVIDIA's cuda-python: NVRTC compile (cuda.core), load, launch.

A plan runs on torch CUDA tensors (on torch's current stream; results are torch
tensors), on anything with `__cuda_array_interface__` (CuPy; results are torch tensors
when torch is there), or on numpy arrays (copied in and out: the executable contract,
execute.py). cubins are cached on disk under a key of the source, the
GPU architecture and the NVRTC version.

Nothing here is imported until a CUDA plan runs: machines without a GPU or without
cuda-python never load it. It has not run on a GPU in this repository's CI.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

from ..errors import CompileError, UnsupportedError
from ..gir.interpreter import as_storage
from ..gir.ir import Role
from .cache import DiskCache, cache_dir, cache_key, keep_source
from .execute import execute

MAX_STATIC_SHARED = 48 * 1024      # beyond this a kernel must opt in to dynamic shared memory
ALIGN = 16          # kernels move 128-bit vectors: every buffer's element 0 is this aligned


def _core():
    try:
        import cuda.core as core
        if not hasattr(core, "Program"):            # cuda.core < 0.3
            import cuda.core.experimental as core
    except ImportError:
        raise UnsupportedError("target='cuda' needs NVIDIA's cuda-python: "
                               "pip install cuda-python cuda-core") from None
    return core


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError:                             # cuda-python < 12.6
        from cuda import cuda as driver
    return driver


def _check(result):
    """The value of a cuda.bindings call, raising on an error status."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA driver error {err}")
    return rest[0] if len(rest) == 1 else rest


@functools.cache
def device():
    core = _core()
    try:
        dev = core.Device()
        dev.set_current()
    except Exception as exc:
        raise UnsupportedError(f"target='cuda': no usable CUDA device ({exc})") from None
    return dev


def _arch() -> str:
    major, minor = device().compute_capability
    return f"sm_{major}{minor}"


# -- compiler --------------------------------------------------------------------------------
_modules: dict[str, object] = {}
_lock = threading.Lock()


def load(source: str):
    """The loaded module (cuda.core ObjectCode) of source; NVRTC runs once per disk key."""
    core = _core()
    arch = _arch()
    key = cache_key(source, arch, ".".join(map(str, _nvrtc_version())))
    with _lock:
        if key in _modules:
            return _modules[key]
        cache = DiskCache(cache_dir() / "cuda")
        cubin = cache.read(key, ".cubin")   # bytes the sidecar vouches for under this key
        if cubin is None:
            cubin = _nvrtc(core, source, arch, key)
            cache.publish(key, ".cubin", cubin)
        _modules[key] = core.ObjectCode.from_cubin(cubin)
        return _modules[key]


def _nvrtc_version() -> tuple[int, ...]:
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        from cuda import nvrtc
    return tuple(_check(nvrtc.nvrtcVersion()))


def _nvrtc(core, source: str, arch: str, key: str) -> bytes:
    options = core.ProgramOptions(arch=arch, std="c++17")
    try:
        return bytes(core.Program(source, code_type="c++", options=options)
                     .compile("cubin").code)
    except Exception as exc:
        kept = keep_source(f"cuda-{key[:16]}.cu", source)
        hint = (" (its kernels use thread block clusters: POWERFUSION_SIMT_CLUSTERS=0 "
                "plans without them)" if "__cluster_dims__(" in source else "")
        raise CompileError(f"NVRTC failed for {arch}{hint}",
                           command=["nvrtc", f"--gpu-architecture={arch}"],
                           stderr=str(exc), source_path=kept) from None


def _allow_shared(kernel, nbytes: int) -> None:
    if nbytes <= MAX_STATIC_SHARED:
        return
    driver = _driver()
    attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    handle = getattr(kernel, "handle", None) or kernel._handle
    if isinstance(handle, driver.CUkernel):
        _check(driver.cuKernelSetAttribute(attr, nbytes, handle, device().device_id))
    else:
        _check(driver.cuFuncSetAttribute(handle, attr, nbytes))


class _TorchStream:
    """torch's current stream, in the protocol cuda.core accepts."""

    def __init__(self, handle: int):
        self.handle = handle

    def __cuda_stream__(self):
        return (0, self.handle)


@functools.cache
def _stream_of(handle: int):
    """cuda.core's view of a torch stream (one wrapper per stream, made once)."""
    return device().create_stream(_TorchStream(handle))


@functools.cache
def _multiprocessors() -> int:
    return device().properties.multiprocessor_count


# -- executable ------------------------------------------------------------------------------
class CudaExecutable:
    """A plan's kernels in one CUDA module, loaded on first run."""

    def __init__(self, plan, module):
        self.plan, self.module, self.source = plan, module, module.source
        self._kernels = None

    def kernels(self) -> dict:
        """name -> (cuda.core Kernel, LaunchConfig), made once."""
        if self._kernels is None:
            core = _core()
            code = load(self.source)
            self._kernels = {}
            for k in self.module.kernels:
                kernel = code.get_kernel(k.name)
                _allow_shared(kernel, k.shared_bytes)
                config = core.LaunchConfig(grid=k.grid(_multiprocessors()), block=k.block,
                                           shmem_size=k.shared_bytes)
                self._kernels[k.name] = (kernel, config)
        return self._kernels

    def _launch(self, program, pointers: dict[str, int], stream) -> None:
        kernel, config = self.kernels()[program.name]
        args = [np.uint64(pointers[p.name]) for p in program.params]   # 8-byte pointers
        _core().launch(stream, config, kernel, *args)

    def run(self, inputs):
        """numpy in, numpy out (copies); torch CUDA tensors or CUDA arrays in, torch out."""
        if inputs and all(_on_gpu(a) for a in inputs):
            return self._run_on_device(inputs)
        return self._run_from_host(inputs)

    def _run_from_host(self, inputs) -> list[np.ndarray]:
        driver = _driver()
        stream = device().default_stream
        allocations: dict[str, tuple[int, int, int]] = {}  # name -> (pointer, base, raw)

        def launch(program, arrays) -> None:
            pointers = {}
            for p in program.params:
                if p.name not in allocations:
                    array = arrays[p.name]
                    flat, base = as_storage(array) if p.role is Role.INPUT else (array, 0)
                    flat = np.ascontiguousarray(flat)
                    raw = int(_check(driver.cuMemAlloc(flat.nbytes + ALIGN)))
                    ptr = raw + (-base * p.dtype.itemsize) % ALIGN   # element 0 aligned
                    if p.role is Role.INPUT and flat.nbytes:
                        _check(driver.cuMemcpyHtoD(ptr, flat.ctypes.data, flat.nbytes))
                    allocations[p.name] = (ptr, base, raw)
                ptr, base, _ = allocations[p.name]
                pointers[p.name] = ptr + base * p.dtype.itemsize
            self._launch(program, pointers, stream)
            stream.sync()
            for p in program.params:
                if p.role is not Role.INPUT and p.name in self.plan.buffers \
                        and arrays[p.name].nbytes:
                    _check(driver.cuMemcpyDtoH(arrays[p.name].ctypes.data,
                                               allocations[p.name][0], arrays[p.name].nbytes))

        try:
            return execute(self.plan, inputs, launch)
        finally:
            for _, _, raw in allocations.values():
                driver.cuMemFree(raw)

    def _run_on_device(self, inputs):
        import torch

        return self.run_device([a if isinstance(a, torch.Tensor)
                                else torch.as_tensor(a, device="cuda") for a in inputs])

    def run_device(self, tensors: list) -> list:
        """torch CUDA tensors in (with the strides the plan was made for), torch tensors
        out, launched on torch's current stream. Kept lean: it is the per-call cost of
        every jitted call on CUDA tensors."""
        import torch

        tensors = [_aligned(t) for t in tensors]
        device = tensors[0].device
        stream = _stream_of(_current_stream(torch, device.index))
        values = dict(zip(self.plan.input_names, tensors))
        for name, shape, dtype in self._allocations:
            values[name] = torch.empty(shape, dtype=dtype, device=device)
        launch = _core().launch
        for names, kernel, config in self._launches:
            launch(stream, config, kernel, *[np.uint64(values[n].data_ptr()) for n in names])
        outs, seen = [], set()
        for spec, shape in zip(self.plan.outputs, self.plan.out_shapes):
            if spec[0] == "buffer":
                out = values[spec[1]]
                out = out if out.shape == shape else out.view(shape)
                outs.append(out.clone() if spec[1] in seen else out)   # no aliased results
                seen.add(spec[1])
            elif spec[0] == "input":
                outs.append(tensors[spec[1]].reshape(shape).clone())
            else:
                outs.append(torch.full(shape, spec[1], dtype=getattr(torch, str(spec[2])),
                                       device=device))
        return outs

    @functools.cached_property
    def _launches(self) -> list:
        """(parameter names, kernel, launch config) of each kernel with work, in order."""
        kernels = self.kernels()
        return [([p.name for p in ck.program.params],) + kernels[ck.program.name]
                for ck in self.plan.kernels if all(ck.kernel.shape)]

    @functools.cached_property
    def _allocations(self) -> list[tuple[str, tuple, object]]:
        """(name, shape, torch dtype) of every buffer the kernels write; a graph output
        gets the output's shape (no view per call)."""
        import torch

        found = {n: b for n, b in self.plan.buffers.items() if b.role is not Role.INPUT}
        for ck in self.plan.kernels:
            for p in ck.program.params if all(ck.kernel.shape) else ():
                if p.name not in found and p.name not in self.plan.input_names:
                    found[p.name] = p
        shapes = {n: tuple(b.shape) for n, b in found.items()}
        for spec, shape in zip(self.plan.outputs, self.plan.out_shapes):
            if spec[0] == "buffer" and spec[1] in shapes and \
                    math.prod(shape) == math.prod(shapes[spec[1]]):
                shapes[spec[1]] = tuple(shape)
        return [(n, shapes[n], getattr(torch, str(b.dtype))) for n, b in found.items()]


def _current_stream(torch, index: int | None) -> int:
    """The handle of torch's current CUDA stream (the raw call skips a Stream object)."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:
        return raw(torch.cuda.current_device() if index is None else index)
    return torch.cuda.current_stream(index).cuda_stream


def _aligned(t):
    """t, or a copy of it with the same strides whose element 0 is ALIGN-byte aligned."""
    if t.data_ptr() % ALIGN == 0 or t.numel() == 0:
        return t
    import torch

    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    storage = torch.empty(span, dtype=t.dtype, device=t.device)
    storage.copy_(torch.as_strided(t, (span,), (1,)))
    return storage.as_strided(t.shape, t.stride())


def _on_gpu(a) -> bool:
    if hasattr(a, "is_cuda"):
        return bool(a.is_cuda)
    return hasattr(a, "__cuda_array_interface__")
