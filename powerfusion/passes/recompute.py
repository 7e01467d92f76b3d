"""recompute: instead of a global round trip, redo the work that made a value.

When a row that must stay live does not fit on chip, its consumers can recompute it
from what produced it, if that was only loads of inputs and registers that are
complete by then. Costs re-reading the inputs; saves writing and re-reading the
intermediate. Promote asks for it when the cost model says it moves fewer bytes.
"""

from __future__ import annotations

from ..gir.ir import (Access, Buffer, Compute, Level, Loop, Move, Program, Role, Stmt,
                      accesses, walk)
from .util import cores_loop, rename_registers, rename_var


def recompute(program: Program, name: str) -> Program | None:
    """Program with every load of temp `name` replaced by recomputation, or None."""
    par = cores_loop(program)
    if par is None:
        return None
    stores = [(k, s) for k, top in enumerate(par.body) if isinstance(top, Loop)
              for s in top.body if isinstance(s, Move) and s.dst.buffer.name == name]
    if len(stores) != 1:
        return None
    k, store = stores[0]
    producer: Loop = par.body[k]
    chain = _slice(producer, store.src.buffer.name)
    if not chain:                  # nothing to redo in the loop: the value comes from
        return None                # before it (hoisted), which the readers do not see
    body = list(par.body)
    for j in range(k + 1, len(body)):
        if isinstance(body[j], Loop):
            new = _replace_loads(body[j], name, store.dst.index, producer, chain, j)
            if new is None:
                return None
            body[j] = new
    return program.with_body((Loop(par.var, par.kind, tuple(body)),))


def _slice(loop: Loop, reg: str) -> list[Stmt] | None:
    """The statements of loop's body that compute register `reg`, in order."""
    accumulated = {s.dst.buffer.name for s, _ in walk(loop.body)
                   if isinstance(s, Compute) and s.is_accumulate}
    written_mem = {s.dst.buffer.name for s, _ in walk(loop.body)
                   if isinstance(s, Move) and s.dst.buffer.level is not Level.REGISTER}
    needed, chain = {reg}, []
    for s in reversed(loop.body):
        if isinstance(s, Loop) or s.dst.buffer.name not in needed:
            continue
        if isinstance(s, Compute) and s.is_accumulate:
            return None
        reads, _ = accesses(s)
        for a in reads:
            if a.buffer.level is Level.REGISTER:
                if a.buffer.name in accumulated:
                    return None            # a reduction still in progress in this loop
                needed.add(a.buffer.name)
            elif a.buffer.name in written_mem or a.buffer.role is Role.TEMP \
                    and a.buffer.level is Level.GLOBAL:
                return None
        chain.insert(0, s)
    return chain


def reload_bytes(chain: list[Stmt]) -> int:
    """Global bytes one recomputation reads."""
    return sum(s.src.buffer.dtype.itemsize for s in chain
               if isinstance(s, Move) and s.src.buffer.level is Level.GLOBAL)


def producer_chain(program: Program, name: str) -> list[Stmt] | None:
    par = cores_loop(program)
    for top in par.body if par else ():
        if isinstance(top, Loop):
            for s in top.body:
                if isinstance(s, Move) and s.dst.buffer.name == name:
                    return _slice(top, s.src.buffer.name)
    return None


def _replace_loads(loop: Loop, name, index, producer: Loop, chain, tag) -> Loop | None:
    out: list[Stmt] = []
    for s in loop.body:
        if isinstance(s, Loop):
            if any(isinstance(t, Move) and t.src.buffer.name == name for t, _ in walk(s.body)):
                return None
            out.append(s)
            continue
        if isinstance(s, Move) and s.src.buffer.name == name:
            copy = rename_var(tuple(chain), producer.var, loop.var)
            if Access(s.src.buffer, index.substitute({producer.var: loop.var})) != s.src:
                return None
            defined = {t.dst.buffer.name for t in copy}
            fresh = {n: Access(Buffer(f"{n}_{tag}", Level.REGISTER, _dtype(copy, n)))
                     for n in defined}
            copy = rename_registers(copy, fresh)
            out.extend(copy)
            out.append(Compute(None, s.dst, (copy[-1].dst,)))   # chain ends with the value
        else:
            out.append(s)
    return Loop(loop.var, loop.kind, tuple(out))


def _dtype(stmts, name):
    return next(t.dst.buffer.dtype for t in stmts if t.dst.buffer.name == name)
