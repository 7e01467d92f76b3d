"""The tuner measures candidates, records the winner, and later runs start tuned."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import powerfusion as pf
from powerfusion.search import tuner, tuning_db
from powerfusion.search.plan import Candidate


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_tuning_records_a_measured_winner_that_later_runs_use(tmp_path, monkeypatch):
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    x = np.random.default_rng(0).standard_normal((16, 256)).astype(np.float32)
    tuned = pf.jit(softmax, tune=True)
    np.testing.assert_allclose(tuned(x), softmax(x.astype(np.float64)), rtol=1e-5, atol=1e-7)
    entries = tuning_db.load("cpu")
    assert len(entries) == 1
    (entry,) = entries.values()
    assert entry["choice"].label in entry["seconds"] and len(entry["seconds"]) >= 2
    assert all(s > 0 for s in entry["seconds"].values())
    # a fresh function, not asking to tune, starts from the recorded winner
    later = pf.jit(softmax)
    np.testing.assert_allclose(later(x), softmax(x.astype(np.float64)), rtol=1e-5, atol=1e-7)
    (compiled,) = later.cache.values()
    assert compiled.executable.plan.choice == entry["choice"]
    right, total = tuner.model_accuracy("cpu")
    assert total == 1 and right in (0, 1)


def test_a_corrupt_tuning_database_is_ignored_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    tuning_db.db_path("cpu").write_text("{ not json")
    x = np.ones((4, 64), np.float32)
    y = pf.jit(softmax, tune=True)(x)
    np.testing.assert_allclose(y, np.full((4, 64), 1 / 64), rtol=1e-6)
    assert len(tuning_db.load("cpu")) == 1


def test_the_tuner_also_times_streaming_stores_and_a_later_run_can_use_them(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    x = np.random.default_rng(1).standard_normal((64, 512)).astype(np.float32)
    pf.jit(softmax, tune=True)(x)
    (entry,) = tuning_db.load("cpu").values()
    streamed = [label for label in entry["seconds"] if label.endswith("streaming stores")]
    assert streamed == [entry["model_choice"].label + ", streaming stores"]
    # force the streaming variant as the recorded winner: a later run compiles it
    key = next(iter(tuning_db.load("cpu")))
    winner = dataclasses.replace(entry["model_choice"], streaming=True)
    tuning_db.record("cpu", key, {**entry, "choice": winner})
    later = pf.jit(softmax)
    np.testing.assert_allclose(later(x), softmax(x.astype(np.float64)), rtol=1e-5, atol=1e-7)
    (compiled,) = later.cache.values()
    assert compiled.executable.plan.choice == winner
    assert "pf_stream_f32(" in compiled.executable.source


def test_a_simt_target_is_tuned_too(tmp_path, monkeypatch):
    """On OpenCL (PoCL here; a CUDA GPU times CUDA tensors on the device): the candidates
    are timed, the winner is recorded under the device description, and a later run
    compiles the recorded choice, whichever it is."""
    from helpers import opencl_or_skip

    opencl_or_skip()
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    x = np.random.default_rng(2).standard_normal((4, 40000)).astype(np.float32)
    expected = softmax(x.astype(np.float64))
    tuned = pf.jit(softmax, target="opencl", tune=True)
    np.testing.assert_allclose(tuned(x), expected, rtol=1e-5, atol=1e-8)
    ((key, entry),) = tuning_db.load("opencl").items()
    assert len(entry["seconds"]) >= 2 and entry["choice"].label in entry["seconds"]
    other = next(label for label in entry["seconds"] if label != entry["choice"].label)
    tuning_db.record("opencl", key, {**entry, "choice": tuning_db.candidate(other)})
    later = pf.jit(softmax, target="opencl")
    np.testing.assert_allclose(later(x), expected, rtol=1e-5, atol=1e-8)
    (compiled,) = later.cache.values()
    assert compiled.executable.plan.choice.label == other


@pytest.mark.parametrize("label, candidate", [
    ("as written", Candidate()),
    ("online softmax", Candidate("online softmax")),
    ("as written, rows global", Candidate(placement="global")),
    ("one-pass variance, streaming stores", Candidate("one-pass variance", streaming=True)),
    ("split columns, rows global, streaming stores", Candidate("split columns", "global", True)),
])
def test_a_label_written_by_an_older_version_reads_as_its_candidate(label, candidate):
    assert tuning_db.candidate(label) == candidate
    assert candidate.label == label             # what explain and the CLI print


def test_an_older_database_still_picks_the_recorded_winner(tmp_path, monkeypatch):
    """Entries once held labels; read, they name the same plan, and the next write
    stores every entry as data."""
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    x = np.random.default_rng(3).standard_normal((64, 512)).astype(np.float32)
    pf.jit(softmax, tune=True)(x)
    (key,) = tuning_db.load("cpu")
    path = tuning_db.db_path("cpu")
    path.write_text(json.dumps({key: {"choice": "as written, rows global, streaming stores",
                                      "model_choice": "as written", "seconds": {}}}))
    later = pf.jit(softmax)
    np.testing.assert_allclose(later(x), softmax(x.astype(np.float64)), rtol=1e-5, atol=1e-7)
    (compiled,) = later.cache.values()
    assert compiled.executable.plan.choice == Candidate("as written", "global", True)
    tuning_db.record("cpu", "other", {"choice": Candidate("online softmax")})
    stored = json.loads(path.read_text())
    assert stored[key]["choice"] == {"computation": "as written", "placement": "global",
                                     "streaming": True, "tile": 1.0, "threads": 0,
                                     "dynamic": 0, "vector_bits": 0, "recompute": False,
                                     "interleave": None}
    assert stored["other"]["choice"]["computation"] == "online softmax"


WRITER = """
import sys, time
from pathlib import Path
from powerfusion.search import tuning_db
from powerfusion.search.plan import Candidate
go, name, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
for k in range(n):
    tuning_db.record("cpu", f"{name}-{k}", {"choice": Candidate(placement="global"),
                                            "seconds": {"as written, rows global": k}})
"""

READER = """
import json, sys, time
from pathlib import Path
go, path, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
reads = 0
while not stop.exists():
    try:
        text = path.read_text()
    except FileNotFoundError:
        continue
    assert isinstance(json.loads(text), dict), text[:200]   # never half a file
    reads += 1
print(reads)
"""


def test_the_tuning_database_keeps_every_entry_of_concurrent_writers(tmp_path):
    """Several processes record at once (tuning_db.record: read, modify and replace the
    file under a lock): every entry survives and a reader never sees half a file."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "POWERFUSION_CACHE_DIR": str(tmp_path)}
    go, stop = tmp_path / "go", tmp_path / "stop"
    path = tmp_path / "tuning-cpu.json"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(go), f"w{w}", "30"],
                                env=env, stderr=subprocess.PIPE, text=True) for w in range(4)]
    reader = subprocess.Popen([sys.executable, "-c", READER, str(go), str(path), str(stop)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    go.touch()
    for proc in writers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    stop.touch()
    reads, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(reads) > 0
    entries = tuning_db._read(path)
    assert set(entries) == {f"w{w}-{k}" for w in range(4) for k in range(30)}
    assert all(e["choice"] == Candidate(placement="global") for e in entries.values())
