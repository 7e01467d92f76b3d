"""ONNX's layout ops (views, in PowerFusion's graph: they cost no traffic of their own)."""

from __future__ import annotations

import math

from ..errors import ShapeError
from . import build
from .onnx_ops import Delegate, OpContext, rule


def _ints(array) -> list[int]:
    return [int(v) for v in array.reshape(-1)]


rule("Transpose")(lambda ctx: [build.permute(ctx.node(0), ctx.attr("perm"))])


@rule("Reshape", static=[1])
def _reshape(ctx: OpContext):
    x = ctx.node(0)
    shape = _ints(ctx.static(1))
    if not ctx.attr("allowzero", 0):            # 0 copies the input's dim
        for k, n in enumerate(shape):
            if n == 0:
                if k >= len(x.shape):
                    raise ShapeError(f"shape {shape}: dim {k} is 0 (copy the input's) but "
                                     f"the input {x.shape} has no dim {k}")
                shape[k] = x.shape[k]
    return [build.reshape(x, shape)]


@rule("Flatten")
def _flatten(ctx: OpContext):
    x = ctx.node(0)
    rank = len(x.shape)
    axis = ctx.attr("axis", 1)
    if not -rank <= axis <= rank:
        raise ShapeError(f"attribute axis={axis}: expected one in [{-rank}, {rank}] for "
                         f"an input of shape {x.shape}")
    axis = axis + rank if axis < 0 else axis
    return [build.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))]


@rule("Concat")
def _concat(ctx: OpContext):
    if ctx.attr("axis") is None:
        raise ShapeError("attribute axis is required")
    return [build.concatenate(ctx.nodes(), ctx.attr("axis"))]


@rule("Slice", static=[1, 2, 3, 4])
def _slice(ctx: OpContext):
    x = ctx.node(0)
    starts, ends = _ints(ctx.static(1)), _ints(ctx.static(2))
    axes = _ints(ctx.static(3)) if ctx.has(3) else list(range(len(starts)))
    steps = _ints(ctx.static(4)) if ctx.has(4) else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ShapeError(f"starts, ends, axes and steps must have one length, got "
                         f"{len(starts)}, {len(ends)}, {len(axes)}, {len(steps)}")
    axes = [build.normalize_axis(a, len(x.shape), x.shape) for a in axes]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"axes {axes} repeat an axis")
    index = [slice(None)] * len(x.shape)
    for a, start, end, step in zip(axes, starts, ends, steps):
        if step == 0:
            raise ShapeError("a slice step of 0")
        if step < 0:
            raise Delegate("negative slice steps")
        index[a] = slice(start, end, step)       # Python's slice clamps as ONNX does
    return [build.getitem(x, tuple(index))]


@rule("Expand", static=[1])
def _expand(ctx: OpContext):
    x = ctx.node(0)
    shape = build.broadcast_shapes(x.shape, tuple(_ints(ctx.static(1))))   # both ways
    return [build.expand(x, shape)]


@rule("Unsqueeze", static=[1])
def _unsqueeze(ctx: OpContext):
    x = ctx.node(0)
    axes = _ints(ctx.static(1)) if ctx.has(1) else ctx.attr("axes", [])
    rank = len(x.shape) + len(axes)
    new = build.normalize_axes(tuple(axes), (1,) * rank) if axes else ()
    dims = iter(x.shape)
    shape = [1 if k in new else next(dims) for k in range(rank)]
    return [build.reshape(x, shape)]


@rule("Squeeze", static=[1])
def _squeeze(ctx: OpContext):
    x = ctx.node(0)
    axes = _ints(ctx.static(1)) if ctx.has(1) else ctx.attr("axes")
    if axes is None:
        drop = {k for k, n in enumerate(x.shape) if n == 1}
    else:
        drop = set(build.normalize_axes(tuple(axes), x.shape))
        wide = [k for k in drop if x.shape[k] != 1]
        if wide:
            raise ShapeError(f"cannot squeeze axis {wide[0]} of shape {x.shape}: its size "
                             "is not 1")
    return [build.reshape(x, [n for k, n in enumerate(x.shape) if k not in drop])]


@rule("Split", static=[1])
def _split(ctx: OpContext):
    x = ctx.node(0)
    axis = build.normalize_axis(ctx.attr("axis", 0), len(x.shape), x.shape)
    length, count = x.shape[axis], len(ctx.info.outputs)
    if ctx.has(1):
        sizes = _ints(ctx.static(1))
    elif ctx.attr("split") is not None:
        sizes = list(ctx.attr("split"))
    elif ctx.attr("num_outputs") is not None:          # opset 18: the last may be smaller
        chunk = -(-length // int(ctx.attr("num_outputs")))
        sizes = [min(chunk, length - s) for s in range(0, length, chunk)]
    else:
        if length % count:
            raise ShapeError(f"cannot split axis {axis} of size {length} into {count} "
                             "equal parts")
        sizes = [length // count] * count
    if sum(sizes) != length or len(sizes) != count:
        raise ShapeError(f"split sizes {sizes} must be {count} sizes adding up to {length}, "
                         f"the size of axis {axis}")
    out, start = [], 0
    for n in sizes:
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(start, start + n)
        out.append(build.getitem(x, tuple(index)))
        start += n
    return out
