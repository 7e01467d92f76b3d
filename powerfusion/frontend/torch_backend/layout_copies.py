"""Copies made only to lay a tensor out contiguously, skipped when it already is.

AOTAutograd writes `x.contiguous()` of a traced model as `clone(x, contiguous_format)`,
a copy whatever x's layout. The attention output of HF models is one: `permute(0, 2,
1, 3)` of the attention result, cloned, viewed as [batch, seq, width] for the output
projection. The fused attention lays its result out [batch, seq, heads, dim] already,
so the permute is contiguous and the clone copies it for nothing (and took a region of
its own). Where nothing can tell the copy from the original - only views lead from it,
to ops that read them, none of them a graph output - the clone becomes `contiguous`,
which copies only a tensor laid out otherwise.
"""

from __future__ import annotations

import torch
import torch.fx

from .inplace import FRESH, INPLACE
from .view_chains import VIEW_OPS

aten = torch.ops.aten


def contiguous(x: torch.Tensor) -> torch.Tensor:
    """x itself when it is laid out contiguously, else a contiguous copy."""
    return x.contiguous()


def _only_read(node: torch.fx.Node) -> bool:
    """Is node's value only read: through views, by ops that do not write their
    arguments, and never returned from the graph?"""
    for user in node.users:
        if user.op == "output" or user.target in INPLACE.values():
            return False
        if user.op == "call_function" and user.target in VIEW_OPS and not _only_read(user):
            return False
    return True


def _laid_out_contiguously(x: torch.fx.Node) -> bool:
    """Does x's metadata say it is contiguous already (the copy a no-op)? Where it is
    not, the copy is real, and a region makes it best: beside the op that computes x
    (a kernel writing the permuted layout directly), not as a library copy after it."""
    meta = x.meta.get("val")
    try:
        return isinstance(meta, torch.Tensor) and bool(meta.is_contiguous())
    except Exception:                    # noqa: BLE001 - symbolic strides: keep the copy
        return False


def elide_layout_copies(gm: torch.fx.GraphModule) -> int:
    """Turn each clone to the contiguous format of a value the graph computes (not an
    input, not a fresh tensor an in-place op may write) whose result is only read into
    a `contiguous` call; returns how many (gm is recompiled when any was)."""
    count = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is not aten.clone.default \
                or node.kwargs.get("memory_format") is not torch.contiguous_format:
            continue
        x = node.args[0]
        if not isinstance(x, torch.fx.Node) or x.op != "call_function" or x.target in FRESH:
            continue
        if not _only_read(node) or not _laid_out_contiguously(x):
            continue
        node.target, node.kwargs = contiguous, {}
        count += 1
    if count:
        gm.recompile()
    return count
