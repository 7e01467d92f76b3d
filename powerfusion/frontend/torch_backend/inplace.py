"""Library scatters into a fresh tensor, done in place.

AOTAutograd's graphs are functional: embedding's backward becomes `index_put(zeros,
indices, grads, accumulate=True)`, which copies the zeros (GPT-2's 50257 x 768
gradient: 154 MB, a fresh allocation and a copy, every step) before scattering into
the copy. When the base is a tensor the graph has just created and nothing else reads,
nobody can see the difference: the in-place op scatters into it directly.

An accumulating index_put over a CPU tensor's rows (one integer index: again the
embedding's backward) then runs as `index_add_`, ATen's row-wise scatter-add: 32 us
for 128 rows of an 8000 x 512 table where index_put_ takes 180 (`add_rows`).
"""

from __future__ import annotations

import torch
import torch.fx

aten = torch.ops.aten

INPLACE = {
    aten.index_put.default: aten.index_put_.default,
    aten.index_add.default: aten.index_add_.default,
    aten.index_copy.default: aten.index_copy_.default,
    aten.scatter_add.default: aten.scatter_add_.default,
    aten.scatter.src: aten.scatter_.src,
    aten.scatter.value: aten.scatter_.value,
}
# ops whose result is a new tensor no one else holds
FRESH = frozenset({aten.full.default, aten.zeros.default, aten.new_zeros.default,
                   aten.new_full.default, aten.full_like.default, aten.zeros_like.default,
                   aten.new_empty.default, aten.empty.memory_format})


def reinplace_fresh(gm: torch.fx.GraphModule) -> int:
    """Switch each scatter whose base is a fresh tensor with no other user to its
    in-place form; returns how many (gm is recompiled when any)."""
    count = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in INPLACE or not node.args:
            continue
        base = node.args[0]
        if (isinstance(base, torch.fx.Node) and base.op == "call_function"
                and base.target in FRESH and len(base.users) == 1):
            node.target = INPLACE[node.target]
            count += 1
    if count:
        gm.recompile()
    return count


def index_add_rows(base: torch.Tensor, index: torch.Tensor, values: torch.Tensor):
    """`index_put_(base, [index], values, accumulate=True)` for one integer index over
    base's rows, by index_add_ (negative indices count from the end, as index_put's)."""
    flat = index.reshape(-1)
    flat = torch.where(flat < 0, flat + base.shape[0], flat)
    return base.index_add_(0, flat, values.reshape((flat.numel(),) + tuple(base.shape[1:])))


index_add_rows.library_op = aten.index_add_.default     # what it calls (support, advise)


def _adds_rows(node: torch.fx.Node) -> bool:
    """Whether node is an accumulating index_put_ index_add_rows computes the same."""
    if node.op != "call_function" or node.target is not aten.index_put_.default \
            or len(node.args) < 4 or node.args[3] is not True or node.kwargs:
        return False
    base, indices, values = node.args[:3]
    if not isinstance(indices, (list, tuple)) or len(indices) != 1:
        return False
    base, index, values = (getattr(n, "meta", {}).get("val") for n in (base, indices[0], values))
    if not all(isinstance(t, torch.Tensor) and all(isinstance(d, int) for d in t.shape)
               for t in (base, index, values)):
        return False                     # (symbolic sizes: left as they are)
    return (base.device.type == "cpu"    # (on a GPU index_add_ adds atomically: in any order)
            and base.dim() >= 1 and index.dtype in (torch.int64, torch.int32)
            and values.dtype == base.dtype
            and tuple(values.shape) == tuple(index.shape) + tuple(base.shape[1:]))


def add_rows(gm: torch.fx.GraphModule) -> int:
    """Point each accumulating index_put_ over rows of gm at index_add_rows; how many
    (gm is recompiled when any)."""
    count = 0
    for node in gm.graph.nodes:
        if _adds_rows(node):
            base, indices, values = node.args[:3]
            node.target, node.args = index_add_rows, (base, indices[0], values)
            count += 1
    if count:
        gm.recompile()
    return count
