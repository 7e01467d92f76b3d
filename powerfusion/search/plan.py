"""What planning decides for a graph: the candidate it took and each kernel through
every stage before code generation."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ..gir.ir import Buffer, Program
from ..graph.graph import Graph
from ..graph.partition import Kernel
from ..passes.pipeline import PassLog
from ..runtime.execute import LaunchSequence
from ..targets import Target
from .schedule import Schedule


@dataclass(frozen=True)
class Candidate:
    """One point of the search space a graph is planned under: a computation, where its
    live rows go, and the schedule knobs (search/space.py knob_values), each as data.
    A knob at its default (1.0 or 0) is the schedule the cost model picks unaided."""

    computation: str = "as written"  # an alternative computation (graph/alternatives.py)
    placement: str = "local"         # rows that must stay live: on chip, or "global"
    streaming: bool = False          # output rows written with streaming stores
    tile: float = 1.0                # element-wise kernels: the default tile times this
    threads: int = 0                 # CPU threads of each parallel loop (0: every core)
    dynamic: int = 0                 # each thread's share cut in this many pieces, taken
                                     # dynamically (0: one static share per thread)
    vector_bits: int = 0             # the vector width preferred (0: the Target's)
    recompute: bool = False          # element-wise work a broadcast reads recomputed
                                     # per copy, never stored once (graph/canonical.py)
    interleave: bool | None = None   # CPU: short rows several per parallel iteration,
                                     # phase by phase (passes/interleave.py); None: where
                                     # the cost model finds the kernel arithmetic-bound

    @property
    def label(self) -> str:
        """How explain, the tuner and the CLI name it: "online softmax, rows global"."""
        label = self.computation
        label += ", recomputed under broadcasts" if self.recompute else ""
        if self.placement != "local":
            label += f", rows {self.placement}"
        label += ", streaming stores" if self.streaming else ""
        if self.tile != 1.0:
            label += f", tile x{self.tile:g}" if self.tile > 1 else f", tile /{1 / self.tile:g}"
        if self.threads:
            label += f", {self.threads} thread{'s' if self.threads > 1 else ''}"
        label += f", dynamic x{self.dynamic}" if self.dynamic else ""
        if self.interleave is not None:
            label += ", rows interleaved" if self.interleave else ", rows one at a time"
        return label + (f", {self.vector_bits}-bit vectors" if self.vector_bits else "")


@dataclass
class CompiledKernel:
    """One kernel through every stage, kept for explain."""

    kernel: Kernel
    schedule: Schedule
    naive: Program
    program: Program
    log: PassLog

    @property
    def interleaved(self) -> bool:
        """Whether its short rows run several per parallel iteration (passes/interleave.py)."""
        return any(name == "interleave" for name, _ in self.log.steps)


@dataclass
class Plan:
    """Everything compile_graph decides before code generation."""

    graph: Graph
    target: Target
    kernels: list[CompiledKernel]
    outputs: list[tuple]                 # per graph output: ("buffer", name) / ("input", k) ...
    out_shapes: list[tuple[int, ...]]
    buffers: dict[str, Buffer]           # every global buffer between kernels, by name
    input_names: list[str] = field(default_factory=list)
    choice: Candidate = Candidate()      # the candidate planned
    alternatives: list = field(default_factory=list)   # (Candidate, estimated seconds) considered

    @functools.cached_property
    def sequence(self) -> "LaunchSequence":
        return LaunchSequence.of(self)
