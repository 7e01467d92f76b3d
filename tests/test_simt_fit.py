"""Every candidate the search can produce fits the SIMT target it is for (shared memory
per block), or gives way to one that does: random shapes of the kernels whose on-chip
rows grow with the shape (column and row normalisations, sums, transposes), planned
for CUDA, HIP and OpenCL, printed, and run on OpenCL (PoCL) against numpy."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import powerfusion as pf
from powerfusion.frontend import trace
from powerfusion.runtime.simt_executable import simt_target
from powerfusion.search.cost import fits_shared
from powerfusion.search.space import candidate_plans

KERNELS = {
    "column l2-normalise": lambda x: x / np.sqrt((x * x).sum(axis=0, keepdims=True)),
    "column softmax": lambda x: np.exp(x - x.max(axis=0, keepdims=True)) /
    np.exp(x - x.max(axis=0, keepdims=True)).sum(axis=0, keepdims=True),
    "row layernorm": lambda x: (x - x.mean(-1, keepdims=True)) /
    np.sqrt(x.var(-1, keepdims=True) + 1e-5),
    "row softmax": lambda x: np.exp(x - x.max(-1, keepdims=True)) /
    np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True),
    "column sum and transpose": lambda x: (x.sum(axis=0), x.T * 2),
}


def _shapes(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        rows = int(rng.choice([1, 3, 37, 700, 4099, 20000, 70000]))
        cols = int(rng.choice([1, 5, 96, 257, 1024, 4096]))
        if rows * cols <= 1 << 23:
            yield rows, cols


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("dialect", ["cuda", "hip", "opencl"])
def test_every_candidate_fits_the_target(name, dialect):
    target = simt_target(dialect)
    for shape in _shapes(zlib.crc32(f"{name} {dialect}".encode()), 6):
        x = np.zeros(shape, np.float32)
        graph, _ = trace(KERNELS[name], (x,))
        strides = [(shape[1], 1)]
        candidates = candidate_plans(graph, strides, target, ("local", "global"),
                                     (False, True))
        assert candidates
        for candidate, plan, _ in candidates:
            assert fits_shared(plan), (name, shape, candidate.label)
        pf.explain(KERNELS[name], x, target=dialect)      # prints without UnsupportedError


def test_the_reported_column_normalise_falls_back_on_cuda():
    """700 x 96 column L2-normalise: the column stash was sized by the global stride
    (67105 floats, 268 KB > the H100's block) instead of the column (700)."""
    x = np.random.default_rng(0).random((700, 96), dtype=np.float32)
    f = KERNELS["column l2-normalise"]
    report = pf.explain(f, x, target="cuda")
    assert report.global_bytes == 2 * x.nbytes


@pytest.mark.parametrize("name", KERNELS)
def test_fitted_plans_compute_the_same_on_opencl(name):
    from helpers import opencl_or_skip

    opencl_or_skip()
    rng = np.random.default_rng(1)
    for shape in [(700, 96), (4099, 5), (3, 4096)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        got, want = pf.jit(KERNELS[name], target="opencl")(x), KERNELS[name](x)
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)
