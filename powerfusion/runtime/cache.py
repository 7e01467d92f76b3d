"""Content-addressed disk cache for compiled artefacts.

An entry is `<key><suffix>` plus a sidecar `<key><suffix>.sha256` holding the
artefact's digest and size. Both are written to unique temp files in the same
directory, fsynced and moved in place with `os.replace`, so readers never see a
half-written file. The pair is published under a per-key `flock`, so two
processes building the same key leave a consistent pair behind (last writer
wins) and neither fails. `lookup` re-hashes the artefact: a missing, truncated
or mismatching entry is deleted and reported absent, never trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PRIVATE_MODE = 0o700


def cache_dir() -> Path:
    """`$POWERFUSION_CACHE_DIR`, else `$XDG_CACHE_HOME/powerfusion`, else `~/.cache/powerfusion`.

    Created on demand and kept private to the user: it holds code we dlopen.
    """
    if os.environ.get("POWERFUSION_CACHE_DIR"):
        root = Path(os.environ["POWERFUSION_CACHE_DIR"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "powerfusion"
    else:
        root = Path.home() / ".cache" / "powerfusion"
    return ensure_private_dir(root.expanduser())


def ensure_private_dir(path: Path) -> Path:
    """mkdir -p with mode 0o700; tighten an existing directory we own."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_MODE)
    st = path.stat()
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077 | PRIVATE_MODE)
    return path


def cache_key(*parts: str | bytes) -> str:
    """sha256 hex over the parts, each length-prefixed so ("ab", "c") != ("a", "bc")."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file's contents."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def atomic_write(path: Path, producer: Callable[[Path], None]) -> None:
    """`producer(tmp)` writes a file; it is fsynced and renamed onto `path`.

    The temp name is unique per call, so concurrent writers never collide.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        producer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskCache:
    """Artefacts under `root`, addressed by a key from `cache_key`."""

    def __init__(self, root: Path):
        self.root = ensure_private_dir(root)

    def path(self, key: str, suffix: str) -> Path:
        return self.root / f"{key}{suffix}"

    def lookup(self, key: str, suffix: str) -> Path | None:
        """The artefact's path when present and intact; else None (a bad entry is deleted)."""
        path = self.path(key, suffix)
        if self._intact(path):
            return path
        with self._locked(key):     # a writer may be mid-publish: look again under the lock
            if self._intact(path):
                return path
            path.unlink(missing_ok=True)
            _sidecar(path).unlink(missing_ok=True)
        return None

    def store(self, key: str, suffix: str, producer: Callable[[Path], None]) -> Path:
        """Build with `producer(tmp_path)` and publish atomically; returns the final path."""
        path = self.path(key, suffix)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.root)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            producer(tmp)           # the slow part (the compiler) runs outside the lock
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            digest, size = file_digest(tmp)
            with self._locked(key):
                os.replace(tmp, path)
                atomic_write_bytes(_sidecar(path), f"{digest} {size}\n".encode())
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def get_or_create(self, key: str, suffix: str, producer: Callable[[Path], None]) -> Path:
        return self.lookup(key, suffix) or self.store(key, suffix, producer)

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        fd = os.open(self.root / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)            # closing drops the flock

    @staticmethod
    def _intact(path: Path) -> bool:
        try:
            recorded = _sidecar(path).read_text().split()
            if len(recorded) != 2 or int(recorded[1]) != path.stat().st_size:
                return False
            return file_digest(path)[0] == recorded[0]
        except (OSError, ValueError):
            return False


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")
