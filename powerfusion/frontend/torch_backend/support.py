"""Which aten ops PowerFusion takes and which stay in PyTorch: ops it replays (those
with a handler, on supported devices, dtypes and layouts), ops left to PyTorch by design
(matmul, convolution, attention, embedding, indexing, random numbers, creation of
tensors, mutation: silent), and ops it cannot take (one warning per cause on the
"powerfusion" logger, counted as fallbacks)."""

from __future__ import annotations

import logging
import operator

import torch
import torch.fx

from .. import torch_stats as stats
from ..torch_storage import TORCH_TO_DTYPE
from .layout_copies import contiguous
from .registry import HANDLERS, PREDICATES

# the backend's own calls in a graph it rewrote: neither PowerFusion's nor a fallback
GLUE = frozenset({contiguous})

logger = logging.getLogger("powerfusion")

# device type -> PowerFusion target; a region's tensors are all on one device
DEVICES = {"cpu": "cpu", "cuda": "cuda"}

# ops left to PyTorch by design: heavy compute, data-dependent addressing, randomness,
# creation of tensors whose values vary, mutation. They run as aten calls, silently.
_LIBRARY_PACKETS = {
    "mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "linear", "dot", "mv", "addmv",
    "convolution", "convolution_backward", "_convolution",
    "embedding", "embedding_dense_backward", "_embedding_bag",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_attention_math", "scaled_dot_product_attention",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_flash_attention_backward",
    "native_dropout", "native_dropout_backward", "bernoulli", "rand", "rand_like",
    "randn", "randn_like", "randint", "randint_like", "randperm", "uniform", "normal",
    "index", "index_put", "index_select", "gather", "scatter", "scatter_add",
    "index_put_", "index_add_", "index_copy_", "scatter_", "scatter_add_",   # reinplaced
    "scatter_reduce", "slice_scatter", "select_scatter", "diagonal_scatter",
    "as_strided_scatter", "index_add", "index_copy", "embedding_renorm",
    "arange", "empty", "empty_like", "empty_strided", "empty_permuted", "zeros", "ones",
    "full", "full_like", "scalar_tensor", "new_empty", "new_full", "new_zeros", "new_ones",
    "copy", "copy_", "resize_", "set_", "as_strided", "_local_scalar_dense",
}


# of those, the ones that only create, copy or re-view memory: their time is the kind
# PowerFusion's kernels replace, not a library's compute
_MEMORY_PACKETS = {
    "arange", "empty", "empty_like", "empty_strided", "empty_permuted", "zeros", "ones",
    "full", "full_like", "scalar_tensor", "new_empty", "new_full", "new_zeros", "new_ones",
    "copy", "copy_", "resize_", "set_", "as_strided", "_local_scalar_dense",
}


def is_library_compute(name: str) -> bool:
    """Whether an aten op, named as the profiler names it ("aten::addmm") or by its
    packet ("addmm"), is library compute every backend calls alike: matmul, convolution,
    attention, embedding, indexing, random numbers."""
    packet = name.split("::")[-1]
    return packet in _LIBRARY_PACKETS and packet not in _MEMORY_PACKETS


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[-1]}." \
               f"{target._overloadname}"
    return getattr(target, "__name__", str(target))


def called_op(target):
    """The aten op a graph node's target runs: the target itself, or the op one of the
    backend's own functions stands in for (`library_op`: a pooled matmul, index_add_rows)."""
    return getattr(target, "library_op", target)


def _is_library(node: torch.fx.Node) -> bool:
    target = called_op(node.target)
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__ in _LIBRARY_PACKETS
    return False


def _produces_tensors(node: torch.fx.Node) -> bool:
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        return any(isinstance(v, torch.Tensor) for v in val)
    return isinstance(val, torch.Tensor)


def _tensor_metas(node: torch.fx.Node):
    vals = [node.meta.get("val")] + [a.meta.get("val") for a in node.all_input_nodes]
    for v in vals:
        for m in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(m, torch.Tensor):
                yield m


def _unsupported_reason(node: torch.fx.Node) -> str | None:
    """None when PowerFusion can take this aten node, else why not."""
    if node.target not in HANDLERS:
        return "PowerFusion has no lowering for this op"
    for m in _tensor_metas(node):
        if m.device.type not in DEVICES:
            return f"a tensor on {m.device}: PowerFusion runs on the CPU and CUDA GPUs"
        if m.dtype not in TORCH_TO_DTYPE:
            return f"dtype {m.dtype} is not supported by PowerFusion"
        if m.layout is not torch.strided:
            return f"layout {m.layout} is not supported"
    check = PREDICATES.get(node.target)
    return check(node) if check is not None else None


def _warn(op: str, reason: str) -> None:
    if stats.first_time((op, reason)):
        logger.warning("PowerFusion: %s runs eagerly in PyTorch: %s", op, reason)


class _Support:
    """OperatorSupport for the partitioner, from decisions made once per node."""

    def __init__(self, supported: set):
        self.supported = supported

    def is_node_supported(self, submodules, node: torch.fx.Node) -> bool:
        return node in self.supported


def _classify(gm: torch.fx.GraphModule) -> set:
    """The nodes of gm PowerFusion takes; library ops are counted, the others warned
    about and counted as fallbacks."""
    supported = set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is operator.getitem:
            if node.args[0] in supported:
                supported.add(node)
            continue
        if not _produces_tensors(node) or node.target in GLUE:
            continue                     # arithmetic on sizes, the backend's own calls
        reason = _unsupported_reason(node)
        if reason is None:
            supported.add(node)
        elif _is_library(node):
            stats.count("library_ops")
        else:
            _warn(_op_name(node), reason)
            stats.count_ops("fallback_ops", [_op_name(node)])
    return supported
