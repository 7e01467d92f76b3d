"""Chains of aten view ops between kernels and library calls, folded into one
`as_strided` each.

After partitioning, the graph still reshapes, permutes and expands the tensors that
pass between PowerFusion regions and library calls (a BERT layer has some forty such
ops); each is a trip through the dispatcher. With static shapes the result of a chain
is known in advance as sizes, strides and a storage offset on its base, as Inductor's
`reinterpret_tensor` knows it; one `as_strided` call makes it. The layout the base
must have for that to hold is checked on every call; a base laid out differently
(PyTorch may change its mind about a library call's output) replays the original
chain, so the fold can only be faster, never wrong.
"""

from __future__ import annotations

import functools
import operator

import torch

from ..torch_storage import alias

aten = torch.ops.aten

# ops whose result is a view of their first argument, its layout a function of the
# argument's layout and the other (static) arguments
VIEW_OPS = frozenset({
    aten.view.default, aten._unsafe_view.default, aten.permute.default,
    aten.expand.default, aten.t.default, aten.transpose.int, aten.unsqueeze.default,
    aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.slice.Tensor,
    aten.select.int, aten.alias.default, aten.as_strided.default,
})


def restride(base, size, stride, offset, base_layout, chain):
    """base viewed as (size, stride, offset) when it is laid out as the graph said it
    would be (base_layout: its stride and storage offset); else the original chain."""
    if (base.stride(), base.storage_offset()) == base_layout:
        return base.as_strided(size, stride, offset)
    return _replay(base, chain)


def _replay(base, chain):
    for op, args, kwargs in chain:
        base = op(base, *args, **kwargs)
    return base


def restride_inside(base, size, stride, offset, base_layout, chain):
    """`restride` for a value only the graph's own calls read: an `alias` (not a view
    to autograd, which nothing inside a compiled graph asks for)."""
    if (base.stride(), base.storage_offset()) == base_layout:
        return alias(base, size, stride, offset - base_layout[1])
    return _replay(base, chain)


def _layout(meta):
    """(size, stride, storage offset) of a tensor's metadata, all static, or None."""
    if not isinstance(meta, torch.Tensor):
        return None
    values = (*meta.shape, *meta.stride(), meta.storage_offset())
    if not all(type(v) is int for v in values):        # symbolic (int() would specialise)
        return None
    return tuple(meta.shape), tuple(meta.stride()), meta.storage_offset()


def _meta_of(gm: torch.fx.GraphModule, node: torch.fx.Node):
    """A node's tensor metadata; for a region call (which partitioning leaves without
    any), that of the value its subgraph returns."""
    meta = node.meta.get("val")
    if meta is not None:
        return meta
    index = None
    if node.op == "call_function" and node.target is operator.getitem:
        node, index = node.args
    if node.op != "call_module":
        return None
    sub = gm.get_submodule(node.target)
    graph = getattr(sub, "eager", sub).graph     # a Region keeps its aten graph as eager
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    if index is not None:
        out = out[index] if isinstance(out, (tuple, list)) else None
    return out.meta.get("val") if isinstance(out, torch.fx.Node) else None


def _computed(node: torch.fx.Node) -> bool:
    """Whether a view op's sizes come from other nodes (computed at run time)."""
    found = []
    torch.fx.node.map_arg((node.args[1:], node.kwargs), found.append)
    return bool(found)


def fold_views(gm: torch.fx.GraphModule) -> int:
    """Replace each chain of VIEW_OPS that ends at a non-view user by one `restride`
    call; returns how many chains were folded (gm is recompiled when any was)."""
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in VIEW_OPS or not node.users:
            continue
        if all(u.op == "call_function" and u.target in VIEW_OPS for u in node.users):
            continue                                 # not the end of its chain
        chain, base = [], node                       # walk back to the chain's base
        while (isinstance(base, torch.fx.Node) and base.op == "call_function"
               and base.target in VIEW_OPS and not _computed(base)):
            chain.append(base)
            base = base.args[0]
        chain.reverse()
        if not chain or not isinstance(base, torch.fx.Node):
            continue
        base_layout, end = _layout(_meta_of(gm, base)), _layout(node.meta.get("val"))
        if base_layout is None or end is None:
            continue
        replay = tuple((n.target, tuple(n.args[1:]), dict(n.kwargs)) for n in chain)
        inside = all(u.op != "output" for u in node.users)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(restride_inside if inside else restride,
                                         (base, *end, base_layout[1:], replay))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return folded


def native_restrides(gm: torch.fx.GraphModule, glue) -> int:
    """Point each folded chain's call at the native glue's Restride (glue: its module),
    the same check and view in one C++ call, the chain's replay its fallback; how many.
    The caller recompiles."""
    count = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in (restride, restride_inside):
            continue
        base, size, stride, offset, (base_stride, base_offset), chain = node.args
        call = glue.Restride(size, stride, offset, base_stride, base_offset,
                             node.target is restride_inside,
                             functools.partial(_replay, chain=chain))
        call.__name__ = call.__qualname__ = node.target.__name__
        call.__module__ = __name__
        node.target, node.args = call, (base,)
        count += 1
    return count
