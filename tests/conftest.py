"""Fixtures for every test: a private kernel cache, a seeded generator, the helpers.

Helpers (tolerances, references, layouts) live in `helpers.py` so test modules can
import them by name: `from helpers import assert_close, make`.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
from helpers import assert_close  # noqa: F401 - re-exported for `from conftest import ...`

_CACHE_ENV = "POWERFUSION_CACHE_DIR"


@pytest.fixture(scope="session", autouse=True)
def _private_kernel_cache(tmp_path_factory):
    """Compiled kernels go to a session-wide temporary directory, never the user's cache.
    Subprocesses started by tests inherit it through the environment."""
    cache = tmp_path_factory.mktemp("powerfusion-cache")
    old = os.environ.get(_CACHE_ENV)
    os.environ[_CACHE_ENV] = str(cache)
    yield cache
    if old is None:
        os.environ.pop(_CACHE_ENV, None)
    else:
        os.environ[_CACHE_ENV] = old


@pytest.fixture
def fresh_torch():
    """For torch.compile tests (`pytestmark = pytest.mark.usefixtures("fresh_torch")`):
    dynamo's caches and PowerFusion's counters reset before, dynamo's again after, and
    torch's generator seeded."""
    torch = pytest.importorskip("torch")
    import powerfusion as pf

    torch._dynamo.reset()
    pf.reset_compile_stats()
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()


@pytest.fixture(params=["native", "python"])
def glue(request, monkeypatch):
    """The test runs twice: with the native glue (torch_backend/native_launch.cpp; built
    on first need: where it does not build the test fails in CI and skips elsewhere, a
    machine without g++ or Python's headers) and with the Python glue
    (POWERFUSION_NATIVE_GLUE=0). The native module, or None."""
    pytest.importorskip("torch")
    from powerfusion.frontend.torch_backend import native

    if request.param == "python":
        monkeypatch.setenv("POWERFUSION_NATIVE_GLUE", "0")
        return None
    monkeypatch.delenv("POWERFUSION_NATIVE_GLUE", raising=False)
    module = native.module()
    if module is None and not os.environ.get("CI"):
        pytest.skip("the native glue does not build here (see the powerfusion warning)")
    assert module is not None, "the native glue did not build: see the powerfusion warning"
    return module


@pytest.fixture
def kernel_cache(_private_kernel_cache):
    """The session's kernel cache directory (a pathlib.Path)."""
    return _private_kernel_cache


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: reproducible, different per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
