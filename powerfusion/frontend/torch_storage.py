"""torch tensors as the numpy storage executables run on, and back, zero-copy.

Shared by `pf.jit` (api.py) and the torch.compile backend. Storage is a numpy view of
the tensor's own memory; bfloat16, which numpy lacks, is held as uint16 bit patterns.
"""

from __future__ import annotations

import numpy as np
import torch

from ..dtypes import DType

# the torch dtypes PowerFusion computes in, and back
TORCH_TO_DTYPE = {torch.bool: DType.bool, torch.int32: DType.int32, torch.int64: DType.int64,
                  torch.float16: DType.float16, torch.bfloat16: DType.bfloat16,
                  torch.float32: DType.float32, torch.float64: DType.float64}
DTYPE_TO_TORCH = {v: k for k, v in TORCH_TO_DTYPE.items()}


def resolved(t: torch.Tensor) -> torch.Tensor:
    """t detached, with its lazy conjugation and negation applied: the values kernels
    must read (a copy only when one of those bits is set)."""
    return t.detach().resolve_conj().resolve_neg()


def to_storage(t: torch.Tensor) -> np.ndarray:
    """A resolved CPU tensor's elements as a numpy view of the same memory."""
    if t.dtype is torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def from_storage(a: np.ndarray, dtype: DType) -> torch.Tensor:
    """A CPU tensor on the memory of storage array a, which holds dtype's values."""
    if dtype is DType.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


# Inductor's reinterpret_tensor: a tensor made in C++ straight on another's memory,
# without the dispatcher. Right after a matmul has swept the caches a dispatcher call
# (a view, a detach) costs tens of microseconds, its code and data fetched again; this
# about half. Not a view to autograd: no base, no shared version counter.
_reinterpret = getattr(getattr(getattr(torch._C, "_dynamo", None), "guards", None),
                       "_reinterpret_tensor", None)


def _as_strided_alias(t: torch.Tensor, size, stride, offset: int = 0) -> torch.Tensor:
    return t.detach().as_strided(size, stride, t.storage_offset() + offset)


# alias(t, size, stride, offset=0): a new tensor on t's memory laid out as (size,
# stride) (tuples), offset elements past where t starts; for values nothing outside
# PowerFusion's own code sees as a view. Chosen once: it runs on every region call.
alias = _reinterpret if _reinterpret is not None else _as_strided_alias
