"""Tuning on a Ray cluster: every job once per kind of device, entries merged into the
driver's tuning database as they arrive, and a lost worker loses nothing finished.

The cluster is one local Ray instance with four worker processes (4 CPUs, one tuning
per CPU); the lost-node test starts its own, of two one-CPU nodes, and removes one.
The dispatch tests and the missing-Ray error need no Ray at all.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from powerfusion.cli import _bench_suite, _tune_job, main
from powerfusion.errors import UnsupportedError
from powerfusion.runtime.backends import get_target
from powerfusion.search import distributed, learned, tuner, tuning_db
from powerfusion.search.distributed import (
    Device,
    Dispatch,
    TuneJob,
    tune_job,
    tune_on_ray,
)

CASES = "*"                 # the whole benchmark suite, at its small shapes
SETTINGS = {"top": 2, "budget_s": 600.0, "repeat": 2}    # a budget never reached


def suite_jobs(cases: str = CASES) -> list[TuneJob]:
    return [_tune_job(c.name, c.fn, c.inputs(True)) for c in _bench_suite().select(cases)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray instance with 4 worker CPUs, and a tuning cache of its own: workers
    inherit $POWERFUSION_CACHE_DIR when Ray starts, so they share compiled kernels with
    this process, and the tests own the tuning database in it."""
    ray = pytest.importorskip("ray")
    cache = tmp_path_factory.mktemp("ray-cache")
    old = os.environ.get("POWERFUSION_CACHE_DIR")
    os.environ["POWERFUSION_CACHE_DIR"] = str(cache)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             logging_level="warning")
    try:
        yield cache
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("POWERFUSION_CACHE_DIR", None)
        else:
            os.environ["POWERFUSION_CACHE_DIR"] = old


def ship_this_module() -> None:
    """Tasks defined here travel by value: Ray's workers cannot import tests/."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def slow_task(job: TuneJob, dialect: str, *settings):
    time.sleep(1.0)             # long enough that a node is always busy when one goes
    return tune_job(job, dialect, *settings)


def test_a_lost_nodes_job_is_tuned_on_another_node_of_its_kind(tmp_path, monkeypatch):
    """Two nodes of one kind; one goes away mid-job: its job is tuned on the other."""
    pytest.importorskip("ray")
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))    # before the nodes start
    ship_this_module()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                          "include_dashboard": False})
    doomed = nodes.add_node(num_cpus=1)
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, log_to_driver=False, logging_level="warning")

    def remove_a_node():
        while not tuning_db.db_path("cpu").exists():
            time.sleep(0.02)
        nodes.remove_node(doomed)

    try:
        nodes.wait_for_nodes()
        threading.Thread(target=remove_a_node, daemon=True).start()
        jobs = suite_jobs("softmax,layernorm,rmsnorm,bias_gelu,swiglu,column_sum")
        report = tune_on_ray(jobs, task=slow_task, **SETTINGS)
    finally:
        ray.shutdown()
        nodes.shutdown()
    assert [node for _, node in report.requeued] == [doomed.node_id]
    assert not report.failed
    assert sorted(t.job for t in report.tuned) == sorted(j.name for j in jobs)
    assert len(tuning_db.load("cpu")) == len(jobs)


def fresh_database() -> Path:
    path = tuning_db.db_path("cpu")
    path.unlink(missing_ok=True)
    return path


def test_a_ray_tune_of_the_suite_gives_the_database_a_serial_tune_gives(cluster):
    """Same keys (the code each job compiles to on this machine), the same candidates
    measured and the same cost-model choice per key; the winner is the fastest of its
    own confirming round (the seconds are measured, so the winners themselves may differ)."""
    jobs = suite_jobs()
    fresh_database()
    for job in jobs:        # as the driver does: the correction of the database at the start
        tuner.tune(job.graph, job.input_strides, get_target("cpu"),
                   list(job.inputs), progress=False, correction=learned.Correction(),
                   **SETTINGS)
    serial = tuning_db.load("cpu")
    fresh_database()
    report = tune_on_ray(jobs, tasks_per_node=4, **SETTINGS)
    merged = tuning_db.load("cpu")

    assert not report.failed
    assert len(set(report.nodes.values())) == 1          # one machine: one kind of device
    assert sorted(t.job for t in report.tuned) == sorted(j.name for j in jobs)
    assert set(merged) == set(serial) and len(merged) == len(jobs)
    device = distributed.describe("cpu").description
    for key, entry in merged.items():
        assert entry["model_choice"] == serial[key]["model_choice"]
        assert set(entry["seconds"]) == set(serial[key]["seconds"])
        decided = entry["confirmed"] or entry["seconds"]     # the fastest few, timed again
        assert set(decided) <= set(entry["seconds"])
        assert entry["choice"].label == min(decided, key=decided.get)
        assert entry["device"] == device


KILLED = "layernorm"        # its first attempt kills its worker, once others are recorded
ALWAYS = "swiglu"           # every attempt kills its worker
RAISES = "bias_gelu"        # the tuning raises


def dying_task(job: TuneJob, dialect: str, *settings):
    """tune_job, except that KILLED's first attempt waits until two entries are in the
    driver's database and then ends its worker process, ALWAYS ends it every time, and
    RAISES raises (counting its attempts)."""
    marker = Path(os.environ["POWERFUSION_CACHE_DIR"]) / f"killed-{job.name}"
    if job.name == ALWAYS:
        os._exit(1)
    if job.name == RAISES:
        with marker.open("a") as attempts:
            attempts.write("attempt\n")
        raise UnsupportedError("this device cannot compile it")
    if job.name == KILLED and not marker.exists():
        deadline = time.monotonic() + 60
        while len(tuning_db.load("cpu")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        marker.write_text(json.dumps(sorted(tuning_db.load("cpu"))))
        os._exit(1)
    return tune_job(job, dialect, *settings)


def test_a_worker_killed_mid_job_loses_no_finished_entry(cluster):
    ship_this_module()
    jobs = suite_jobs("softmax,layernorm,rmsnorm,bias_gelu,swiglu,column_sum")
    fresh_database()
    report = tune_on_ray(jobs, tasks_per_node=4, max_retries=1, task=dying_task,
                         **SETTINGS)
    merged = tuning_db.load("cpu")

    before_kill = json.loads((cluster / f"killed-{KILLED}").read_text())
    assert len(before_kill) >= 2                 # entries were written as they arrived
    assert set(before_kill) <= set(merged)        # and the kill lost none of them
    # the killed job ran again (Ray's retry) and its entry is in; the job whose every
    # attempt died and the one that raised (once: it would again) are reported
    assert sorted(t.job for t in report.tuned) == ["column_sum", KILLED, "rmsnorm", "softmax"]
    assert {t.key for t in report.tuned} == set(merged)
    failed = {f.job: f.error for f in report.failed}
    assert set(failed) == {ALWAYS, RAISES}
    assert "WorkerCrashedError" in failed[ALWAYS]
    assert failed[RAISES] == "this device cannot compile it"
    assert (cluster / f"killed-{RAISES}").read_text() == "attempt\n"


def test_tune_command_on_ray_records_the_suite(cluster, capsys):
    fresh_database()
    assert main(["tune", "--suite", "--cases", "rmsnorm", "--quick", "--top", "1",
                 "--repeat", "1", "--ray", "--tasks-per-node", "4"]) == 0
    out = capsys.readouterr().out
    assert "rmsnorm on " in out and "winner" in out and "1 of 1 kernels tuned" in out
    assert len(tuning_db.load("cpu")) == 1


def test_without_ray_tune_on_ray_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)       # `import ray` raises ImportError
    assert main(["tune", "softmax", "--quick", "--ray"]) == 1
    err = capsys.readouterr().err
    assert "UnsupportedError" in err and 'pip install "powerfusion[ray]"' in err


# -- the dispatch, without Ray ------------------------------------------------------------
def jobs_named(*names: str) -> list[TuneJob]:
    return [TuneJob(name, None, (), ()) for name in names]


CPU_A, CPU_B = Device("cpu", "A, 8 cores"), Device("cpu", "B, 64 cores")


def drain(dispatch: Dispatch) -> list[tuple[str, str]]:
    out = []
    while assigned := dispatch.assign():
        for node, job in assigned:
            out.append((node, job.name))
            dispatch.done(node)
    return out


def test_every_job_goes_once_to_each_kind_of_device():
    nodes = {"a1": CPU_A, "a2": CPU_A, "b1": CPU_B}
    ran = drain(Dispatch(jobs_named("x", "y", "z"), nodes, {n: 1 for n in nodes}))
    by_kind = {kind: sorted(job for node, job in ran if nodes[node] == kind)
               for kind in (CPU_A, CPU_B)}
    assert by_kind == {CPU_A: ["x", "y", "z"], CPU_B: ["x", "y", "z"]}
    assert {node for node, _ in ran} == {"a1", "a2", "b1"}     # both A nodes take jobs


def test_a_lost_nodes_job_goes_to_another_node_of_its_kind_or_is_reported():
    nodes = {"a1": CPU_A, "a2": CPU_A, "b1": CPU_B}
    dispatch = Dispatch(jobs_named("x"), nodes, {n: 1 for n in nodes})
    first = dict(dispatch.assign())
    lost_a = next(n for n in first if nodes[n] == CPU_A)
    dispatch.lost(lost_a, first[lost_a])
    dispatch.done("b1")
    (again,) = dispatch.assign()
    assert again[0] != lost_a and nodes[again[0]] == CPU_A and again[1].name == "x"
    dispatch.lost("b1", first["b1"])             # the only B node: nothing left to run on
    assert [(d, j.name) for d, j in dispatch.stranded()] == [(CPU_B, "x")]
    assert dispatch.assign() == []
