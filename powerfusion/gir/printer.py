"""GIR as readable text, and the bytes a program moves at each memory level.

    kernel softmax(x: float32[4, 8] global input, y: float32[4, 8] global output)
      local tile: float32[8]
      cores p in 0..4:
        compute m: float32 <- set(-inf)
        simd i in 0..8:
          move r: float32 <- x[8*p + i]   (global -> register)
          compute m: float32 <- maximum(m, r)
        ...

The header names the kernel and its params (`name: dtype[shape] level role`); LOCAL
buffers follow, declared in order of first use. A register written by a statement
shows its dtype there, since the dtype decides rounding. The text is deterministic.
"""

from __future__ import annotations

import math

from .ir import (Access, Barrier, Buffer, Collective, Compute, Launch, Level, Loop, Move, Program, Stmt,
                 walk)

INDENT = "  "


def format_program(program: Program) -> str:
    lines = [f"kernel {program.name}({', '.join(map(_param, program.params))})"]
    if program.launch is not None:
        lines += [INDENT + line for line in format_launch(program.launch)]
    for buf in _locals(program):
        lines.append(f"{INDENT}local {buf.name}: {buf.dtype}{list(buf.shape)}")
    _format_block(program.body, 1, lines)
    return "\n".join(lines)


def format_launch(launch: Launch) -> list[str]:
    """A SIMT launch in a few lines: the block, how units share it, where LOCAL lives."""
    unit = (f", a unit spread over a cluster of {launch.cluster} blocks" if launch.cluster > 1
            else f", {launch.rows} units per block" if launch.rows > 1 else "")
    lines = [f"launch {launch.blocks} blocks of {launch.block} threads{unit}: "
             f"{launch.lanes} lanes per unit, chunks of {launch.chunk}, "
             f"int{launch.index_bits} indices"
             + (f" (one block runs every unit: {launch.serial})" if launch.serial else "")]
    for r in launch.private:
        where = f"{r.in_registers} in registers" + (
            f", {r.per_thread - r.in_registers} in shared {r.rest.name}" if r.rest else "")
        lines.append(f"  private row {r.name}: {r.per_thread} per thread ({where})")
    for buf, at in launch.shared:
        lines.append(f"  shared {buf.name} at byte {at}")
    if launch.shared:
        room = "" if launch.shared_room is None else f" of {launch.shared_room:,}"
        lines.append(f"  shared memory {launch.shared_bytes:,} B{room} per block")
    return lines


def format_stmt(stmt: Stmt) -> str:
    """One statement on one line (a loop: its header)."""
    if isinstance(stmt, Loop):
        return f"{stmt}:"
    if isinstance(stmt, (Barrier, Collective)):
        return str(stmt)
    if isinstance(stmt, Move):
        return (f"move {_dst(stmt.dst)} <- {stmt.src}"
                f"   ({stmt.src.buffer.level.value} -> {stmt.dst.buffer.level.value})")
    name = stmt.op.name.lower() if stmt.op else "set"
    return f"compute {_dst(stmt.dst)} <- {name}({', '.join(map(str, stmt.srcs))})"


def _format_block(stmts: tuple[Stmt, ...], depth: int, lines: list[str]) -> None:
    for s in stmts:
        lines.append(INDENT * depth + format_stmt(s))
        if isinstance(s, Loop):
            _format_block(s.body, depth + 1, lines)


def _param(buf: Buffer) -> str:
    return f"{buf.name}: {buf.dtype}{list(buf.shape)} {buf.level.value} {buf.role.value}"


def _dst(access: Access) -> str:
    if access.buffer.level is Level.REGISTER:
        return f"{access}: {access.buffer.dtype}"
    return str(access)


def _locals(program: Program) -> list[Buffer]:
    found: dict[str, Buffer] = {}
    for s, _ in walk(program.body):
        if isinstance(s, (Move, Compute)):
            for a in _operand_accesses(s):
                if a.buffer.level is Level.LOCAL:
                    found.setdefault(a.buffer.name, a.buffer)
    return list(found.values())


def _operand_accesses(s: Move | Compute) -> list[Access]:
    if isinstance(s, Move):
        return [s.src, s.dst]
    return [o for o in s.srcs if isinstance(o, Access)] + [s.dst]


# -- traffic ---------------------------------------------------------------------------
def traffic(program: Program) -> dict[str, dict[str, int]]:
    """Bytes read and written at each level, counted by execution.

    Every Move reads its src's itemsize from the src's level and writes its dst's
    itemsize to the dst's level, once per iteration of every enclosing loop, whether
    or not its index depends on that loop's variable (removing redundant moves is
    the passes' job). Computes are not counted: their operands are registers already.
    Unlike passes/traffic.footprint, repeated reads of the same element count again.
    """
    out = {level.value: {"read": 0, "write": 0} for level in Level}
    for s, loops in walk(program.body):
        if isinstance(s, Move):
            times = math.prod(lp.var.extent for lp in loops)
            out[s.src.buffer.level.value]["read"] += times * s.src.buffer.dtype.itemsize
            out[s.dst.buffer.level.value]["write"] += times * s.dst.buffer.dtype.itemsize
    return out


def global_bytes(program: Program) -> int:
    """Bytes read plus written at the global level, by `traffic`."""
    g = traffic(program)["global"]
    return g["read"] + g["write"]
