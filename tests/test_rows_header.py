"""pf_rows.h: whole-row helpers agree bit for bit with pf_math.h's element conversions."""

from __future__ import annotations

import numpy as np
import pytest

from powerfusion.codegen.c import CPrinter
from powerfusion.codegen.math_header import rows_header
from powerfusion.runtime.cpu import load_kernel

SOURCE = "\n".join([*CPrinter.prelude(), rows_header(), r"""
void convert(void **args) {
    const float *src = (const float *)args[0];
    uint16_t *row = (uint16_t *)args[1], *each = (uint16_t *)args[2];
    const int64_t n = *(const int64_t *)args[3];
    pf_f32_to_bf16_row(row, src, n);
    for (int64_t i = 0; i < n; ++i) each[i] = pf_f32_to_bf16(src[i]);
}
"""])


def _bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint32).view(np.float32)


@pytest.fixture(scope="module")
def convert():
    return load_kernel(SOURCE, "convert", 4, name="rows_header_test")


def _run(convert, x: np.ndarray):
    row, each = np.zeros(x.size, np.uint16), np.ones(x.size, np.uint16)
    n = np.array([x.size], np.int64)
    convert([x.ctypes.data, row.ctypes.data, each.ctypes.data, n.ctypes.data])
    return row, each


def test_bf16_rows_round_exactly_like_the_element_conversion(convert):
    rng = np.random.default_rng(0)
    special = [0, 0x80000000, 0x7F800000, 0xFF800000,              # zeros, infinities
               0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF,     # quiet and signalling NaNs
               0x7FFFFFFF, 0xFFFFFFFF, 0x7F7FFFFF, 0x7F7F8000,     # NaN payloads, overflow
               0x00000001, 0x807FFFFF, 0x00008000, 0x00018000,     # subnormals, ties among them
               0x3F808000, 0x3F818000, 0x3F80FFFF, 0x3F807FFF]     # ties to even, near ties
    parts = [_bits(special),
             _bits(rng.integers(0, 2 ** 32, 1 << 20, dtype=np.uint64)),       # any bits
             _bits(rng.integers(0, 1 << 23, 4096, dtype=np.uint64)),          # subnormals
             (rng.standard_normal(4096) * 3).astype(np.float32)]
    x = np.concatenate(parts).astype(np.float32)
    for n in (x.size, 37, 16, 15, 1):             # whole vectors, ragged ends, short rows
        row, each = _run(convert, np.ascontiguousarray(x[:n]))
        np.testing.assert_array_equal(row, each)
    # a vector of normal values with one subnormal among them takes the exact path
    mixed = (rng.standard_normal(64)).astype(np.float32)
    mixed[21] = _bits([0x00012345])[0]
    row, each = _run(convert, mixed)
    np.testing.assert_array_equal(row, each)
    assert row[21] != 0                            # not flushed to zero
