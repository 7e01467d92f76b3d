"""Reusing the CPU tensors a region allocates once nobody holds them.

torch's CPU allocator is malloc: a fresh output of a few MB is mapped anew and costs
a page fault per 4 KB on first touch, often more than the kernel that writes it
(BERT's GELU region: 4.4 ms in the model, 1.7 ms on memory already mapped). A region
runs again on every step with the same sizes, so each of its allocations keeps the
tensors it made and hands one out again when only the pool still refers to its
memory: torch counts the references to a storage (every tensor and view of it), and
that count, not Python's reference count, says whether a caller or a view it made
downstream still reads it.

The same policy as runtime/execute.py's BufferPool for numpy outputs: at most `KEEP`
tensors per allocation (one a caller holds, one to reuse), so a model's pools hold at
most twice what one step of its regions allocates.
"""

from __future__ import annotations

import threading

import torch

from ..torch_storage import alias

_use_count = torch._C._storage_Use_Count


class _Kept:
    """One pooled tensor, its storage and that storage's reference count when only
    the pool holds it."""

    __slots__ = ("base", "storage", "free_count", "nbytes", "layout")

    def __init__(self, base: torch.Tensor):
        self.base = base
        self.layout = (tuple(base.shape), base.stride())
        self.storage = base.untyped_storage()
        self.free_count = _use_count(self.storage._cdata)   # no view exists yet
        self.nbytes = self.storage.nbytes()

    def is_free(self) -> bool:
        # a storage its holder shrank (resize_) is never reused: the kept tensor would
        # point past its memory
        return (_use_count(self.storage._cdata) == self.free_count
                and self.storage.nbytes() == self.nbytes)


class TensorPool:
    """Tensors for one region's allocations (shape, dtype each), reused across calls."""

    KEEP = 2

    def __init__(self, allocations: list[tuple[tuple[int, ...], torch.dtype]]):
        self.allocations = allocations
        self.kept: list[list[_Kept]] = [[] for _ in allocations]
        # the free test and the hand-over are one step: two threads running one region
        # must never be handed the same memory
        self._lock = threading.Lock()

    def take(self) -> list[torch.Tensor]:
        """One tensor per allocation, each referenced by nothing but the pool: a new
        view of a kept tensor nobody holds, or a fresh one."""
        made = []
        with self._lock:
            for (shape, dtype), kept in zip(self.allocations, self.kept):
                for k in kept:
                    if k.is_free():
                        # a new tensor on the same memory, for the caller to hold
                        made.append(alias(k.base, *k.layout))
                        break
                else:
                    base = torch.empty(shape, dtype=dtype, device="cpu")
                    if len(kept) < self.KEEP:
                        kept.append(_Kept(base))
                        base = alias(base, *kept[-1].layout)  # the caller's own object
                    made.append(base)
        return made
