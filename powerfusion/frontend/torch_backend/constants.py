"""What a graph computes from no input at all, computed once, when it compiles.

AOTAutograd's graphs rebuild on every call what depends on none of their inputs:
LLaMA's causal mask from four `arange`s, `index`es, comparisons and a `where`, GPT-2's
position ids. Each piece is a dispatcher trip between kernels or a region's output. The
part of the graph that reads no placeholder (and draws no random number) is evaluated
once here; each of its values the rest of the graph reads becomes a constant of the
GraphModule (a get_attr node), and the part itself goes.

Never a wrong answer: nothing may write a folded value, so a value is folded only when
no op reads it, or a view of it, as a mutable argument, no op returns an alias of it
unless that op is folded too, and it is not a graph output (a caller could write that).
Each is at most MAX_BYTES (a mask [b, h, s, s] at long sequences would be megabytes
held for good), and it must come out laid out as the graph's metadata says. A creation
op PowerFusion takes into its kernels (`full`, `scalar_tensor`: a constant splat there)
is not folded on its own: a tensor input would be the worse for the kernel.
"""

from __future__ import annotations

import torch
import torch.fx

from .registry import HANDLERS

MAX_BYTES = 1 << 20
PREFIX = "_powerfusion_constant_"


def _pure(node: torch.fx.Node) -> bool:
    """Whether node is an aten call that writes nothing and draws no random number."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return False
    if target._schema.is_mutable or torch.Tag.nondeterministic_seeded in target.tags:
        return False
    return True


def _small_static(node: torch.fx.Node) -> bool:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor) or val.layout is not torch.strided:
        return False
    if not all(type(v) is int for v in (*val.shape, *val.stride(), val.storage_offset())):
        return False                     # symbolic sizes: left as they are
    return val.numel() * val.element_size() <= MAX_BYTES


def _attribute(gm: torch.fx.GraphModule, node: torch.fx.Node):
    value = gm
    for part in node.target.split("."):
        value = getattr(value, part, None)
    return value


def _aliasing(user: torch.fx.Node) -> bool:
    """Whether user's result may share memory with an argument (a view), or user may
    write one: what must not reach a folded value unless folded with it."""
    target = user.target
    if user.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return True                      # the output, or a function of the backend's own
    schema = target._schema
    return schema.is_mutable or any(r.alias_info is not None for r in schema.returns)


def _constant_nodes(gm: torch.fx.GraphModule) -> set[torch.fx.Node]:
    """The nodes that read no input, draw no random number and are small and static,
    less those whose value (or a view of it) an op outside the set could write or
    return as an alias."""
    inside: set[torch.fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            # a tensor constant the trace lifted (AOTAutograd makes parameters and
            # buffers inputs; a parameter here could change between calls all the same)
            value = _attribute(gm, node)
            if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter) \
                    and _small_static(node):
                inside.add(node)
        elif _pure(node) and _small_static(node) and all(
                a in inside for a in node.all_input_nodes):
            inside.add(node)
    while True:
        bad = {n for n in inside if any(u not in inside and _aliasing(u) for u in n.users)}
        if not bad:
            return inside
        # a bad node's views are as exposed as it is: drop everything it was computed
        # from (which it may alias) and everything computed from it
        stack = list(bad)
        while stack:
            n = stack.pop()
            if n in inside:
                inside.discard(n)
                stack += [a for a in n.all_input_nodes if a in inside]
                stack += [u for u in n.users if u in inside]


def fold_constants(gm: torch.fx.GraphModule) -> int:
    """Evaluate the part of gm that reads no input and replace each of its values the
    rest reads by a constant; returns how many (gm is recompiled when any)."""
    inside = _constant_nodes(gm)
    boundary = [n for n in gm.graph.nodes if n in inside and n.op == "call_function"
                and any(u not in inside for u in n.users)
                and (n.all_input_nodes or n.target not in HANDLERS)]
    if not boundary:
        return 0
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    values: dict[torch.fx.Node, torch.Tensor] = {}
    with unset_fake_temporarily(), torch.no_grad():
        for node in gm.graph.nodes:
            if node in inside and node.op == "get_attr":
                values[node] = _attribute(gm, node)
            elif node in inside:
                args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs),
                                                     values.__getitem__)
                values[node] = node.target(*args, **kwargs)
    folded = 0
    for node in boundary:
        value, meta = values[node], node.meta["val"]
        if (value.shape, value.stride(), value.storage_offset(), value.dtype,
                value.device) != (meta.shape, meta.stride(), meta.storage_offset(),
                                  meta.dtype, meta.device):
            continue                     # laid out otherwise than the graph expects
        name = f"{PREFIX}{folded}"
        while hasattr(gm, name):
            name += "_"
        # (a view keeps its base alive: small, as every folded value is)
        gm.register_buffer(name, value, persistent=False)
        with gm.graph.inserting_before(node):
            constant = gm.graph.get_attr(name)
        constant.meta = dict(node.meta)
        node.replace_all_uses_with(constant)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return folded
