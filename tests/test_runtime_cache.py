"""CPU runtime and disk cache: compile, load, call, cache hits, corruption, races."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from powerfusion.errors import CompileError
from powerfusion.runtime import cpu
from powerfusion.runtime.cache import DiskCache, cache_dir, cache_key

REPO = Path(__file__).resolve().parents[1]

ADD_SOURCE = """
#include <stddef.h>
void add(void **args) {
    const float *a = args[0], *b = args[1];
    float *out = args[2];
    long n = *(const long *)args[3];
    #pragma omp parallel for
    for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}
void scale(void **args) {
    float *x = args[0];
    long n = *(const long *)args[1];
    for (long i = 0; i < n; i++) x[i] *= 2.0f;
}
"""


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache dir and a fresh per-process library table."""
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu, "_loaded", {})
    monkeypatch.setattr(cpu, "stats", {"compiles": 0, "disk_hits": 0})
    return tmp_path / "cache"


def unique(source: str, tag: str) -> str:
    """The same kernel under a fresh cache key."""
    return f"/* {tag} */\n{source}"


def check_add(kernel: cpu.CpuKernel, n: int = 1000) -> None:
    a = np.arange(n, dtype=np.float32)
    b = np.full(n, 0.5, dtype=np.float32)
    out = np.zeros(n, dtype=np.float32)
    size = np.array([n], dtype=np.int64)
    kernel([a.ctypes.data, b.ctypes.data, out.ctypes.data, size.ctypes.data])
    np.testing.assert_array_equal(out, a + b)


def so_files(cache: Path) -> list[Path]:
    return sorted((cache / "cpu").glob("*.so"))


def test_compile_load_and_call():
    kernel = cpu.load_kernel(ADD_SOURCE, "add", 4, name="add")
    check_add(kernel)
    check_add(kernel, n=3)
    assert cpu.stats["compiles"] == 1
    assert kernel.time([0, 0, 0, np.zeros(1, np.int64).ctypes.data], repeat=3) >= 0


def test_load_kernels_shares_one_library():
    kernels = cpu.load_kernels(ADD_SOURCE, ["add", "scale"])
    check_add(kernels["add"])
    x = np.ones(5, np.float32)
    kernels["scale"]([x.ctypes.data, np.array([5], np.int64).ctypes.data])
    np.testing.assert_array_equal(x, np.full(5, 2.0, np.float32))
    assert cpu.stats["compiles"] == 1


def test_wrong_pointer_count_is_refused():
    kernel = cpu.load_kernel(ADD_SOURCE, "add", 4)
    with pytest.raises(ValueError, match="takes 4 pointers, got 3"):
        kernel([0, 0, 0])


def test_missing_entry_point():
    with pytest.raises(CompileError, match="'nope' not found"):
        cpu.load_kernel(ADD_SOURCE, "nope")


def test_cache_hit_skips_the_compiler(monkeypatch, private_cache):
    check_add(cpu.load_kernel(ADD_SOURCE, "add", 4))
    assert cpu.stats["compiles"] == 1
    # a fresh process table: the .so must come from disk, not from the compiler
    monkeypatch.setattr(cpu, "_loaded", {})
    monkeypatch.setattr(cpu, "_run_compiler", lambda *a, **k: pytest.fail("compiler ran"))
    check_add(cpu.load_kernel(ADD_SOURCE, "add", 4))
    assert cpu.stats == {"compiles": 1, "disk_hits": 1}
    assert len(so_files(private_cache)) == 1


def test_key_covers_flags_and_source(private_cache):
    cpu.compile_shared(ADD_SOURCE)
    cpu.compile_shared(ADD_SOURCE, flags=(*cpu.DEFAULT_FLAGS, "-DVARIANT=1"))
    cpu.compile_shared(unique(ADD_SOURCE, "other"))
    assert cpu.stats["compiles"] == 3
    assert len(so_files(private_cache)) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "no_sidecar", "bad_sidecar"])
def test_corrupt_entry_is_rebuilt(damage, monkeypatch, private_cache):
    path = cpu.compile_shared(ADD_SOURCE)
    sidecar = path.with_name(path.name + ".sha256")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x7fELF not really" * 100)
    elif damage == "flip":      # same size, one byte changed
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "no_sidecar":
        sidecar.unlink()
    else:
        sidecar.write_text("0" * 64 + f" {len(data)}\n")
    kernel = cpu.load_kernel(ADD_SOURCE, "add", 4)
    assert cpu.stats["compiles"] == 2
    assert path.read_bytes() == data        # rebuilt byte for byte (gcc is deterministic)
    check_add(kernel)


def test_disk_cache_store_and_lookup(tmp_path):
    cache = DiskCache(tmp_path / "dc")
    key = cache_key("some", "parts")
    assert cache.lookup(key, ".bin") is None
    path = cache.store(key, ".bin", lambda tmp: tmp.write_bytes(b"payload"))
    assert cache.lookup(key, ".bin") == path and path.read_bytes() == b"payload"
    assert [p.name for p in (tmp_path / "dc").iterdir() if p.name.endswith(".tmp")] == []
    # a producer that fails leaves nothing behind
    with pytest.raises(RuntimeError):
        cache.store("k2", ".bin", lambda tmp: (_ for _ in ()).throw(RuntimeError("boom")))
    assert cache.lookup("k2", ".bin") is None
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "dc").iterdir())


def test_cache_key_is_unambiguous():
    assert cache_key("ab", "c") != cache_key("a", "bc")
    assert cache_key("x") == cache_key(b"x")


CHILD = """
import os, sys, time
from pathlib import Path
import numpy as np
from powerfusion.runtime import cpu
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
k = cpu.load_kernel(sys.argv[2], "add", 4)
a = np.arange(100, dtype=np.float32); out = np.zeros_like(a); n = np.array([100], np.int64)
k([a.ctypes.data, a.ctypes.data, out.ctypes.data, n.ctypes.data])
assert (out == 2 * a).all()
print("ok", cpu.stats["compiles"])
"""


def test_two_processes_compile_the_same_source(tmp_path, private_cache):
    source = unique(ADD_SOURCE, "race")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "POWERFUSION_CACHE_DIR": str(private_cache)}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(go), source], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.startswith("ok")
    # whoever won, the published entry is intact and this process can use it
    check_add(cpu.load_kernel(source, "add", 4))
    assert cpu.stats["compiles"] == 0
    assert not [p for p in (private_cache / "cpu").iterdir() if p.name.endswith(".tmp")]


def test_threads_share_one_kernel():
    kernel = cpu.load_kernel(ADD_SOURCE, "add", 4)
    errors = []

    def work():
        try:
            for n in range(1, 200):
                check_add(kernel, n)
        except AssertionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_syntax_error_raises_compile_error(private_cache):
    bad = "void broken(void **args) { int x = ; }\n"
    with pytest.raises(CompileError) as info:
        cpu.compile_shared(bad, name="broken")
    err = info.value
    assert err.command and Path(err.command[0]).name in (cpu.compiler_command()[0], "gcc")
    assert "error" in err.stderr
    kept = Path(err.source_path)
    assert kept.exists() and kept.read_text() == bad
    assert kept.parent == private_cache / "failed"
    assert str(kept) in err.command
    assert "source kept at" in str(err)
    assert so_files(private_cache) == []


def test_missing_compiler_raises_compile_error(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(CompileError, match="cannot run the C compiler"):
        cpu.compile_shared(ADD_SOURCE)


def test_compiler_timeout_raises_compile_error(monkeypatch):
    monkeypatch.setattr(cpu, "COMPILE_TIMEOUT_S", 0.001)
    with pytest.raises(CompileError, match="timed out") as info:
        cpu.compile_shared(unique(ADD_SOURCE, "slow"))
    assert Path(info.value.source_path).exists()


def test_compiler_identity_names_compiler_and_target():
    ident = cpu.compiler_identity()
    assert ident == cpu.compiler_identity()
    if cpu.compiler_command() == ["gcc"]:
        assert ident.startswith("gcc") and "march=" in ident


def test_cache_dir_is_private(private_cache):
    assert cache_dir() == private_cache
    assert stat.S_IMODE(private_cache.stat().st_mode) == 0o700
    cpu.compile_shared(ADD_SOURCE)
    assert stat.S_IMODE((private_cache / "cpu").stat().st_mode) == 0o700


def test_loose_permissions_are_tightened(tmp_path, monkeypatch):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(loose))
    assert stat.S_IMODE(cache_dir().stat().st_mode) == 0o700


def test_cache_dir_env_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path / "pf"))
    assert cache_dir() == tmp_path / "pf"
    monkeypatch.delenv("POWERFUSION_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "powerfusion"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache_dir() == tmp_path / "home" / ".cache" / "powerfusion"
    assert stat.S_IMODE(cache_dir().stat().st_mode) == 0o700
