"""Matrix multiplications the graph leaves to PyTorch write into pooled memory.

A matmul's result is a fresh CPU tensor of up to megabytes (a weight's gradient, an MLP
activation): malloc maps it anew whenever glibc has just given such memory back, and
every 4 KB page then faults on first touch. In LLaMA's training step that was 800-1100
page faults per step, in GPT-2's 3500, for no work at all. Each such matmul is called
through its `out=` variant on memory from the graph's pool (`TensorPool`, the regions'
too) that nobody else holds: what a region or matmul dropped earlier in the step, or in
the last one. Inductor gets the same from its buffer planning.

Only CPU results of at least `MIN_BYTES` (below it malloc serves from memory already
mapped), laid out contiguously (what the out variant writes), are pooled. A call the
out variant refuses (an argument requiring grad under grad mode) runs as written.
"""

from __future__ import annotations

import torch
import torch.fx

from .tensor_pool import TensorPool

_aten = torch.ops.aten
OUT_VARIANTS = {_aten.mm.default: _aten.mm.out, _aten.bmm.default: _aten.bmm.out,
                _aten.addmm.default: _aten.addmm.out,
                _aten.baddbmm.default: _aten.baddbmm.out}

MIN_BYTES = 64 * 1024


def pooled_call(op, shape: tuple[int, ...], dtype: torch.dtype, pool: TensorPool, glue=None):
    """A function computing `op` into memory from pool; its `library_op` is the op the
    graph's node called (what `advise` prices). glue: the native glue module, whose
    Matmul makes the call (pool then is its Pool)."""
    out_op, take = OUT_VARIANTS[op], pool.taker([(shape, dtype)])

    def call(*args, **kwargs):
        out = take()[0]
        try:
            return out_op(*args, **kwargs, out=out)
        except RuntimeError:             # e.g. out= with autograd: the call as written
            return op(*args, **kwargs)

    call.__name__ = call.__qualname__ = f"pooled_{op.overloadpacket.__name__}"
    call.__module__ = __name__
    if glue is not None:                 # the same in one C++ call; call: its fallback
        call = glue.Matmul(op.overloadpacket.__name__, take, call)
        call.__name__ = call.__qualname__ = f"pooled_{op.overloadpacket.__name__}"
        call.__module__ = __name__
    call.library_op = op
    return call


def _pooled_result(node: torch.fx.Node):
    """(shape, dtype) of node's result if its matmul should write into a pool, else None."""
    if node.op != "call_function" or node.target not in OUT_VARIANTS:
        return None
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor) or val.device.type != "cpu" \
            or not val.is_contiguous() or any(not isinstance(d, int) for d in val.shape):
        return None
    if val.numel() * val.element_size() < MIN_BYTES:
        return None
    return tuple(val.shape), val.dtype


def pool_library_outputs(gm: torch.fx.GraphModule, pool: TensorPool, glue=None) -> int:
    """Point each poolable matmul of gm at a pooled_call on pool (through glue, the
    native glue module, where given); how many. The caller recompiles."""
    count = 0
    for node in gm.graph.nodes:
        result = _pooled_result(node)
        if result is not None:
            node.target = pooled_call(node.target, *result, pool, glue)
            count += 1
    return count
