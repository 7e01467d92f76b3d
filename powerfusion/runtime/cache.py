"""Content-addressed disk cache for compiled artefacts, which we load as native code.

An entry is `<key><suffix>` plus a sidecar `<key><suffix>.sha256` holding a digest of
the key and the artefact together, its size and the key. An artefact that is
truncated, garbage, or another key's (copied along with its sidecar) fails that check
before anything loads it: it is deleted and rebuilt, never trusted.

Artefacts are built in a private scratch directory (`pf-build-*` under $TMPDIR) and
published with a unique temp file in the cache dir, fsync and `os.replace`, under a
per-key `flock`: readers never see half a file, and processes building the same key
all succeed.

Faults heal. Anything in the way of an entry, sidecar, lock or subdirectory (a
directory, a link) is removed; a cache dir removed mid-build is made again; orphans of
killed processes (`.*.tmp`, `pf-build-*`) older than an hour are swept once per
process. A cache dir that cannot be used (a file, a dangling link, read-only) gives one
`CacheWarning` naming $POWERFUSION_CACHE_DIR, and the process uses a private temporary
cache instead; only when that fails too is a `CacheError` raised.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import options
from ..errors import CacheError

ENV = "POWERFUSION_CACHE_DIR"
PRIVATE_MODE = 0o700
# a build is bounded by the compiler's timeout (minutes): scratch older than this is orphaned
ORPHAN_AGE_S = 3600.0


class CacheWarning(UserWarning):
    """The configured cache directory is unusable; a private temporary one is used."""


_state_lock = threading.Lock()
_private_root: Path | None = None      # this process's fallback cache, made on first need
_warned: set[str] = set()              # unusable directories already warned about
_swept: set[tuple[str, str]] = set()   # (directory, prefix) already swept


# -- where the cache lives -------------------------------------------------------------------
def configured_dir() -> tuple[Path, str]:
    """The cache dir the environment asks for, and the variable that decided it."""
    if options.get(ENV):
        return Path(options.get(ENV)).expanduser(), ENV
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "powerfusion", "XDG_CACHE_HOME"
    return Path.home() / ".cache" / "powerfusion", "HOME"


def cache_dir() -> Path:
    """`$POWERFUSION_CACHE_DIR`, else `$XDG_CACHE_HOME/powerfusion`, else `~/.cache/powerfusion`.

    Created on demand and kept private to the user: it holds code we dlopen. When it
    cannot be used, a private temporary cache for this process (after one warning).
    """
    try:
        root, origin = configured_dir()
    except RuntimeError as exc:         # no $HOME, and no passwd entry to find one
        home = Path("~/.cache/powerfusion")
        return fall_back(home, FileNotFoundError(errno.ENOENT, str(exc)), "HOME")
    try:
        return usable_dir(root)
    except OSError as exc:
        return fall_back(root, exc, origin)


def ensure_private_dir(path: Path) -> Path:
    """mkdir -p with mode 0o700; tighten an existing directory we own."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_MODE)
    st = path.stat()
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077 | PRIVATE_MODE)
    return path


def usable_dir(path: Path, clear_way: bool = False) -> Path:
    """`path` made if missing and checked writable; OSError when it cannot be.

    clear_way: a file or link where the directory belongs is removed (only for
    directories inside the cache, never for the one the user configured).
    """
    try:
        ensure_private_dir(path)
    except (FileExistsError, NotADirectoryError):
        if not clear_way:
            raise
        _remove(path)
        ensure_private_dir(path)
    effective = os.access in os.supports_effective_ids
    if not os.access(path, os.W_OK | os.X_OK, effective_ids=effective):
        raise PermissionError(errno.EACCES, "it is not writable", str(path))
    sweep_orphans(path, ".", ".tmp")
    return path


def fall_back(path: Path, exc: OSError, origin: str | None = None) -> Path:
    """This process's private temporary cache, after one warning about `path`
    (`origin`: the variable that named it)."""
    private = private_dir(path, exc)
    source = "" if origin is None else f" (from ${origin})"
    _warn_once(path, f"kernel cache {path}{source} is unusable: {_reason(path, exc)}. "
                     f"This process uses a private temporary cache, {private}, instead; "
                     f"set ${ENV} to a writable directory to keep compiled kernels.")
    return private


def private_dir(failed: Path, exc: OSError) -> Path:
    """The fallback cache (mode 0o700, removed at exit); CacheError when even that fails."""
    global _private_root
    try:
        with _state_lock:
            if _private_root is None:
                _private_root = Path(tempfile.mkdtemp(prefix="pf-cache-"))
                atexit.register(_remove_private, _private_root, os.getpid())
            root = _private_root
        return ensure_private_dir(root)     # again, in case a tmp cleaner removed it
    except OSError as again:
        raise CacheError(f"kernel cache {failed} is unusable ({_reason(failed, exc)}), and so "
                         f"is a private temporary one ({again}); set ${ENV} to a writable "
                         f"directory") from exc


def _remove_private(root: Path, owner: int) -> None:
    if os.getpid() == owner:        # not from a forked child that exits normally
        shutil.rmtree(root, ignore_errors=True)


def _warn_once(path: Path, message: str) -> None:
    with _state_lock:
        if str(path) in _warned:
            return
        _warned.add(str(path))
    warnings.warn(message, CacheWarning, stacklevel=4)


def _reason(path: Path, exc: OSError) -> str:
    if path.is_symlink() and not path.exists():
        return f"it is a dangling symbolic link to {os.readlink(path)}"
    if path.exists() and not path.is_dir():
        return "it is not a directory"
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return (exc.strerror or str(exc)) + where


# -- orphans and scratch ---------------------------------------------------------------------
def sweep_orphans(directory: Path, prefix: str, suffix: str) -> None:
    """Remove our `prefix*suffix` entries older than ORPHAN_AGE_S: what killed processes
    left behind. Once per process and directory, so a hot path pays one stat."""
    with _state_lock:
        if (str(directory), prefix) in _swept:
            return
        _swept.add((str(directory), prefix))
    cutoff = time.time() - ORPHAN_AGE_S
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.name.endswith(suffix):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_uid == os.getuid() and st.st_mtime < cutoff:
                        _remove(Path(entry.path))
    except OSError:
        pass            # an unreadable directory has nothing we could remove either


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A private build directory under $TMPDIR, removed afterwards (whatever happened)."""
    sweep_orphans(Path(tempfile.gettempdir()), "pf-build-", "")
    path = Path(tempfile.mkdtemp(prefix="pf-build-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove(path: Path) -> None:
    """Best effort: delete whatever is at `path`, a file, a link or a directory in the way."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


# -- keys, digests, atomic writes ------------------------------------------------------------
def cache_key(*parts: str | bytes) -> str:
    """sha256 hex over the parts, each length-prefixed so ("ab", "c") != ("a", "bc")."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def file_digest(path: Path, key: str = "") -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file's contents, prefixed by `key` when given."""
    h = _keyed(key)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _keyed(key: str):
    # binding the key into the digest is what keeps one key's artefact out of another's
    return hashlib.sha256(f"{key}\0".encode() if key else b"")


def atomic_write(path: Path, producer: Callable[[Path], None]) -> None:
    """`producer(tmp)` writes a file; it is fsynced and renamed onto `path`.

    The temp name is unique per call, so concurrent writers never collide. A directory
    in the way is removed and a removed parent made again, once.
    """
    try:
        _atomic_write_once(path, producer)
    except (FileNotFoundError, IsADirectoryError):
        ensure_private_dir(path.parent)
        _remove(path)
        _atomic_write_once(path, producer)


def _atomic_write_once(path: Path, producer: Callable[[Path], None]) -> None:
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


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on the file `path` (made if missing) for the block."""
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)            # closing drops the flock


def _open_lock(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
    for _ in range(2):
        try:
            return os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ENOENT:       # the cache dir was removed: make it again
                ensure_private_dir(path.parent)
            elif exc.errno in (errno.EISDIR, errno.ELOOP):   # a directory or link in the way
                _remove(path)
            else:
                raise
    return os.open(path, flags, 0o600)


def keep_source(file_name: str, source: str) -> str | None:
    """Keep a source that failed to build as <cache>/failed/<file_name>; its path, or None
    when it cannot be written (the error being reported matters more)."""
    try:
        kept = usable_dir(cache_dir() / "failed", clear_way=True) / file_name
        atomic_write_bytes(kept, source.encode())
        return str(kept)
    except OSError:
        return None


# -- the cache -------------------------------------------------------------------------------
class DiskCache:
    """Artefacts under `root`, a directory the cache owns (anything in its way is removed),
    addressed by a key from `cache_key`. An unusable root moves to the private cache."""

    def __init__(self, root: Path):
        self.root = root
        self.private = False
        try:
            usable_dir(root, clear_way=True)
        except OSError as exc:
            self._fall_back(exc)

    def path(self, key: str, suffix: str) -> Path:
        return self.root / f"{key}{suffix}"

    def lookup(self, key: str, suffix: str) -> Path | None:
        """The artefact's path when present and vouched for; else None (a bad entry is deleted)."""
        path = self.path(key, suffix)
        if self._intact(path, key):
            return path
        try:
            with locked(self._lock(key)):   # a writer may be mid-publish: look again under it
                if self._intact(path, key):
                    return path
                _remove(path)
                _remove(_sidecar(path))
        except OSError:
            pass            # cannot lock or delete: a miss, and store() deals with the dir
        return None

    def read(self, key: str, suffix: str) -> bytes | None:
        """The artefact's bytes when present and vouched for; else None."""
        path = self.lookup(key, suffix)
        try:
            return path.read_bytes() if path is not None else None
        except OSError:
            return None

    def store(self, key: str, suffix: str, producer: Callable[[Path], None]) -> Path:
        """Build with `producer(out)`, then publish; returns the final path.

        The producer runs in a private scratch directory, `out.parent`, where it may keep
        its own files too; nothing in the cache is touched until the artefact exists.
        """
        return self.publish(key, suffix, _build(suffix, producer))

    def get_or_create(self, key: str, suffix: str, producer: Callable[[Path], None]) -> Path:
        return self.lookup(key, suffix) or self.store(key, suffix, producer)

    def publish(self, key: str, suffix: str, data: bytes) -> Path:
        """Write `data` as the entry of `key`, with its sidecar, atomically under the lock.

        A removed cache dir is made again; a dir that cannot be written moves this cache
        to the private one (one warning); CacheError when that fails too.
        """
        digest = _keyed(key)
        digest.update(data)
        record = f"{digest.hexdigest()} {len(data)} {key}\n".encode()
        error: OSError | None = None
        for _ in range(3):
            try:
                path = self.path(key, suffix)
                with locked(self._lock(key)):
                    atomic_write_bytes(path, data)
                    atomic_write_bytes(_sidecar(path), record)
                return path
            except OSError as exc:
                error = exc
                self._recover(exc)
        raise CacheError(f"cannot write the kernel cache {self.root} ({error}); "
                         f"set ${ENV} to a writable directory") from error

    def discard(self, key: str, suffix: str) -> None:
        """Delete an entry that passed the digest check yet will not load (best effort:
        a rebuild publishes over it anyway)."""
        path = self.path(key, suffix)
        try:
            with locked(self._lock(key)):
                _remove(path)
                _remove(_sidecar(path))
        except OSError:
            pass

    def _lock(self, key: str) -> Path:
        return self.root / f"{key}.lock"

    def _recover(self, exc: OSError) -> None:
        """After a failed write: make a removed directory again, else go private."""
        if isinstance(exc, FileNotFoundError):
            try:
                usable_dir(self.root, clear_way=True)
                return
            except OSError as again:
                exc = again
        if not self.private:
            self._fall_back(exc)

    def _fall_back(self, exc: OSError) -> None:
        self.root = ensure_private_dir(fall_back(self.root, exc) / self.root.name)
        self.private = True

    @staticmethod
    def _intact(path: Path, key: str) -> bool:
        """Does the sidecar vouch for this very file under this very key?"""
        try:
            # regular files only: a link, directory or fifo is never read, let alone loaded
            st, side = os.lstat(path), os.lstat(_sidecar(path))
            if not (stat.S_ISREG(st.st_mode) and stat.S_ISREG(side.st_mode)):
                return False
            recorded = _sidecar(path).read_text().split()
            if len(recorded) != 3 or recorded[2] != key or int(recorded[1]) != st.st_size:
                return False
            return file_digest(path, key)[0] == recorded[0]
        except (OSError, ValueError):
            return False


def _build(suffix: str, producer: Callable[[Path], None]) -> bytes:
    """The producer's artefact. A scratch dir removed under it (a tmp cleaner) is not
    the producer's fault: it runs once more in a fresh one."""
    for last in (False, True):
        with scratch_dir() as scratch:
            out = scratch / f"out{suffix}"
            try:
                producer(out)
                return out.read_bytes()
            except Exception:
                if last or scratch.is_dir():
                    raise
    raise AssertionError("not reached")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")
