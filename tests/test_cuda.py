"""The CUDA runtime on a GPU (these skip, with the reason, where there is none).

Every SIMT graph of test_simt runs from host arrays; torch CUDA tensors go in and come
out on the device, on torch's stream, also when a view starts off the 16-byte
alignment the kernels' vector moves need; mixing host and device arguments is refused.
"""

from __future__ import annotations

import numpy as np
import pytest

import powerfusion as pf
from powerfusion.errors import UnsupportedError
from powerfusion.search.space import plan_graph
from test_simt import (CASES, CLUSTER_CASES, TRANSCENDENTAL, _inputs, _strides,
                       assert_matches_oracle)

torch = pytest.importorskip("torch", reason="torch is not installed")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU: CUDA kernels are only compiled here (see test_simt's nvcc test)",
                allow_module_level=True)
pytest.importorskip("cuda.core", reason="cuda-python (cuda.core) is not installed")


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def rmsnorm(x, w):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + 1e-6) * w


@pytest.mark.parametrize("case", sorted(set(CASES) - {"reversed_softmax"}))
def test_cuda_matches_numpy_from_host_arrays(case, rng):
    from powerfusion.runtime.simt_executable import compile_plan_simt, simt_target

    graph = CASES[case]()
    inputs = _inputs(graph, rng)
    plan = plan_graph(graph, _strides(inputs), simt_target("cuda"))
    got = compile_plan_simt(plan, "cuda").run(inputs)
    assert_matches_oracle(graph, inputs, got, case in TRANSCENDENTAL)


@pytest.mark.parametrize("clusters", ["1", "0"])
@pytest.mark.parametrize("case", sorted(CLUSTER_CASES))
def test_cuda_rows_too_long_for_a_block_match_numpy(case, clusters, rng, monkeypatch):
    """Rows of 128256 and 262144 elements: spread over a thread block cluster on sm_90
    (test_simt checks the kernels take one), and without clusters as before."""
    from powerfusion.runtime.simt_executable import compile_plan_simt, simt_target

    monkeypatch.setenv("POWERFUSION_SIMT_CLUSTERS", clusters)
    graph = CLUSTER_CASES[case]()
    inputs = _inputs(graph, rng)
    target = simt_target("cuda")
    plan = plan_graph(graph, _strides(inputs), target)
    executable = compile_plan_simt(plan, "cuda")
    uses = any(k.cluster > 1 for k in executable.module.kernels)
    assert uses == (clusters == "1" and target.cluster_blocks > 1)
    got = executable.run(inputs)
    assert_matches_oracle(graph, inputs, got, case in TRANSCENDENTAL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_torch_cuda_tensors_stay_on_the_device(dtype, offset):
    """Rows starting `offset` elements into their storage: not 16-byte aligned for 1, 3."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    storage = torch.randn(64 * 1024 + offset, device="cuda", generator=gen).to(dtype)
    x = storage[offset:].view(64, 1024)
    w = (1 + 0.1 * torch.randn(1024, device="cuda", generator=gen)).to(dtype)
    y_soft = pf.jit(softmax, target="cuda")(x)
    y_rms = pf.jit(rmsnorm, target="cuda")(x, w)
    assert y_soft.is_cuda and y_soft.dtype == dtype and y_soft.shape == x.shape
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-3)
    xd = x.double()
    torch.testing.assert_close(y_soft.double(), torch.softmax(xd, -1), **tol)
    ref = xd / torch.sqrt((xd * xd).mean(-1, keepdim=True) + 1e-6) * w.double()
    torch.testing.assert_close(y_rms.double(), ref, **tol)


def test_cuda_runs_on_torchs_current_stream():
    x = torch.randn(256, 4096, device="cuda")
    f = pf.jit(softmax, target="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = f(x)
        z = y * 2          # queued after the kernel on the same stream
    stream.synchronize()
    torch.testing.assert_close(z, 2 * torch.softmax(x, -1), rtol=1e-5, atol=1e-6)


def test_host_and_device_arguments_are_not_mixed():
    x = torch.randn(8, 128, device="cuda")
    with pytest.raises(UnsupportedError, match=r"'w'\): a host array among CUDA tensors"):
        pf.jit(rmsnorm, target="cuda")(x, np.ones(128, np.float32))


def test_cpu_torch_tensors_round_trip_through_the_device():
    x = torch.randn(16, 300)
    y = pf.jit(softmax, target="cuda")(x)
    assert y.device.type == "cpu"
    torch.testing.assert_close(y, torch.softmax(x, -1), rtol=1e-5, atol=1e-6)


def test_torch_compile_backend_runs_regions_on_the_gpu():
    """A small block on CUDA through torch.compile(backend="powerfusion"): the
    memory-bound regions become PowerFusion CUDA kernels, results match eager."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(),
                                torch.nn.Linear(512, 256), torch.nn.LayerNorm(256)).cuda()
    x = torch.randn(64, 256, device="cuda")
    before = pf.compile_stats()["kernels"]
    compiled = torch.compile(block, backend="powerfusion")
    with torch.no_grad():
        got, want = compiled(x), block(x)
    assert got.is_cuda
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert pf.compile_stats()["kernels"] > before
