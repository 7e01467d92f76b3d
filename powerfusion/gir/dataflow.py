"""The GIR-Graph: the dataflow view of a GIR program.

Nodes are instructions (Move, Compute); an edge runs from the instruction that
wrote a value to each instruction that reads it, labelled with the memory level the
value passes through. A round trip through global memory is a red edge: the passes
exist to delete those.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ir import Level, Loop, Program, accesses, walk


@dataclass(frozen=True)
class DataflowGraph:
    nodes: tuple[tuple[int, str, str], ...]          # (id, label, enclosing loops)
    edges: tuple[tuple[int, int, str, str], ...]     # (from, to, level, buffer name)


def build_dataflow(program: Program) -> DataflowGraph:
    nodes, edges = [], []
    last_writer: dict[str, int] = {}
    for stmt, loops in walk(program.body):
        if isinstance(stmt, Loop):
            continue
        nid = len(nodes)
        scope = " / ".join(f"{lp.kind.value} {lp.var.name}" for lp in loops)
        nodes.append((nid, str(stmt).split("   (")[0], scope))
        reads, writes = accesses(stmt)
        for a in reads:
            src = last_writer.get(a.buffer.name)
            if src is not None:
                edges.append((src, nid, a.buffer.level.value, a.buffer.name))
        for a in writes:
            last_writer[a.buffer.name] = nid
    return DataflowGraph(tuple(nodes), tuple(edges))


LEVEL_COLOURS = {Level.GLOBAL.value: "red", Level.LOCAL.value: "orange",
                 Level.REGISTER.value: "darkgreen"}


def to_dot(program: Program) -> str:
    """Graphviz DOT text: one cluster per kernel, edges coloured by memory level."""
    return _dot_lines([program])


def programs_to_dot(programs) -> str:
    return _dot_lines(programs)


def _dot_lines(programs) -> str:
    lines = ["digraph gir {", "  rankdir=TB;", '  node [shape=box, fontname="monospace", '
             'fontsize=10];']
    for k, program in enumerate(programs):
        g = build_dataflow(program)
        lines.append(f'  subgraph cluster_{k} {{ label="{_esc(program.name)}";')
        for nid, label, scope in g.nodes:
            text = _esc(label + (f"\\n[{scope}]" if scope else ""))
            lines.append(f'    k{k}n{nid} [label="{text}"];')
        lines.append("  }")
        for a, b, level, name in g.edges:
            colour = LEVEL_COLOURS[level]
            lines.append(f'  k{k}n{a} -> k{k}n{b} [color={colour}, label="{_esc(name)}", '
                         f'fontcolor={colour}];')
    lines.append("}")
    return "\n".join(lines)


def _esc(s: str) -> str:
    return s.replace('"', '\\"')
