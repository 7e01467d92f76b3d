"""What `pf.explain` returns: the GIR, the generated code and the bytes moved, per stage."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .gir.dataflow import programs_to_dot
from .passes.traffic import footprint


@dataclass
class Report:
    gir: str                       # optimised GIR of every kernel
    naive_gir: str                 # the same before the passes
    source: str                    # exactly what the runtime compiles
    traffic: dict                  # level -> {"read": bytes, "write": bytes}, all kernels
    global_bytes: int              # bytes moved at the outermost level
    min_global_bytes: int          # every input read once, every output written once
    passes: list = field(default_factory=list)      # per kernel: [(pass, global bytes after)]
    decisions: list = field(default_factory=list)   # per kernel: promote's placement choices
    kernels: int = 0
    choice: str = "as written"     # the alternative computation the cost model picked
    alternatives: list = field(default_factory=list)   # (name, estimated seconds) considered
    programs: list = field(default_factory=list, repr=False)        # optimised GIR values
    naive_programs: list = field(default_factory=list, repr=False)
    launches: list = field(default_factory=list)    # per kernel on a GPU: how it launches
    predicted_seconds: list = field(default_factory=list)   # per kernel: the cost model's

    @classmethod
    def from_plan(cls, plan, source: str, input_strides, launches=(),
                  seconds=()) -> "Report":
        traffic = {}
        for ck in plan.kernels:
            for level, rw in footprint(ck.program).items():
                t = traffic.setdefault(level, {"read": 0, "write": 0})
                t["read"] += rw["read"]
                t["write"] += rw["write"]
        g = traffic.get("global", {"read": 0, "write": 0})
        minimum = 0
        for node, strides in zip(plan.graph.inputs, input_strides):
            distinct = math.prod(n for n, s in zip(node.shape, strides) if s != 0)
            minimum += distinct * node.dtype.itemsize
        seen = set()
        for spec, out in zip(plan.outputs, plan.graph.outputs):
            key = spec[1] if spec[0] == "buffer" else id(out)
            if key not in seen:
                seen.add(key)
                minimum += out.size * out.dtype.itemsize
        passes = [[(name, t["global"]["read"] + t["global"]["write"]) for name, t in ck.log.steps]
                  for ck in plan.kernels]
        return cls(
            gir="\n\n".join(str(ck.program) for ck in plan.kernels),
            naive_gir="\n\n".join(str(ck.naive) for ck in plan.kernels),
            source=source, traffic=traffic, global_bytes=g["read"] + g["write"],
            min_global_bytes=minimum, passes=passes,
            decisions=[ck.log.decisions for ck in plan.kernels], kernels=len(plan.kernels),
            choice=plan.choice.label,
            alternatives=[(choice.label, cost) for choice, cost in plan.alternatives],
            programs=[ck.program for ck in plan.kernels],
            naive_programs=[ck.naive for ck in plan.kernels],
            launches=[k.describe() for k in launches], predicted_seconds=list(seconds))

    def to_dot(self, naive: bool = False) -> str:
        """The GIR-Graph as Graphviz DOT; `naive=True` shows it before the passes."""
        return programs_to_dot(self.naive_programs if naive else self.programs)

    def __str__(self) -> str:
        lines = [f"PowerFusion report: {self.kernels} kernel(s)",
                 f"  global bytes moved: {self.global_bytes:,} "
                 f"(minimum {self.min_global_bytes:,}, "
                 f"{self.global_bytes / max(self.min_global_bytes, 1):.2f}x)"]
        for level, rw in self.traffic.items():
            lines.append(f"  {level:>8}: read {rw['read']:>14,} B   write {rw['write']:>14,} B")
        if len(self.alternatives) > 1:
            options = ", ".join(f"{n}: {c * 1e6:,.1f} us" for n, c in self.alternatives)
            lines.append(f"  computation: {self.choice} (considered {options})")
        for k, steps in enumerate(self.passes):
            chain = " -> ".join(f"{name} {b:,}" for name, b in steps)
            lines.append(f"  kernel {k} global bytes by pass: {chain}")
            for d in self.decisions[k]:
                lines.append(f"    {d}")
            if k < len(self.launches):
                lines.append(f"    launch: {self.launches[k]}")
        lines += ["", "GIR (after passes):", self.gir]
        return "\n".join(lines)
