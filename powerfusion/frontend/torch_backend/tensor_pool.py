"""Reusing the CPU tensors PowerFusion allocates once nobody holds them.

torch's CPU allocator is malloc: a fresh output of a few MB is mapped anew and costs
a page fault per 4 KB on first touch, often more than the kernel that writes it
(BERT's GELU region: 4.4 ms in the model, 1.7 ms on memory already mapped). A graph
runs again on every step with the same sizes, so a pool keeps the tensors it made and
hands one out again when only the pool still refers to its memory: torch counts the
references to a storage (every tensor and view of it), and that count, not Python's
reference count, says whether a caller or a view it made downstream still reads it.

One pool serves a whole compiled graph (its regions' lean paths and its large
matmuls, `launcher.specialise`), shared by size: the pool holds about what is live at
one moment, as Inductor's buffer planning does, not every intermediate of the graph
(per-region pools held 111 MB for a 6-layer BERT at batch 8, 18 MB more per layer; the
shared one 36 MB at any depth). A region's general path has a pool of its own. The
same bound as runtime/execute.py's BufferPool for numpy outputs: at most `KEEP`
tensors per allocation of a size (one a caller holds, one to reuse).
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

    __slots__ = ("base", "storage", "free_count", "nbytes")

    def __init__(self, base: torch.Tensor):
        self.base = base
        self.storage = base.untyped_storage()
        self.free_count = _use_count(self.storage._cdata)   # no view exists yet
        self.nbytes = self.storage.nbytes()

    def is_free(self) -> bool:
        # a storage its holder shrank (resize_) is never reused: the kept tensor would
        # point past its memory
        return (_use_count(self.storage._cdata) == self.free_count
                and self.storage.nbytes() == self.nbytes)


class TensorPool:
    """Tensors kept by element count and dtype for the allocations of the callers it
    made a `taker` for: what one caller dropped is handed to the next allocation of
    that size, in the same step or a later one. Each size's tensors are tried latest
    hand-out first (likely the latest dropped: in the caches); a size keeps at most
    KEEP tensors per allocation of that size."""

    KEEP = 2

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
            self.limit[key] += self.KEEP
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

    def release(self) -> None:
        """Forget the tensors kept so far (their holders keep theirs)."""
        with self._lock:
            for kept in self.kept.values():
                kept.clear()

    def nbytes(self) -> int:
        """The bytes this pool keeps."""
        return sum(k.nbytes for kept in self.kept.values() for k in kept)

    def addresses(self) -> dict[tuple, list[int]]:
        """{(element count, dtype): the data pointer of each tensor kept}."""
        with self._lock:
            return {key: [k.base.data_ptr() for k in kept] for key, kept in self.kept.items()}


def own_pool(allocations: list[tuple[tuple[int, ...], torch.dtype]]) -> TensorPool:
    """A pool serving one caller's allocations (shape, dtype each) alone; its
    `take()` hands out one tensor per allocation."""
    pool = TensorPool()
    pool.take = pool.taker(allocations)
    return pool
