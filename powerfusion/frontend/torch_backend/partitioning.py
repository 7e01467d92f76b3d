"""An aten graph cut into maximal cycle-free regions of ops PowerFusion takes (torch's
`CapabilityBasedPartitioner`), each replaced by a `Region` module. Views of a region's
results stay outside; views only the region reads of values made outside stay in
(`_drop_edge_views`)."""

from __future__ import annotations

import operator

import torch
import torch.fx
from torch.fx.node import _get_qualified_name

from .. import torch_stats as stats
from .region import Region
from .support import DEVICES, _classify, _Support, _warn

aten = torch.ops.aten

REGION_PREFIX = "powerfusion_region_"

# views: they join a region only between ops it computes
_NON_COMPUTE = [aten.view.default, aten._unsafe_view.default, aten.reshape.default,
                aten.permute.default, aten.transpose.int, aten.t.default,
                aten.expand.default, aten.unsqueeze.default, aten.squeeze.default,
                aten.squeeze.dim, aten.squeeze.dims, aten.slice.Tensor, aten.select.int,
                aten.alias.default, aten.detach.default, aten.split_with_sizes.default,
                aten.split.Tensor]
_NON_COMPUTE_NAMES = [_get_qualified_name(t) for t in _NON_COMPUTE]
_NON_COMPUTE_SET = set(_NON_COMPUTE) | {operator.getitem}


def partition(gm: torch.fx.GraphModule, label: str = "graph") -> torch.fx.GraphModule:
    """gm with each maximal run of supported ops replaced by a `Region` module."""
    from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner

    devices = {m.device for node in gm.graph.nodes if node.op == "placeholder"
               for m in [node.meta.get("val")] if isinstance(m, torch.Tensor)}
    unsupported = [d for d in devices if d.type not in DEVICES]
    if unsupported or len(devices) > 1:
        why = (f"its tensors are on {unsupported[0]}; PowerFusion runs on the CPU and CUDA "
               "GPUs" if unsupported else f"its tensors are on several devices "
               f"({', '.join(sorted(map(str, devices)))})")
        _warn(f"the {label} graph", why)
        return gm
    supported = _classify(gm)
    partitioner = CapabilityBasedPartitioner(
        gm, _Support(supported), allows_single_node_partition=True,
        non_compute_ops=_NON_COMPUTE_NAMES)
    parts = partitioner.propose_partitions()
    for part in parts:
        _drop_edge_views(part)
    for part in parts:
        # an item of a value made outside (one piece of a split the bookends left out)
        # is picked outside: the region takes a tensor, not the list, and can run its
        # lean path
        for node in [n for n in part.nodes if n.target is operator.getitem
                     and n.args[0] not in part.nodes]:
            part.remove_node(node)
    parts = [p for p in parts
             if any(n.target not in _NON_COMPUTE_SET for n in p.nodes)]
    # library ops the partition left out are counted; supported ops left out run eagerly
    if not parts:
        return gm
    fused = partitioner.fuse_partitions(parts, prefix=REGION_PREFIX)
    for node in fused.graph.nodes:
        if node.op == "call_module" and node.target.startswith(REGION_PREFIX):
            sub = fused.get_submodule(node.target)
            region = Region(sub, f"{label}.{node.target}")
            setattr(fused, node.target, region)
            stats.count("regions")
            stats.count_ops("fused_ops", region.ops)
    fused.recompile()
    return fused


def _drop_edge_views(part) -> None:
    """Take out of a partition the views at its edges that are better made outside: those
    whose results only leave it (a region returns computed values; a view of one is made
    after, for free) and those of values made outside that something outside reads too.
    A view only the region reads of a value made outside stays in: the region takes the
    value and its kernels read it through the view's index map, where a view made
    outside would be a call per step."""
    nodes = set(part.nodes)

    def is_view(n) -> bool:
        return n.op == "call_function" and n.target in _NON_COMPUTE_SET \
            and n.target is not operator.getitem

    leaving: dict = {}
    def only_leaves(n) -> bool:          # every use of n is outside or another such view
        if n not in nodes:
            return True
        if n not in leaving:
            leaving[n] = is_view(n) and all(only_leaves(u) for u in n.users)
        return leaving[n]

    entering: dict = {}
    def of_outside(n) -> bool:           # n views values made outside, through views
        if n not in nodes:
            return True
        if n not in entering:
            entering[n] = is_view(n) and all(of_outside(i) for i in n.all_input_nodes)
        return entering[n]

    def take_out(n) -> None:
        if n in nodes:
            part.remove_node(n)
            nodes.discard(n)

    for node in [n for n in part.nodes if is_view(n)]:
        if node not in nodes:
            continue
        if only_leaves(node):
            take_out(node)
        elif of_outside(node) and any(u not in nodes for u in node.users):
            # with the views it is made of: left in, one would sit between the region
            # and a value made outside that the region reads (a cycle)
            chain = [node]
            while chain:
                n = chain.pop()
                if n in nodes:
                    take_out(n)
                    chain += n.all_input_nodes


def _copy(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of gm's graph (node metadata shared, not deep-copied: it holds fake
    tensors) on the same submodules, so a failed partitioning leaves gm intact."""
    graph = torch.fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    return torch.fx.GraphModule(gm, graph)
