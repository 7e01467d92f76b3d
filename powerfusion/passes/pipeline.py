"""The pass pipeline: naive GIR in, GIR that moves the fewest bytes out."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..gir.check import GIRError, check
from ..gir.ir import Program
from ..targets import Target
from .drop import drop
from .forward import forward
from .hoist import hoist
from .merge import merge
from .preload import preload
from .promote import promote
from .reuse import reuse
from .split import split_div
from .stage import stage_tiles
from .sums import accurate_sums
from .rows import copies_past_cache, rows_out
from .simt.collectives import place_collectives
from .simt.launch import plan_launch
from .simt.sync import place_barriers
from .traffic import footprint


@dataclass
class PassLog:
    """What each pass did to one kernel: global bytes after it, and promote's choices."""

    steps: list[tuple[str, dict]] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    programs: list[tuple[str, Program]] = field(default_factory=list)  # after each pass

    def record(self, name: str, program: Program) -> Program:
        self.steps.append((name, footprint(program)))
        self.programs.append((name, program))
        return program


def optimize(program: Program, target: Target, placement: str = "local",
             log: PassLog | None = None, transpose: tuple[int, ...] = (),
             stream: bool = False) -> Program:
    log = log if log is not None else PassLog()
    checked(program, "lowering")                  # a malformed program is a compiler bug:
    p = log.record("naive", program)               # fail here, never in gcc or at run time
    p = log.record("forward", forward(p))          # fuse loops; stored values reach their uses
    p = log.record("hoist", hoist(p))              # loop-invariant instructions leave loops
    p = log.record("merge", merge(p, target))      # one load, one instruction per value;
                                                   # rows reused across loops stay on chip
    p = log.record("drop", drop(p))                # stores and values nobody reads
    p = log.record("promote", promote(p, target, placement, log.decisions))  # live rows on chip
    p = log.record("drop", drop(p))                # what promote's choices left unread
    p = log.record("reuse", reuse(p))              # on-chip buffers share storage when they can
    if transpose:                                  # a transpose schedule's tile: strided
        p = log.record("stage", stage_tiles(p, transpose))  # reads go through LOCAL
    if target.family == "cpu":                     # i // K in a vector loop: contiguous runs
        p = log.record("split", split_div(p))
        p = log.record("preload", preload(p, target))  # shared 16-bit rows widened once
        bf16 = "avx512_bf16" in target.features    # rows rounded in one instruction;
        stream = stream or copies_past_cache(p, target)   # streaming: a knob the tuner
        if stream or bf16:                         # tries, the default for big copies
            p = log.record("rows", rows_out(p, target, stream=stream, bf16=bf16))
    p = log.record("sums", accurate_sums(p, target))  # long sums as accurate as numpy's
    if target.family == "simt":                    # how it maps onto blocks and threads,
        p = log.record("launch", plan_launch(p, target))
        p = log.record("collectives", place_collectives(p))  # where they combine partials,
        p = log.record("sync", place_barriers(p))  # and where they wait for each other
    return checked(p, "the passes")


def checked(program: Program, stage: str) -> Program:
    """program, if well formed; a malformed one is a compiler bug, reported as such."""
    try:
        check(program)
    except GIRError as e:
        raise GIRError(f"internal compiler error after {stage} (a PowerFusion bug; "
                       f"please report it): {e}") from None
    return program
