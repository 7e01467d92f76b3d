"""Reductions and transposes over operands laid out otherwise than row-major.

A channels-last activation ([N, C, H, W] with C innermost in memory) summed over H and
W, or a matrix read transposed, is walked in its memory order (`graph.memory_order`,
the CPU's transpose tiles): the same values as numpy's, whatever the strides.
"""

from __future__ import annotations

import numpy as np
import pytest

from powerfusion.graph.memory_order import reduce_in_memory_order
from powerfusion.graph.ops import Op
from powerfusion.graph.views import contiguous_strides

from graphs import inp, permute, reduce
from helpers import check_jit

RNG = np.random.default_rng(11)




def channels_last(n, c, h, w, dtype=np.float32):
    """An [n, c, h, w] array with c innermost in memory, as torch's channels_last."""
    return RNG.standard_normal((n, h, w, c)).astype(dtype).transpose(0, 3, 1, 2)


# -- the rewrite itself -----------------------------------------------------------------

def test_a_reduction_over_a_channels_last_operand_is_rebuilt_in_memory_order():
    x = inp(0, (2, 64, 8, 8))
    red = reduce(Op.SUM, x, (2, 3))
    nhwc = (64 * 8 * 8, 1, 8 * 64, 64)             # element strides of channels-last
    (out,) = reduce_in_memory_order([red], {id(x): nhwc})
    assert out.op is Op.RESHAPE and out.shape == red.shape   # only unit axes move back
    inner = out.srcs[0]
    assert inner.op is Op.SUM and inner.srcs[0].op is Op.PERMUTE
    assert inner.srcs[0].shape[-1] == 64           # channels innermost, as in memory


def test_a_result_whose_kept_axes_change_order_is_permuted_back():
    x = inp(0, (2, 64, 8, 8))
    red = reduce(Op.SUM, x, (2,))                  # over H only: N, W, C kept, C innermost
    (out,) = reduce_in_memory_order([red], {id(x): (64 * 8 * 8, 1, 8 * 64, 64)})
    assert out.op is Op.PERMUTE and out.shape == red.shape == (2, 64, 1, 8)
    check_jit(lambda x: (x.sum(axis=2), x.max(axis=3)), channels_last(2, 64, 8, 8))


def test_row_major_and_small_operands_are_left_as_they_are():
    x = inp(0, (2, 64, 8, 8))
    red = reduce(Op.SUM, x, (2, 3))
    assert reduce_in_memory_order([red], {id(x): contiguous_strides(x.shape)}) == [red]
    small = inp(1, (2, 4, 4, 4))
    red_small = reduce(Op.SUM, small, (2, 3))
    assert reduce_in_memory_order([red_small], {id(small): (64, 1, 16, 4)}) == [red_small]


def test_a_reduction_already_walking_memory_order_is_kept():
    x = inp(0, (64, 96))
    t = permute(x, (1, 0))                         # read transposed: last axis steps 96
    red = reduce(Op.SUM, t, (0,))                  # ...and its unit-step axis is reduced
    (out,) = reduce_in_memory_order([red], {id(x): (96, 1)})
    assert out.op is Op.RESHAPE and out.srcs[0].op is Op.SUM  # by columns of x's rows
    red_rows = reduce(Op.SUM, x, (1,))
    assert reduce_in_memory_order([red_rows], {id(x): (96, 1)}) == [red_rows]


# -- compiled against numpy -------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 64, 8, 8), (3, 40, 7, 9), (1, 128, 16, 16)])
def test_sums_and_means_of_a_channels_last_input(shape):
    x = channels_last(*shape)
    check_jit(lambda x: (x.sum(axis=(2, 3)), x.mean(axis=(2, 3), keepdims=True),
                      x.max(axis=(2, 3))), x)


def test_a_sum_over_channels_of_a_channels_last_input():
    x = channels_last(2, 96, 6, 10)
    check_jit(lambda x: (x.sum(axis=1), (x * x).sum(axis=(1, 2))), x)


def group_norm(x, w, b, groups=8, eps=1e-5):
    n, c, h, wd = x.shape
    xg = x.reshape(n, groups, c // groups, h, wd)
    mean = xg.mean(axis=(2, 3, 4), keepdims=True)
    var = ((xg - mean) ** 2).mean(axis=(2, 3, 4), keepdims=True)
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(n, c, h, wd)
    return y * w.reshape(1, c, 1, 1) + b.reshape(1, c, 1, 1)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_group_norm_in_either_layout(layout):
    x = channels_last(2, 64, 12, 12) if layout == "channels_last" \
        else RNG.standard_normal((2, 64, 12, 12)).astype(np.float32)
    w = RNG.standard_normal(64).astype(np.float32)
    b = RNG.standard_normal(64).astype(np.float32)
    check_jit(group_norm, x, w, b, tol=1e-4)


@pytest.mark.parametrize("shape", [(64, 96), (33, 130), (1, 500), (257, 3)])
def test_a_transposed_read_times_a_row(shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    w = RNG.standard_normal(shape[0]).astype(np.float32)
    check_jit(lambda x, w: (x.T * w, x.T + 1.0), x, w)


def test_nchw_to_channels_last_with_an_activation():
    x = RNG.standard_normal((2, 48, 10, 10)).astype(np.float32)
    check_jit(lambda x: np.transpose(x, (0, 2, 3, 1)) * 0.5 + 1.0, x)
