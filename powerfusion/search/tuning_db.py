"""The tuning database: measured winners on disk, so the next run starts tuned.

One JSON file per target under the cache directory, keyed by a hash of the code the
cost model would generate (which names the graph, its shapes, strides and dtypes).
An entry stores the winning candidate and the cost model's first choice as data
({"computation", "placement", "streaming"} and the schedule knobs and switches, which
entries older than them lack: they read as the defaults), so it survives a change of how
candidates are labelled; entries written before that hold a label, read here once.
An entry's "measured" lists each candidate the tuner timed with its features and
seconds: what search/learned.py trains the correction of the cost model on;
"confirmed", the fastest few timed again head to head (what chose the winner).
Writes are atomic and serialised by a lock file, so concurrent tuners keep each
other's entries. What cannot be read is ignored and healed by the next write: an
unreadable file or one that is not an object reads as empty, an entry that is not an
object with a readable "choice" as absent, and a directory in the file's place is removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ..runtime.cache import atomic_write_bytes, cache_dir, locked
from .plan import Candidate

LEGACY_STREAMING = ", streaming stores"   # how a legacy label ends for streaming stores
LEGACY_ROWS = ", rows "                   # and what precedes its placement
KNOBS = {"tile": (int, float), "threads": int, "dynamic": int, "vector_bits": int,
         "recompute": bool, "interleave": (bool, type(None))}


def db_path(target: str) -> Path:
    return cache_dir() / f"tuning-{target}.json"


def load(target: str) -> dict:
    """The target's valid entries, {key: entry}; an entry's "choice" and "model_choice"
    are Candidates."""
    return _read(db_path(target))


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):   # RecursionError: absurdly nested JSON
        return {}
    if not isinstance(data, dict):
        return {}
    entries = {key: _parsed(entry) for key, entry in data.items()}
    return {key: entry for key, entry in entries.items() if entry is not None}


def _parsed(entry) -> dict | None:
    """The entry with its choices as Candidates; None without a readable "choice" (what
    compile_graph and the tuner read)."""
    if not isinstance(entry, dict) or candidate(entry.get("choice")) is None:
        return None
    return {**entry, **{name: candidate(entry[name]) for name in ("choice", "model_choice")
                        if name in entry}}


def candidate(stored) -> Candidate | None:
    """A stored choice as a Candidate: the structured form, or a legacy label
    ("online softmax, rows global, streaming stores"); None for anything else."""
    if isinstance(stored, str):
        rest = stored.removesuffix(LEGACY_STREAMING)
        computation, _, placement = rest.partition(LEGACY_ROWS)
        return Candidate(computation, placement or "local", rest != stored)
    fields = {"computation": str, "placement": str, "streaming": bool}
    if not isinstance(stored, dict) or not all(isinstance(stored.get(name), kind)
                                               for name, kind in fields.items()):
        return None
    # the schedule knobs came later: an entry without them took their defaults
    knobs = {name: stored[name] for name in KNOBS if name in stored}
    if not all(_valid(name, v) for name, v in knobs.items()):
        return None
    return Candidate(**{name: stored[name] for name in fields}, **knobs)


def _valid(knob: str, value) -> bool:
    """Whether value is one the knob takes. A bool is an int to isinstance: only the
    switches take one, and only they take nothing else but None where it is listed."""
    kinds = KNOBS[knob] if isinstance(KNOBS[knob], tuple) else (KNOBS[knob],)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds) and (bool not in kinds or value is None)


def lookup(target: str, key: str) -> dict | None:
    return load(target).get(key)


def record(target: str, key: str, entry: dict) -> None:
    """Store entry (its "choice" and "model_choice" Candidates) under key."""
    path = db_path(target)
    with locked(path.with_name(path.name + ".lock")):   # read-modify-write, one at a time
        data = _read(path)
        data[key] = entry
        stored = {k: {name: dataclasses.asdict(v) if isinstance(v, Candidate) else v
                      for name, v in e.items()} for k, e in data.items()}
        atomic_write_bytes(path, json.dumps(stored, indent=1, sort_keys=True).encode())


def key_of(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:32]
