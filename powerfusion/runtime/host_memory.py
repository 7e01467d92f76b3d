"""Keeping freed memory in the process, so that each step's fresh tensors do not fault.

glibc's malloc gives a large block its own mapping (from 128 KB; the threshold rises to
the largest such block freed so far, up to 32 MB) and unmaps it when freed, and it
trims the top of its heap once that much again is free. A model's step frees and
allocates the same megabytes every step, so the pages of its fresh tensors fault again
on first touch, every step. PowerFusion's own memory comes from pools
(`frontend/torch_backend/tensor_pool.py`); the outputs of convolutions and of the other
calls left to PyTorch come from malloc. On a 2-core EPYC VM a UNet ResBlock at batch 8
took 5800 page faults per step that way (19-21 ms per step; 11.6 ms with freed memory
kept), Inductor's step 2000 (15 ms; 11.9 kept).

`keep_freed_memory` sets both thresholds once per process: blocks up to MMAP_BYTES come
from the heap, and up to TRIM_BYTES of free memory at its top stay mapped. Memory a
step frees is then reused by the next step without faults; the price is that memory a
program frees for good stays in the process up to that much. Glibc only (elsewhere,
or with POWERFUSION_KEEP_FREED_MEMORY=0, malloc is left as it is).
"""

from __future__ import annotations

import ctypes
import platform
import threading

from .. import options

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3     # glibc's mallopt parameters
MMAP_BYTES = 32 << 20                            # the largest glibc accepts
TRIM_BYTES = 256 << 20

_lock = threading.Lock()
_state = {"asked": False, "kept": False}


def keep_freed_memory() -> bool:
    """Set malloc to keep freed memory (once per process, when the option allows and
    the C library is glibc); whether it keeps it now."""
    with _lock:
        if not _state["asked"]:
            _state["asked"] = True
            if options.get("POWERFUSION_KEEP_FREED_MEMORY") and \
                    platform.libc_ver()[0] == "glibc":
                try:
                    mallopt = ctypes.CDLL(None).mallopt
                    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
                    _state["kept"] = bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)
                                          and mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
                except (OSError, AttributeError):
                    pass
        return _state["kept"]


def keeps_freed_memory() -> bool:
    """Whether malloc keeps freed memory in this process now (changes nothing)."""
    return _state["kept"]
