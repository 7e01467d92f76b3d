"""promote: a global intermediate that must stay live moves on chip, if it fits.

After forward, a temp that is still read is one whose value must outlive the loop
that wrote it (a row needed again after a reduction over it). Each parallel unit
touches only its own region of it; when that region fits the unit's LOCAL capacity
(from the Target) the buffer becomes a per-unit LOCAL tile. What does not fit stays
in global memory (re-loaded): that choice, and the schedule's `placement` knob, are
recorded so `explain` can show them.
"""

from __future__ import annotations

from ..gir.ir import Access, Buffer, Level, Program, Role, walk, accesses, map_accesses
from ..targets import Target
from .recompute import producer_chain, recompute, reload_bytes
from .util import cores_loop, local_bytes_in_use, split_region


def promote(program: Program, target: Target, placement: str = "local",
            decisions: list | None = None) -> Program:
    par = cores_loop(program)
    if par is None:
        return program
    in_use = local_bytes_in_use(program.body)
    # one block's room first; a GPU cluster's only where recomputing cannot help (more
    # blocks per row cost cluster-wide barriers; an exp is nearly free)
    budget, cluster_budget = target.row_bytes - in_use, target.cluster_row_bytes - in_use
    regions: dict[str, list] = {}
    for s, _ in walk(par.body):
        reads, writes = accesses(s)
        for a in reads + writes:
            b = a.buffer
            if b.level is Level.GLOBAL and b.role is Role.TEMP:
                regions.setdefault(b.name, []).append(split_region(a.index, par.var))
    moved: dict[str, Buffer] = {}
    for name, regs in sorted(regions.items()):
        buf = next(p for p in program.params if p.name == name)
        if any(r is None for r in regs) or len({r[0] for r in regs}) != 1:
            _note(decisions, name, "stays global: its region is not one per parallel unit")
            continue
        size = max(r[1].bounds()[1] for r in regs) + 1
        tile = Buffer(name, Level.LOCAL, buf.dtype, (size,), Role.TEMP)
        if placement != "local":
            _note(decisions, name, f"stays global ({tile.nbytes} B per unit): "
                                   f"schedule placement={placement!r}")
        else:
            spread = tile.nbytes > budget        # fits a cluster's blocks only, if any
            free = _try_recompute(program, buf, max_reload=0) if spread else None
            if not spread or (free is None and tile.nbytes <= cluster_budget):
                budget -= tile.nbytes
                cluster_budget -= tile.nbytes
                moved[name] = tile
                _note(decisions, name, f"promoted to local: {tile.nbytes} B per unit" + (
                    ", spread over a thread block cluster's blocks" if spread else ""))
                continue
            why = f"{tile.nbytes} B per unit exceeds the {budget} B left on chip"
            redone = free if free is not None else _try_recompute(program, buf)
            if redone is not None:
                program = redone
                _note(decisions, name, f"recomputed where used: {why}; " + (
                    "its inputs are on chip" if free is not None else
                    "re-reading inputs moves fewer bytes than a global round trip"))
            else:
                _note(decisions, name, f"stays global: {why}; written once, re-loaded")
    if not moved:
        return program

    def fix(a: Access) -> Access:
        tile = moved.get(a.buffer.name)
        if tile is None or a.buffer.level is not Level.GLOBAL:
            return a
        return Access(tile, split_region(a.index, par.var)[1])

    params = tuple(p for p in program.params if p.name not in moved)
    return type(program)(program.name, params, map_accesses(program.body, fix))


def _try_recompute(program: Program, buf: Buffer, max_reload: int | None = None
                   ) -> Program | None:
    """Recompute when re-reading the producer's inputs costs less than write + read
    (or, given max_reload, reads at most that many global bytes per element)."""
    chain = producer_chain(program, buf.name)
    limit = 2 * buf.dtype.itemsize - 1 if max_reload is None else max_reload
    if chain is None or reload_bytes(chain) > limit:
        return None
    return recompute(program, buf.name)


def _note(decisions, name, text) -> None:
    if decisions is not None:
        decisions.append(f"{name}: {text}")
