"""Counters of what the torch.compile backend did, since the last reset.

Kept apart from `torch_backend` so that `powerfusion.compile_stats()` works (and
reads zeros) without importing torch.

- graphs: aten FX graphs the backend received from AOTAutograd (forward, backward
  and inference graphs each count);
- regions: runs of memory-intensive aten ops handed to PowerFusion as one graph;
- compiles: (region, call signature) pairs compiled to native code;
- kernels: PowerFusion kernels in those compiled regions;
- fused_ops: aten ops that run inside PowerFusion kernels (`fused_by_op` by name);
- fallback_ops: aten ops PowerFusion could not take, run eagerly by PyTorch with a
  warning (`fallback_by_op` by name);
- failed_regions: regions that fell back to PyTorch's eager aten calls because
  tracing, compiling or running them failed (their ops count in fallback_ops);
- library_ops: ops left to PyTorch by design (matmul, convolution, attention,
  embedding, indexing, random numbers, tensor creation);
- view_chains: runs of aten view ops between kernels and library calls, each made one
  `as_strided` call;
- attention: matmul -> scale -> mask -> softmax -> matmul patterns of inference graphs
  made one fused attention call;
- layout_copies: copies to the contiguous layout made only when the tensor is laid
  out otherwise (`contiguous`), their result being only read;
- constants: values computed from no graph input (a causal mask, position ids),
  computed once at compile time instead of on every call.
"""

from __future__ import annotations

import threading
from collections import Counter

_COUNTERS = ("graphs", "regions", "compiles", "kernels", "fused_ops", "fallback_ops",
             "failed_regions", "library_ops", "view_chains", "attention", "layout_copies",
             "constants")

_lock = threading.Lock()
_counts: Counter = Counter()
_fused_by_op: Counter = Counter()
_fallback_by_op: Counter = Counter()
_warned: set = set()


def compile_stats() -> dict:
    """A snapshot: {"graphs": n, "regions": n, "compiles": n, "kernels": n,
    "fused_ops": n, "fallback_ops": n, "failed_regions": n, "library_ops": n,
    "fused_by_op": {...}, "fallback_by_op": {...}} counted since the last `reset_compile_stats()`."""
    with _lock:
        stats = {name: _counts[name] for name in _COUNTERS}
        stats["fused_by_op"] = dict(sorted(_fused_by_op.items()))
        stats["fallback_by_op"] = dict(sorted(_fallback_by_op.items()))
    return stats


def reset_compile_stats() -> None:
    """Zero every counter; warnings already given may be given again."""
    with _lock:
        _counts.clear()
        _fused_by_op.clear()
        _fallback_by_op.clear()
        _warned.clear()


def count(name: str, n: int = 1) -> None:
    assert name in _COUNTERS, name
    with _lock:
        _counts[name] += n


def count_ops(kind: str, op_names, sign: int = 1) -> None:
    """Add (or with sign=-1 take back) ops to the fused or fallback tallies."""
    by_op = _fused_by_op if kind == "fused_ops" else _fallback_by_op
    with _lock:
        for name in op_names:
            _counts[kind] += sign
            by_op[name] += sign
            if by_op[name] <= 0:
                del by_op[name]


def first_time(key) -> bool:
    """True the first time key is seen since the last reset (one warning per cause)."""
    with _lock:
        if key in _warned:
            return False
        _warned.add(key)
        return True
