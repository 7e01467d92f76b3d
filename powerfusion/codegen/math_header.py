"""The support headers generated code includes as text: ``pf_math.h`` and ``pf_rows.h``
for C, ``pf_simt.h`` for the SIMT dialects."""

from __future__ import annotations

import functools
from pathlib import Path

HEADER_NAME = "pf_math.h"


@functools.lru_cache(maxsize=1)
def math_header() -> str:
    """Return the text of ``pf_math.h`` (read once, then cached).

    It defines branch-free, vectorisable ``static inline`` float32 functions:
    ``pf_expf``, ``pf_logf``, ``pf_tanhf``, ``pf_erff``, ``pf_sigmoidf``,
    ``pf_sinf``, ``pf_cosf``, ``pf_tanf``, ``pf_geluf``, ``pf_gelu_tanhf``, ``pf_siluf``,
    ``pf_rsqrtf``, ``pf_log1pf``, ``pf_expm1f``, ``pf_log2f``, ``pf_log10f``,
    ``pf_exp2f`` and the storage conversions ``pf_f16_to_f32``,
    ``pf_f32_to_f16``, ``pf_bf16_to_f32``, ``pf_f32_to_bf16``.
    """
    return (Path(__file__).parent / HEADER_NAME).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def simt_header() -> str:
    """Return the text of ``pf_simt.h``: the device prelude every SIMT module defines
    (pf_math.h's functions over the dialect's float functions, and the 16-bit storage
    conversions), after the printer's dialect macros."""
    return (Path(__file__).parent / "pf_simt.h").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def rows_header() -> str:
    """Return the text of ``pf_rows.h``: ``pf_stream_f32`` (non-temporal stores of a
    float32 row), ``pf_stream_fence`` and ``pf_f32_to_bf16_row``."""
    return (Path(__file__).parent / "pf_rows.h").read_text(encoding="utf-8")
