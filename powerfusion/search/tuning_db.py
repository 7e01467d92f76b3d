"""The tuning database: measured winners on disk, so the next run starts tuned.

One JSON file per target under the cache directory, keyed by a hash of the code the
cost model would generate (which names the graph, its shapes, strides and dtypes).
Writes are atomic; an unreadable file is treated as empty and rewritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..runtime.cache import atomic_write_bytes, cache_dir, ensure_private_dir


def db_path(target: str) -> Path:
    return ensure_private_dir(cache_dir()) / f"tuning-{target}.json"


def load(target: str) -> dict:
    try:
        data = json.loads(db_path(target).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def lookup(target: str, key: str) -> dict | None:
    return load(target).get(key)


def record(target: str, key: str, entry: dict) -> None:
    data = load(target)
    data[key] = entry
    atomic_write_bytes(db_path(target), json.dumps(data, indent=1, sort_keys=True).encode())


def key_of(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:32]
