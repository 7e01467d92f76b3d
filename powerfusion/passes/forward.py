"""forward: a store followed by a load of the same element becomes a direct use.

Two steps. Sibling loops over the same extent are fused when every value the later
one reads from the earlier one is the element of the same iteration (and no
reduction result is needed before it is complete); then, in straight-line code, a
load of an element whose value is known to sit in a register is replaced by that
register. The global intermediate is left without readers; drop removes it.
"""

from __future__ import annotations

from ..gir.ir import Access, Compute, Level, Loop, Move, Program, Stmt, walk
from .util import Effects, effects, map_loops, rename_registers, rename_var


def forward(program: Program) -> Program:
    body = map_loops(program.body, fuse_loops)
    body = forward_values(body, from_loads=False)
    return program.with_body(body)


# -- loop fusion ------------------------------------------------------------------------
def fuse_loops(seq: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in seq:
        if isinstance(s, Loop):
            fused = _fuse_into(out, s)
            if fused is not None:
                out = fused
                continue
        out.append(s)
    return tuple(out)


def _fuse_into(out: list[Stmt], late: Loop) -> list[Stmt] | None:
    """`out` with `late` fused into an earlier sibling loop, or None if none can take it."""
    late_fx = effects(late)
    for j in range(len(out)):         # the earliest legal partner fuses the most work
        early = out[j]
        if not (isinstance(early, Loop) and early.kind is late.kind
                and early.var.extent == late.var.extent):
            continue
        between = out[j + 1:]
        needed = _needed_before(between, late_fx)
        early_fx = effects(early)
        if any(effects(t).depends_on(early_fx) for t in needed):
            continue
        body = rename_var(late.body, late.var, early.var)
        if not _same_iteration(early, body):
            continue
        rest = [t for t in between if not any(t is n for n in needed)]
        merged = Loop(early.var, early.kind, early.body + body)
        return out[:j] + needed + [merged] + rest
    return None


def _needed_before(between: list[Stmt], late_fx: Effects) -> list[Stmt]:
    """The statements between two loops that the later loop depends on, transitively."""
    needed: list[Stmt] = []
    need_fx = [late_fx]
    for t in reversed(between):
        t_fx = effects(t)
        if any(fx.depends_on(t_fx) for fx in need_fx):
            needed.insert(0, t)
            need_fx.append(t_fx)
    return needed


def _same_iteration(early: Loop, late_body: tuple[Stmt, ...]) -> bool:
    """Is every dependence of late_body on `early` confined to one iteration?"""
    written: dict[str, set] = {}
    acc_regs: set[str] = set()
    inner_regs: set[str] = set()
    for s, _ in walk(early.body):
        if isinstance(s, (Move, Compute)):
            dst = s.dst
            if dst.buffer.level is Level.REGISTER:
                if isinstance(s, Compute) and s.is_accumulate:
                    acc_regs.add(dst.buffer.name)
                else:
                    inner_regs.add(dst.buffer.name)
            else:
                written.setdefault(dst.buffer.name, set()).add(dst.index)
    read_in_early = set()
    for s, _ in walk(early.body):
        if isinstance(s, Move) and s.src.buffer.level is not Level.REGISTER:
            read_in_early.add(s.src.buffer.name)
    for s, _ in walk(late_body):
        if not isinstance(s, (Move, Compute)):
            continue
        srcs = [s.src] if isinstance(s, Move) else [o for o in s.srcs if isinstance(o, Access)]
        for a in srcs:
            name = a.buffer.name
            if a.buffer.level is Level.REGISTER:
                if name in acc_regs:        # a reduction's result: complete only after
                    return False
            elif name in written and written[name] != {a.index}:
                return False
        dst = s.dst
        if dst.buffer.level is not Level.REGISTER and (dst.buffer.name in read_in_early
                                                       or dst.buffer.name in written):
            return False
    return True


# -- forwarding in straight-line code ----------------------------------------------------
def forward_values(stmts: tuple[Stmt, ...], *, from_loads: bool) -> tuple[Stmt, ...]:
    """Replace loads whose element is known to be in a register.

    Known values come from stores (forward) or, with from_loads, from earlier loads
    and identical instructions (merge). Knowledge flows into nested loops, never out.
    """
    renames: dict[str, Access] = {}
    mutable = {s.dst.buffer.name for s, _ in walk(stmts)
               if isinstance(s, Compute) and s.is_accumulate}
    return _forward_seq(stmts, {}, renames, mutable if from_loads else None)


def _forward_seq(stmts, known: dict, renames: dict, merging) -> tuple[Stmt, ...]:
    """merging: None for plain forwarding; else the accumulator registers, which
    change after they are first written and so never stand for a value."""
    out: list[Stmt] = []
    for s in stmts:
        s = rename_registers((s,), renames)[0]
        if isinstance(s, Loop):
            body = _forward_seq(s.body, dict(known), renames, merging)
            out.append(s if body == s.body else Loop(s.var, s.kind, body))
            _forget_writes(known, effects(s))
            continue
        if not isinstance(s, (Move, Compute)):
            out.append(s)
            continue
        if isinstance(s, Move) and s.dst.buffer.level is Level.REGISTER \
                and s.src.buffer.level is not Level.REGISTER:
            key = (s.src.buffer.name, s.src.index)
            hit = known.get(key)
            if hit is not None and _exact(hit, s.src, s.dst):
                renames[s.dst.buffer.name] = hit
                continue
            if merging is not None and s.dst.buffer.name not in merging:
                known[key] = s.dst
        elif isinstance(s, Move) and s.dst.buffer.level is not Level.REGISTER:
            _forget_writes(known, effects(s))
            if s.src.buffer.level is Level.REGISTER:
                known[(s.dst.buffer.name, s.dst.index)] = s.src
        cse = (merging is not None and isinstance(s, Compute)
               and s.dst.buffer.name not in merging)
        if cse:
            key = ("compute", s.op, s.srcs, s.dst.buffer.dtype)
            hit = known.get(key)
            if hit is not None:                 # the same instruction on the same values
                renames[s.dst.buffer.name] = hit
                continue
        if s.dst.buffer.level is Level.REGISTER:
            name = s.dst.buffer.name
            for k in [k for k, v in known.items() if (v.buffer.name == name and not (
                    isinstance(s, Move) and v == s.dst)) or (k[0] == "compute" and any(
                    isinstance(o, Access) and o.buffer.name == name for o in k[2]))]:
                del known[k]
            if cse:
                known[("compute", s.op, s.srcs, s.dst.buffer.dtype)] = s.dst
        out.append(s)
    return tuple(out)


def _forget_writes(known: dict, fx: Effects) -> None:
    """Drop what a statement's writes make stale: memory it stores to, and instructions
    reading registers it changes (an accumulator updated in a loop)."""
    for k in [k for k in known if k[0] in fx.mem_writes or (k[0] == "compute" and any(
            isinstance(o, Access) and o.buffer.name in fx.reg_writes for o in k[2]))]:
        del known[k]


def _exact(value: Access, memory: Access, load_dst: Access) -> bool:
    """Would reading `memory` into load_dst give exactly the register `value`?"""
    buf = memory.buffer.dtype
    return (buf.compute is buf and value.buffer.dtype.compute is buf
            and load_dst.buffer.dtype.compute is buf)
