"""Attention written out as matmul -> scale -> (+ mask) -> softmax -> matmul, in an
inference graph, replaced by one call of PyTorch's fused attention with the scale and
the additive mask as its arguments.

Models written for readability (HF's "eager" attention) spell attention out; traced,
it is two batched matmuls around a softmax of a [batch, heads, queries, keys] tensor.
Run as written, that tensor goes to memory and back twice, plus the copies the
matmuls want; the fused kernel (flash attention on the CPU) never writes it. So the
whole pattern becomes `aten.scaled_dot_product_attention` - the prologue (scale,
mask) fused into the library call, which is what a memory-bound prologue should be.

Unless the scores fit on chip: a caller passes the bytes its device keeps close to its
cores (`keep_bytes`), and scores no larger stay as written - two matmuls and a softmax
region whose tensor never leaves the caches, where the library's fused kernel is the
slower (measured: benchmarks/results/e2e-ab-cpu-amd-zen5-2026-12-07-attention.md).

Inference graphs only: in training, AOTAutograd has already split the joint graph,
and the backward reads the forward's softmax.
"""

from __future__ import annotations

import torch
import torch.fx

aten = torch.ops.aten


def _only_user(node: torch.fx.Node, user: torch.fx.Node) -> bool:
    return list(node.users) == [user]


def _call(node, *targets) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" \
        and node.target in targets


def _val(node):
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _batched(view: torch.fx.Node, shape4: tuple) -> torch.fx.Node | None:
    """The 4-d tensor a bmm operand views: view([clone](expand(x, shape4)), [b*h, m, n])
    with the expand a no-op (the clone is how a reshape of a strided x is traced), else
    None."""
    if not _call(view, aten.view.default, aten._unsafe_view.default):
        return None
    expand = view.args[0]
    if _call(expand, aten.clone.default):
        expand = expand.args[0]
    if not _call(expand, aten.expand.default):
        return None
    x = expand.args[0]
    val = _val(x)
    if not isinstance(val, torch.Tensor) or tuple(val.shape) != shape4:
        return None
    return x


def _unpermuted_key(kt: torch.fx.Node) -> torch.fx.Node | None:
    """K for Kᵀ = permute(K, [0, 1, 3, 2])."""
    if _call(kt, aten.permute.default) and list(kt.args[1]) in ([0, 1, 3, 2], [0, 1, -1, -2]):
        return kt.args[0]
    return None


def _shape(view: torch.fx.Node, b: int, h: int):
    """The 4-d shape [b, h, m, n] a bmm operand of shape [b*h, m, n] was viewed from."""
    val = _val(view)
    if not isinstance(val, torch.Tensor) or val.dim() != 3 or int(val.shape[0]) != b * h:
        return None
    return (b, h, int(val.shape[1]), int(val.shape[2]))


def _scores(x: torch.fx.Node):
    """(the nodes from the bmm to x, scale, mask) for x = view(bmm) [* or / scale]
    [+ mask], else None."""
    chain, mask, scale = [], None, 1.0
    if _call(x, aten.add.Tensor) and len(x.args) == 2 and not x.kwargs \
            and isinstance(x.args[1], torch.fx.Node):
        chain.append(x)
        x, mask = x.args
    if _call(x, aten.mul.Tensor, aten.div.Tensor) and not x.kwargs \
            and type(x.args[1]) in (int, float) and x.args[1] != 0:
        chain.append(x)
        scale = float(x.args[1]) if x.target is aten.mul.Tensor else 1.0 / float(x.args[1])
        x = x.args[0]
    if not _call(x, aten.view.default, aten._unsafe_view.default) \
            or not _call(x.args[0], aten.bmm.default):
        return None
    chain += [x, x.args[0]]
    return chain[::-1], scale, mask


def _match(softmax: torch.fx.Node, keep_bytes: int):
    """(q, k, v, scale, mask, the view the fused call replaces) for an attention
    pattern around softmax whose scores take more than keep_bytes, else None."""
    scores = _val(softmax)
    if softmax.args[2] is not False or not isinstance(scores, torch.Tensor) \
            or scores.dim() != 4 or softmax.args[1] not in (-1, 3):
        return None
    b, h, s, l = map(int, scores.shape)
    if b * h * s * l * scores.element_size() <= keep_bytes:
        return None                      # on chip: written out is the faster
    found = _scores(softmax.args[0])
    if found is None:
        return None
    chain, scale, mask = found
    # nothing else reads the scores on their way to the softmax (attention weights
    # returned to the user, say)
    if not all(_only_user(a, c) for a, c in zip(chain, chain[1:] + [softmax])):
        return None
    qk = chain[0]
    q = _batched(qk.args[0], _shape(qk.args[0], b, h))
    kt = _batched(qk.args[1], _shape(qk.args[1], b, h))
    k = _unpermuted_key(kt) if kt is not None else None
    if q is None or k is None:
        return None
    # after the softmax: [clone (dropout at inference)] -> expand -> view -> bmm(., v)
    p = softmax
    if len(p.users) == 1 and _call(next(iter(p.users)), aten.clone.default):
        p = next(iter(p.users))
    expand = next(iter(p.users)) if len(p.users) == 1 else None
    if not _call(expand, aten.expand.default) or len(expand.users) != 1:
        return None
    view = next(iter(expand.users))
    if not _call(view, aten.view.default, aten._unsafe_view.default) or len(view.users) != 1:
        return None
    pv = next(iter(view.users))
    if not _call(pv, aten.bmm.default) or pv.args[0] is not view or len(pv.users) != 1:
        return None
    v = _batched(pv.args[1], _shape(pv.args[1], b, h))
    out = next(iter(pv.users))
    if v is None or not _call(out, aten.view.default, aten._unsafe_view.default):
        return None
    qv, kv, vv, ov = _val(q), _val(k), _val(v), _val(out)
    if not all(isinstance(t, torch.Tensor) for t in (qv, kv, vv, ov)):
        return None
    d, dv = int(qv.shape[-1]), int(vv.shape[-1])
    if tuple(ov.shape) != (b, h, s, dv) or tuple(kv.shape) != (b, h, l, d) \
            or tuple(vv.shape[:3]) != (b, h, l):
        return None
    if len({qv.dtype, kv.dtype, vv.dtype, scores.dtype}) != 1 \
            or qv.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return None
    if mask is not None:
        mv = _val(mask)
        if not isinstance(mv, torch.Tensor) or mv.dtype != qv.dtype or mv.dim() > 4:
            return None
        try:
            if torch.broadcast_shapes(tuple(mv.shape), (b, h, s, l)) != (b, h, s, l):
                return None
        except RuntimeError:
            return None
    return q, k, v, scale, mask, out


def _shared_heads(x: torch.fx.Node) -> tuple[torch.fx.Node, int] | None:
    """(kv, n) for x = view([clone](expand(unsqueeze(kv, 2), [b, hkv, n, l, d])), [b, hkv * n,
    l, d]): keys or values shared by n query heads each (grouped-query attention, HF's
    `repeat_kv`), copied n times to line up with the queries; else None."""
    if not _call(x, aten.view.default, aten._unsafe_view.default) or len(x.users) != 1:
        return None
    expand = x.args[0]
    if _call(expand, aten.clone.default) and len(expand.users) == 1:
        expand = expand.args[0]          # the copy (absent where one kv head is viewed)
    if not _call(expand, aten.expand.default) or len(expand.users) != 1:
        return None
    unsqueeze = expand.args[0]
    if not _call(unsqueeze, aten.unsqueeze.default) or unsqueeze.args[1] != 2:
        return None
    kv, wide, out = _val(unsqueeze.args[0]), _val(expand), _val(x)
    if not all(isinstance(t, torch.Tensor) for t in (kv, wide, out)) or kv.dim() != 4:
        return None
    b, hkv, l, d = map(int, kv.shape)
    n = int(wide.shape[2])
    if tuple(wide.shape) != (b, hkv, n, l, d) or tuple(out.shape) != (b, hkv * n, l, d):
        return None
    return unsqueeze.args[0], n


def fuse_attention(gm: torch.fx.GraphModule, keep_bytes: int = 0) -> int:
    """Replace each attention pattern of gm (an inference graph) whose scores take more
    than keep_bytes by one fused call; returns how many (gm is recompiled when any
    was)."""
    fused = 0
    for node in list(gm.graph.nodes):
        if not _call(node, aten._softmax.default):
            continue
        try:
            found = _match(node, keep_bytes)
        except (TypeError, ValueError):      # symbolic sizes: left as written
            found = None
        if found is None:
            continue
        q, k, v, scale, mask, out = found
        kwargs = {"attn_mask": mask, "dropout_p": 0.0, "is_causal": False, "scale": scale}
        # keys and values shared by groups of query heads are read as they are, not
        # copied once per head
        shared_k, shared_v = _shared_heads(k), _shared_heads(v)
        if shared_k and shared_v and shared_k[1] == shared_v[1] and shared_k[1] > 1:
            (k, _), (v, _) = shared_k, shared_v
            kwargs["enable_gqa"] = True
        with gm.graph.inserting_before(out):
            call = gm.graph.call_function(aten.scaled_dot_product_attention.default,
                                          (q, k, v), kwargs)
        out.replace_all_uses_with(call)
        gm.graph.erase_node(out)
        gm.graph.eliminate_dead_code()      # the matmuls, the softmax, their views
        fused += 1
    if fused:
        gm.recompile()
        _propagate(gm)
    return fused


def _propagate(gm: torch.fx.GraphModule) -> None:
    """Every node's metadata again from the graph's inputs: the fused call lays its
    result out otherwise than the matmul it replaces ([b, q, h, d] in memory), and
    the strides of what follows change with it (views are folded by those strides)."""
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    inputs = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    mode = torch._guards.detect_fake_mode(inputs)
    FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*inputs)
