"""Tuning spread over a Ray cluster: every job tuned once on each kind of device.

A job is one traced graph to tune, as data: the graph, its input strides and the
arrays to time it on. Tracing stays with the caller, so a worker needs PowerFusion and
none of the caller's code.

The driver asks every node which device it tunes for (`describe`: the target's name,
whose tuning database the entries belong to, and what else the timings depend on)
and groups the nodes by it. It hands every job, once per group, to a free node of that
group: one task at a time per node by default, which takes all of its CPUs (a tuning
times the whole machine; two at once would time each other), or one per GPU. Jobs
wait in the driver, not in Ray's queues, so a fast node takes more of them and a lost
node strands only what it was running.

A task tunes and returns its entry; it writes nothing, so when its worker dies Ray may
run it again (on the same node) and the result is the same kind of entry under the same
key. The driver records each entry in its own tuning database as it arrives
(tuning_db.record: atomic, under a lock), so nothing finished is lost to a later
failure. A task whose node dies goes back to its group's queue for another node of
that kind; one that raises (a kernel the target cannot compile) is reported, not rerun.

Ray is an optional dependency (pip install "powerfusion[ray]"), imported only inside
`tune_on_ray`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UnsupportedError
from ..graph.graph import Graph
from ..runtime.backends import get_target
from ..runtime.probe import cpu_model
from . import tuning_db
from .learned import Correction
from .tuner import device_inputs, tune


@dataclass(frozen=True)
class TuneJob:
    """One graph to tune: how the user knows it (a suite case, an example), the traced
    graph, its inputs' strides in elements and the storage arrays to time it on."""

    name: str
    graph: Graph
    input_strides: tuple[tuple[int, ...], ...]
    inputs: tuple


@dataclass(frozen=True)
class Device:
    """A kind of device: nodes that describe themselves alike tune a job once between them."""

    target: str          # the target's name: the tuning database the entries go to
    description: str     # what else the generated code and its speed depend on


@dataclass(frozen=True)
class Tuned:
    job: str
    device: Device
    key: str
    entry: dict          # as the tuning database keeps it (TuneResult.entry)


@dataclass(frozen=True)
class Failed:
    job: str
    device: Device
    error: str


@dataclass
class Report:
    nodes: dict[str, Device]                       # node id -> the device it tunes for
    tuned: list[Tuned] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    requeued: list[tuple[str, str]] = field(default_factory=list)   # (job, node lost under it)


# -- what a worker runs -------------------------------------------------------------------
def describe(dialect: str) -> Device:
    """The device this process tunes `dialect` for."""
    target = get_target(dialect)
    if target.family == "cpu":
        what = f"{cpu_model()}, {target.cores} cores, {8 * target.simd_bytes}-bit SIMD"
        what += "".join(f", {feature}" for feature in target.features)
    else:
        what = (f"{target.name} ({target.dialect}): {target.cores} units, "
                f"{target.max_block} threads per block")
    return Device(target.name, what)


def tune_job(job: TuneJob, dialect: str, top: int, budget_s: float, repeat: int,
             correction: Correction | None = None) -> Tuned:
    """Tune one job on this machine and return its entry, writing nothing: running it
    twice (a retry) gives the same key and the same kind of entry. `correction`: the
    driver's, learned once from its database (None: this machine's)."""
    result = tune(job.graph, job.input_strides, get_target(dialect),
                  device_inputs(job.inputs, dialect), top=top, budget_s=budget_s,
                  repeat=repeat, progress=False, dialect=dialect, record=False,
                  correction=correction)
    return Tuned(job.name, describe(dialect), result.key, result.entry)


def merge(tuned: Tuned) -> None:
    """Record a worker's entry in this machine's tuning database, with the device it
    was measured on."""
    tuning_db.record(tuned.device.target, tuned.key,
                     {**tuned.entry, "device": tuned.device.description})


# -- which job runs where -----------------------------------------------------------------
class Dispatch:
    """A queue of jobs per kind of device and the free task slots of each live node."""

    def __init__(self, jobs: list[TuneJob], nodes: dict[str, Device], slots: dict[str, int]):
        self.queues = {device: deque(jobs) for device in set(nodes.values())}
        self.kind = dict(nodes)             # every node's device, lost ones too
        self.nodes = dict(nodes)            # the live ones
        self.free = dict(slots)

    def assign(self) -> list[tuple[str, TuneJob]]:
        """(node, job) for every free slot whose kind still has jobs waiting."""
        out = []
        for node, device in self.nodes.items():
            queue = self.queues[device]
            while self.free[node] > 0 and queue:
                self.free[node] -= 1
                out.append((node, queue.popleft()))
        return out

    def done(self, node: str) -> None:
        if node in self.free:               # not a node already lost
            self.free[node] += 1

    def lost(self, node: str, job: TuneJob) -> None:
        """The node is gone: its job waits for another node of its kind."""
        self.nodes.pop(node, None)
        self.free.pop(node, None)
        self.queues[self.kind[node]].appendleft(job)

    def stranded(self) -> list[tuple[Device, TuneJob]]:
        """The jobs waiting for a kind of device no live node has; taken off the queues."""
        alive = set(self.nodes.values())
        out = [(device, job) for device, queue in self.queues.items() if device not in alive
               for job in queue]
        for device in self.queues:
            if device not in alive:
                self.queues[device].clear()
        return out


# -- the driver ---------------------------------------------------------------------------
def tune_on_ray(jobs: list[TuneJob], *, address: str | None = None, dialect: str = "cpu",
                top: int = 4, budget_s: float = 20.0, repeat: int = 9,
                tasks_per_node: int = 1, max_retries: int = 3,
                on_result: Callable[[Tuned | Failed], None] | None = None,
                task: Callable[..., Tuned] = tune_job) -> Report:
    """Tune every job once per kind of device in the Ray cluster at `address` (None: a
    new local instance, or $RAY_ADDRESS; "auto": the one running here; an initialised
    Ray as it is), recording each entry in this machine's tuning database as it
    arrives. `tasks_per_node` CPU tunings share a node at once (each with its share of
    the CPUs); `task` is what each Ray task runs (tune_job's signature)."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
    try:
        # every job ranks by the correction the driver's database teaches now: the
        # same whichever order the jobs finish in
        correction = Correction.from_db(get_target(dialect).name)
        return _drive(ray, jobs, dialect, (top, budget_s, repeat, correction),
                      tasks_per_node, max_retries, on_result or (lambda _: None), task)
    finally:
        if started:
            ray.shutdown()


def _drive(ray, jobs, dialect, settings, tasks_per_node, max_retries, on_result, task):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    resources, slots = _resources(ray, dialect, tasks_per_node)
    if not resources:
        raise UnsupportedError(f"no node of the Ray cluster has a {_unit(dialect)} to tune "
                               f"{dialect} kernels on")
    where = {node: NodeAffinitySchedulingStrategy(node, soft=False) for node in resources}
    described = ray.remote(describe)
    asked = {node: described.options(scheduling_strategy=where[node],
                                      **resources[node]).remote(dialect)
             for node in resources}
    report = Report(dict(zip(asked, ray.get(list(asked.values())))))
    dispatch = Dispatch(jobs, report.nodes, slots)
    run = ray.remote(task)
    running = {}

    def failed(device, job, error):
        report.failed.append(Failed(job.name, device, error))
        on_result(report.failed[-1])

    while True:
        for node, job in dispatch.assign():
            ref = run.options(scheduling_strategy=where[node], max_retries=max_retries,
                              retry_exceptions=False, **resources[node]).remote(
                job, dialect, *settings)
            running[ref] = (node, job)
        for device, job in dispatch.stranded():
            failed(device, job, "no node of this kind is left")
        if not running:
            return report
        (ref,), _ = ray.wait(list(running), num_returns=1)
        node, job = running.pop(ref)
        try:
            tuned = ray.get(ref)
        except ray.exceptions.RayTaskError as e:        # the tuning raised: it would again
            dispatch.done(node)
            failed(report.nodes[node], job, str(e.cause if e.cause is not None else e).strip())
        except ray.exceptions.RayError as e:           # a worker or node lost
            if _alive(ray, node):
                dispatch.done(node)
                failed(report.nodes[node], job,
                       f"{type(e).__name__} after {max_retries} retries: {e}")
            else:
                dispatch.lost(node, job)
                report.requeued.append((job.name, node))
        else:
            dispatch.done(node)
            merge(tuned)
            report.tuned.append(tuned)
            on_result(tuned)


def _resources(ray, dialect: str, tasks_per_node: int) -> tuple[dict, dict]:
    """Per live node that can tune: what one task asks for, and how many run at once."""
    resources, slots = {}, {}
    for node in ray.nodes():
        have = node.get("Resources", {})
        if not node.get("Alive"):
            continue
        if dialect == "cpu" and have.get("CPU", 0) >= 1:
            resources[node["NodeID"]] = {"num_cpus": have["CPU"] / tasks_per_node}
            slots[node["NodeID"]] = tasks_per_node
        elif dialect != "cpu" and have.get("GPU", 0) >= 1:
            resources[node["NodeID"]] = {"num_cpus": 0, "num_gpus": 1}
            slots[node["NodeID"]] = int(have["GPU"])
    return resources, slots


def _unit(dialect: str) -> str:
    return "CPU" if dialect == "cpu" else "GPU"


def _alive(ray, node: str) -> bool:
    return any(n["NodeID"] == node and n.get("Alive") for n in ray.nodes())


def _ray():
    try:
        import ray
    except ImportError:
        raise UnsupportedError(
            "tuning on a Ray cluster needs Ray, on this machine and on every node: "
            'pip install "powerfusion[ray]"') from None
    return ray
