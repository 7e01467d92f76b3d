"""SIMT-legalised GIR, run by the interpreter as a block's threads would run it.

The SIMT passes record a program's launch and place its collectives and barriers in
GIR (passes/simt/). The interpreter runs such a program thread by thread as the launch
maps it (each thread's partial of a reduction, combined by the Collective) and reports
a race on shared memory. So every SIMT test case's legalised GIR must match numpy with
no race; taking out any barrier the sync pass placed must be a race the interpreter
reports; a collective missing is an error and one with the wrong op a wrong answer.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import graphs as G
from powerfusion.runtime.cpu_executable import InterpretedExecutable
from powerfusion.search.space import plan_graph
from powerfusion.gir.check import GIRError
from powerfusion.gir.interpreter import run
from powerfusion.gir.ir import Barrier, Collective, Level, Loop, Program, walk
from powerfusion.graph.graph import Graph
from powerfusion.graph.ops import Op
from powerfusion.passes.simt.launch import plan_launch
from powerfusion.passes.simt.sync import place_barriers
from powerfusion.runtime.simt_executable import simt_target
from test_simt import CASES, TRANSCENDENTAL, _inputs, _reverse_rows, assert_matches_oracle

DIALECTS = [("cuda", "h100"), ("hip", None), ("opencl", None)]
# a few seconds each in the interpreter: run for one dialect
SLOW = {"long_softmax", "long_layernorm", "long_bfloat16_rows", "split_column_sum",
        "split_column_max"}


@pytest.mark.parametrize("dialect,device", DIALECTS, ids=[d for d, _ in DIALECTS])
@pytest.mark.parametrize("case", sorted(CASES))
def test_legalised_gir_matches_numpy_without_races(case, dialect, device, rng):
    if case in SLOW and dialect != "cuda":
        pytest.skip("one of the interpreter's slowest cases: run for CUDA only")
    graph = CASES[case]()
    plan = plan_graph(graph, G.strides_of(graph), simt_target(dialect, device))
    assert all(ck.program.launch is not None for ck in plan.kernels)
    inputs = _inputs(graph, rng)
    got = InterpretedExecutable(plan).run(inputs)
    assert_matches_oracle(graph, inputs, got, case in TRANSCENDENTAL)


def test_a_row_spread_over_a_cluster_runs_as_its_threads_would(rng):
    """A row too long for one block (here: an H100 described with 64-thread blocks and
    4 KB of shared memory each) spreads over a thread block cluster; its lanes span the
    blocks, and their partial sums meet in one reduction."""
    h100 = simt_target("cuda", "h100")
    small = dataclasses.replace(h100, max_block=64, memory=tuple(
        dataclasses.replace(m, capacity=4096) if m.level is Level.LOCAL else m
        for m in h100.memory))
    graph = G.softmax(3, 4000)
    plan = plan_graph(graph, G.strides_of(graph), small)
    launches = [ck.program.launch for ck in plan.kernels]
    assert any(launch.cluster > 1 for launch in launches), launches
    inputs = _inputs(graph, rng)
    assert_matches_oracle(graph, inputs, InterpretedExecutable(plan).run(inputs), True)


# -- barriers -----------------------------------------------------------------------------
def _barriers(stmts, path=()):
    """The path (statement indices, loop by loop) of every Barrier."""
    for k, s in enumerate(stmts):
        if isinstance(s, Barrier):
            yield path + (k,)
        elif isinstance(s, Loop):
            yield from _barriers(s.body, path + (k,))


def _without(stmts, path):
    k = path[0]
    if len(path) == 1:
        return stmts[:k] + stmts[k + 1:]
    s = stmts[k]
    return stmts[:k] + (Loop(s.var, s.kind, _without(s.body, path[1:])),) + stmts[k + 1:]


def _transpose(shape, perm) -> Graph:
    x = G.inp(0, shape)
    return Graph((x,), (G.ew(Op.MUL, G.permute(x, perm), G.const(2.0)),))


def _programs_with_barriers(dialect: str, device) -> list[tuple[str, Program, dict]]:
    """(what, legalised program, its arrays): a row read back reversed through a LOCAL
    tile, and transposes staged through shared-memory tiles."""
    rng = np.random.default_rng(0)
    target = simt_target(dialect, device)
    out = []
    reverse = place_barriers(plan_launch(_reverse_rows(5, 300), target))
    out.append(("reverse_rows", reverse,
                {"x": rng.standard_normal(5 * 300).astype(np.float32)}))
    for shape, perm in (((70, 45), (1, 0)), ((3, 40, 37), (0, 2, 1))):
        graph = _transpose(shape, perm)
        plan = plan_graph(graph, G.strides_of(graph), target)
        (ck,) = plan.kernels
        out.append((f"transpose{shape}", ck.program,
                    {"in0": rng.standard_normal(int(np.prod(shape))).astype(np.float32)}))
    return out


@pytest.mark.parametrize("dialect,device", DIALECTS, ids=[d for d, _ in DIALECTS])
def test_every_barrier_the_sync_pass_places_is_needed(dialect, device):
    for what, program, arrays in _programs_with_barriers(dialect, device):
        paths = list(_barriers(program.body))
        assert paths, f"{what}: the sync pass placed no barrier"
        reference = run(program, {k: v.copy() for k, v in arrays.items()})   # no race
        for path in paths:
            broken = dataclasses.replace(program, body=_without(program.body, path))
            with pytest.raises(GIRError, match="threads race on"):
                run(broken, {k: v.copy() for k, v in arrays.items()})
        out = next(b.name for b in program.params if b.role.value == "output")
        assert np.isfinite(reference[out]).all()


def test_the_reversed_row_is_right_and_its_barriers_sit_around_the_tile():
    """One barrier between writing the tile and reading it back reversed, one at the end
    of the row, before the next row overwrites the tile."""
    program = place_barriers(plan_launch(_reverse_rows(5, 300), simt_target("cuda", "h100")))
    (cores,) = program.body
    kinds = [type(s).__name__ for s in cores.body]
    assert kinds == ["Loop", "Barrier", "Loop", "Barrier"]
    x = np.random.default_rng(1).standard_normal(1500).astype(np.float32)
    y = run(program, {"x": x})["y"]
    np.testing.assert_array_equal(y.reshape(5, 300), x.reshape(5, 300)[:, ::-1])


def test_a_thread_reading_its_own_stash_needs_no_barrier():
    """softmax keeps each thread's part of the row in registers (private rows): no
    thread reads another's element, so there is nothing to synchronise."""
    graph = G.softmax(4, 1000)
    plan = plan_graph(graph, G.strides_of(graph), simt_target("cuda", "h100"))
    (ck,) = plan.kernels
    assert ck.program.launch.private and not list(_barriers(ck.program.body))


# -- collectives ---------------------------------------------------------------------------
def _with_collectives(stmts, change):
    """The statements with every Collective c replaced by change(c) (None: removed)."""
    out = []
    for s in stmts:
        if isinstance(s, Collective):
            s = change(s)
        elif isinstance(s, Loop):
            s = Loop(s.var, s.kind, _with_collectives(s.body, change))
        if s is not None:
            out.append(s)
    return tuple(out)


def _softmax_program():
    graph = G.softmax(4, 1000)
    (ck,) = plan_graph(graph, G.strides_of(graph), simt_target("cuda", "h100")).kernels
    x = np.random.default_rng(2).standard_normal(4000).astype(np.float32)
    e = np.exp(x.reshape(4, 1000) - x.reshape(4, 1000).max(axis=1, keepdims=True))
    return ck.program, x, e / e.sum(axis=1, keepdims=True)


def test_each_accumulating_loop_ends_in_a_collective_over_the_threads_sharing_the_row():
    program, x, want = _softmax_program()
    found = [s for s, _ in walk(program.body) if isinstance(s, Collective)]
    assert [(c.op, c.scope) for c in found] == [(Op.MAXIMUM, "block"), (Op.ADD, "block")]
    np.testing.assert_allclose(run(program, {"in0": x})["out0"].reshape(4, 1000), want,
                               rtol=1e-5, atol=1e-7)
    short = G.softmax(4096, 256)                    # a warp per row, 8 rows per block
    (ck,) = plan_graph(short, G.strides_of(short), simt_target("cuda", "h100")).kernels
    assert {s.scope for s, _ in walk(ck.program.body) if isinstance(s, Collective)} == {"lanes"}


def test_a_missing_collective_is_an_error():
    program, x, _ = _softmax_program()
    broken = dataclasses.replace(program, body=_with_collectives(program.body, lambda c: None))
    with pytest.raises(GIRError, match="no collective combines"):
        run(broken, {"in0": x})


def test_a_wrong_collective_gives_a_wrong_answer():
    program, x, want = _softmax_program()
    for wrong in ({Op.MAXIMUM: Op.MINIMUM}, {Op.ADD: Op.MAXIMUM}):
        body = _with_collectives(program.body, lambda c: Collective(wrong.get(c.op, c.op),
                                                                    c.dst, c.scope))
        got = run(dataclasses.replace(program, body=body), {"in0": x})["out0"]
        assert not np.allclose(got.reshape(4, 1000), want, rtol=1e-3)


def test_explain_shows_the_launch_the_collectives_and_the_barriers():
    import powerfusion as pf

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    gir = pf.explain(softmax, np.zeros((64, 4096), np.float32), target="cuda").gir
    assert "launch 64 blocks of 256 threads: 256 lanes per unit, chunks of 4" in gir
    assert "private row" in gir and "(16 in registers)" in gir
    assert gir.count("over the block") == 2             # the row max and the row sum
    transpose = pf.explain(lambda x: x.T * 2, np.zeros((70, 45), np.float32),
                           target="cuda").gir
    assert sum(line.strip() == "barrier" for line in transpose.splitlines()) == 2
    assert "shared " in transpose and "at byte 0" in transpose
