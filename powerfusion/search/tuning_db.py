"""The tuning database: measured winners on disk, so the next run starts tuned.

One JSON file per target under the cache directory, keyed by a hash of the code the
cost model would generate (which names the graph, its shapes, strides and dtypes).
Writes are atomic and serialised by a lock file, so concurrent tuners keep each
other's entries. What cannot be read is ignored and healed by the next write: an
unreadable file or one that is not an object reads as empty, an entry that is not an
object with a string "choice" as absent, and a directory in the file's place is removed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..runtime.cache import atomic_write_bytes, cache_dir, locked


def db_path(target: str) -> Path:
    return cache_dir() / f"tuning-{target}.json"


def load(target: str) -> dict:
    """The target's valid entries, {key: entry}."""
    return _read(db_path(target))


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):   # RecursionError: absurdly nested JSON
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: entry for key, entry in data.items() if _valid(entry)}


def _valid(entry) -> bool:
    # what compile_graph and the tuner read: an object whose "choice" names a plan
    return isinstance(entry, dict) and isinstance(entry.get("choice"), str)


def lookup(target: str, key: str) -> dict | None:
    return load(target).get(key)


def record(target: str, key: str, entry: dict) -> None:
    path = db_path(target)
    with locked(path.with_name(path.name + ".lock")):   # read-modify-write, one at a time
        data = _read(path)
        data[key] = entry
        atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())


def key_of(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:32]
