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

import collections
import math
import threading

import torch

from ...graph.views import contiguous_strides
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

    def release(self) -> None:
        """Forget the tensors kept so far (their holders keep theirs)."""
        with self._lock:
            self.kept = [[] for _ in self.allocations]


class SharedPool:
    """The memory of every pooled allocation of one compiled graph, shared by element
    count and dtype: what one region (or matmul) dropped is handed to the next
    allocation of that size, in the same step or a later one.

    Per-allocation pools keep every intermediate of the graph alive at once (a model's
    whole forward, KEEP times over); shared, the pool holds about what is live at one
    moment, as Inductor's buffer planning does, and a step reuses memory it touched a
    moment ago. Each size's tensors are tried latest hand-out first; a size keeps at
    most KEEP tensors per allocation of that size in the graph."""

    def __init__(self):
        self.kept: dict[tuple, list[_Kept]] = {}
        self.limit: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def taker(self, allocations: list[tuple[tuple[int, ...], torch.dtype]]):
        """A `take()` for one caller's allocations (shape, dtype each): one contiguous
        tensor per allocation, each referenced by nothing but this pool."""
        wanted = []
        for shape, dtype in allocations:
            key = (math.prod(shape), dtype)
            self.limit[key] += TensorPool.KEEP
            wanted.append((self.kept.setdefault(key, []), tuple(shape),
                           contiguous_strides(tuple(shape)), dtype, key))
        lock, limit = self._lock, self.limit

        def take() -> list[torch.Tensor]:
            made = []
            with lock:                   # the free test and the hand-over are one step
                for kept, shape, stride, dtype, key in wanted:
                    for j in range(len(kept) - 1, -1, -1):
                        k = kept[j]
                        if k.is_free():  # the latest handed out that is free again
                            del kept[j]  # (likely the latest dropped: in the caches)
                            kept.append(k)
                            made.append(alias(k.base, shape, stride))
                            break
                    else:
                        base = torch.empty(shape, dtype=dtype, device="cpu")
                        if len(kept) < limit[key]:
                            kept.append(_Kept(base))
                            base = alias(base, shape, stride)   # the caller's own object
                        made.append(base)
            return made
        return take

    def nbytes(self) -> int:
        """The bytes this pool keeps."""
        return sum(k.nbytes for kept in self.kept.values() for k in kept)
