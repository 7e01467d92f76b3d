"""The vectorisable C math header (pf_math.h) as text, for printers to inline."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def math_header() -> str:
    return (Path(__file__).parent / "pf_math.h").read_text()
