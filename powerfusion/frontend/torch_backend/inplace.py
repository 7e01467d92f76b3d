"""Library scatters into a fresh tensor, done in place.

AOTAutograd's graphs are functional: embedding's backward becomes `index_put(zeros,
indices, grads, accumulate=True)`, which copies the zeros (GPT-2's 50257 x 768
gradient: 154 MB, a fresh allocation and a copy, every step) before scattering into
the copy. When the base is a tensor the graph has just created and nothing else reads,
nobody can see the difference: the in-place op scatters into it directly.
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
