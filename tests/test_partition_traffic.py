"""Partitioning and the passes' effect on traffic, read off the GIR: no compiler needed."""

import pytest

from powerfusion.graph.ops import Op
from powerfusion.report import Report
from powerfusion.runtime.backends import get_target
from powerfusion.search.space import plan_graph

from graphs import (concat, ew, expand, group_norm, inp, layernorm, masked_scaled_softmax,
                    permute, reduce, reshape, rmsnorm, slice_, softmax, strides_of)
from powerfusion.graph.graph import Graph

CPU = get_target("cpu")


def report_of(graph: Graph) -> Report:
    strides = strides_of(graph)
    return Report.from_plan(plan_graph(graph, strides, CPU), "", strides)


FITTING = {
    "softmax": softmax(64, 1024),
    "layernorm": layernorm(64, 768),
    "rmsnorm": rmsnorm(64, 4096),
    "residual + rmsnorm (both returned)": rmsnorm(64, 4096, residual=True),
    "masked scaled softmax": masked_scaled_softmax(64, 512),
    "group norm": group_norm(2, 32, 8, 8, 8),
}


@pytest.mark.parametrize("name", FITTING)
def test_rows_that_fit_move_the_minimum(name):
    report = report_of(FITTING[name])
    assert report.kernels == 1
    assert report.global_bytes == report.min_global_bytes, str(report)


@pytest.mark.parametrize("name", FITTING)
def test_passes_never_raise_global_traffic(name):
    report = report_of(FITTING[name])
    for steps in report.passes:
        bytes_after = [b for _, b in steps]
        assert all(a >= b for a, b in zip(bytes_after, bytes_after[1:])), steps
        assert bytes_after[0] > bytes_after[-1]      # the naive form really is naive


def test_long_softmax_rows_take_the_online_form():
    # 512K floats per row cannot stay on chip: online softmax reads x twice, not three times
    m, n = 8, 1 << 19
    report = report_of(softmax(m, n))
    assert report.choice == "online softmax"
    x_bytes = m * n * 4
    assert report.global_bytes <= 3 * x_bytes + x_bytes // 100
    assert report.global_bytes > 2 * x_bytes


def test_long_layernorm_rows_take_the_one_pass_variance():
    m, n = 4, 1 << 20
    report = report_of(layernorm(m, n))
    assert report.choice == "one-pass variance"
    x_bytes = m * n * 4
    # x twice, y once, the weights once (and each row's first element, the shift)
    assert 0 <= report.global_bytes - (3 * x_bytes + 2 * n * 4) <= m * 4


def test_rows_that_do_not_fit_are_recomputed_or_reloaded_and_explained():
    m, n = 4, 1 << 20
    report = report_of(softmax(m, n))
    text = str(report)
    assert "online softmax" in text and "considered" in text


def test_reductions_over_different_axes_split_kernels():
    x = inp(0, (6, 8))
    report = report_of(Graph((x,), (reduce(Op.SUM, x, (0,)), reduce(Op.SUM, x, (1,)))))
    assert report.kernels == 2


def test_views_of_inputs_cost_nothing():
    x = inp(0, (6, 8))
    y = permute(ew(Op.EXP, slice_(x, [(0, 6, 1), (2, 8, 1)])), (1, 0))
    report = report_of(Graph((x,), (y,)))
    assert report.kernels == 1
    assert report.traffic["global"]["write"] == 6 * 6 * 4


def test_concatenation_is_a_select_not_a_copy():
    x = inp(0, (4, 8))
    x1 = slice_(x, [(0, 4, 1), (0, 4, 1)])
    x2 = slice_(x, [(0, 4, 1), (4, 8, 1)])
    report = report_of(Graph((x,), (concat([ew(Op.NEG, x2), x1], 1),)))
    assert report.kernels == 1
    assert report.global_bytes == report.min_global_bytes


def test_broadcast_of_a_row_statistic_stays_in_the_kernel():
    x = inp(0, (6, 8))
    s = reduce(Op.SUM, x, (1,))
    y = ew(Op.MUL, x, expand(reshape(reshape(s, (6,)), (6, 1)), (6, 8)))
    assert report_of(Graph((x,), (y,))).kernels == 1


def test_dot_export_names_levels():
    dot = report_of(softmax(8, 64)).to_dot()
    assert dot.startswith("digraph") and "color=darkgreen" in dot
    naive = report_of(softmax(8, 64)).to_dot(naive=True)
    assert "color=red" in naive          # global round trips before the passes


def test_rows_on_chip_read_once_instead_of_twice_win_the_tie_in_global_bytes():
    # a group of 10240 elements fits on chip either way (same global bytes); the
    # one-pass variance reads it there once instead of twice, and the time model
    # (bytes at each level over its bandwidth) sees that
    report = report_of(group_norm(8, 320, 32, 32, 32))
    assert report.choice == "one-pass variance"
    costs = dict(report.alternatives)
    assert costs["one-pass variance"] < costs["as written"]
    assert " us" in str(report) and "considered" in str(report)
