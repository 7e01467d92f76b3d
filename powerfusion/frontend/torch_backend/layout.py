"""Handlers of views and layout changes (reshape, squeeze, expand, permute, slices,
splits) and of concatenation: views of a `Splat` stay `Splat`s."""

from __future__ import annotations

import builtins

import torch

from .. import build
from .. import functions as F
from ..tensor import Tensor
from .registry import handles
from .values import Splat, _empty, _Fallback, _tensor

aten = torch.ops.aten


def _view_handler(fn):
    """A view op's handler from fn(ctx, x: Tensor, ...): a view of a `Splat` is the
    same constant in the node's shape."""
    def handler(ctx, x, *args, **kwargs):
        if isinstance(x, Splat):
            return Splat(x.value, x.dtype, ctx.shape)
        return fn(ctx, _tensor(x), *args, **kwargs)
    return handler


@_view_handler
def _view(ctx, x, size, *rest, **kw):
    return x.reshape(tuple(int(s) for s in size))


handles(aten.view.default, aten._unsafe_view.default, aten.reshape.default)(_view)


@_view_handler
def _unsqueeze(ctx, x, dim):
    dim = build.normalize_axis(dim, x.ndim + 1, x.shape)
    return x.reshape(x.shape[:dim] + (1,) + x.shape[dim:])


@_view_handler
def _squeeze(ctx, x, dim=None):
    if dim is None:
        dims = range(x.ndim)
    else:
        dims = [build.normalize_axis(d, x.ndim, x.shape) if x.ndim else 0
                for d in (dim if isinstance(dim, (list, tuple)) else (dim,))]
    drop = {d for d in dims if x.ndim and x.shape[d] == 1}
    return x.reshape(tuple(n for k, n in enumerate(x.shape) if k not in drop))


handles(aten.unsqueeze.default)(_unsqueeze)
handles(aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims)(_squeeze)


@handles(aten.expand.default)
@_view_handler
def _expand(ctx, x, size, implicit=False):
    size = [int(s) for s in size]
    padded = (1,) * (len(size) - x.ndim) + x.shape
    target = tuple(p if s == -1 else s for p, s in zip(padded, size))
    return Tensor(build.expand(x.node, target))


@handles(aten.permute.default)
@_view_handler
def _permute(ctx, x, dims):
    return x.transpose(tuple(dims))


@handles(aten.transpose.int)
@_view_handler
def _transpose(ctx, x, dim0, dim1):
    perm = list(range(x.ndim))
    a, b = (build.normalize_axis(d, x.ndim, x.shape) for d in (dim0, dim1))
    perm[a], perm[b] = perm[b], perm[a]
    return x.transpose(tuple(perm))


handles(aten.t.default)(lambda ctx, x: _transpose(ctx, x, 0, -1))


def _index(x: Tensor, dim: int, item):
    dim = build.normalize_axis(dim, x.ndim, x.shape)
    return x[(slice(None),) * dim + (item,)]


@handles(aten.slice.Tensor)
@_view_handler
def _slice(ctx, x, dim=0, start=None, end=None, step=1):
    return _index(x, dim, slice(start, end, step))


@handles(aten.select.int)
@_view_handler
def _select(ctx, x, dim, index):
    return _index(x, dim, int(index))


def _scattered(base: Tensor, src: Tensor, dim: int, start: int, stop: int) -> Tensor:
    """base with positions start .. stop-1 of dim replaced by src: a concatenation of
    base's parts around src (the graph reads it as selects, cut into contiguous pieces
    by the split pass), so the zeros a backward scatters its slices into never exist."""
    n = base.shape[dim]
    if tuple(src.shape) != base.shape[:dim] + (stop - start,) + base.shape[dim + 1:]:
        raise _Fallback(f"a scatter of a {tuple(src.shape)} source into positions "
                        f"{start}:{stop} of a {tuple(base.shape)} tensor along dim {dim}")
    parts = [_index(base, dim, slice(0, start))] if start > 0 else []
    parts += [src] if stop > start else []
    parts += [_index(base, dim, slice(stop, n))] if stop < n else []
    if len(parts) == 1:
        return parts[0]
    return Tensor(build.concatenate([t.node for t in parts], dim))


@handles(aten.slice_scatter.default)
def _slice_scatter(ctx, base, src, dim=0, start=None, end=None, step=1):
    base, src = _tensor(base).astype(ctx.dtype), _tensor(src).astype(ctx.dtype)
    dim = build.normalize_axis(dim, base.ndim, base.shape)
    first, stop, step = slice(start, end, step).indices(base.shape[dim])
    if step != 1:
        raise _Fallback(f"slice_scatter with step {step}")
    return _scattered(base, src, dim, first, max(stop, first))


@handles(aten.select_scatter.default)
def _select_scatter(ctx, base, src, dim, index):
    base, src = _tensor(base).astype(ctx.dtype), _tensor(src).astype(ctx.dtype)
    dim = build.normalize_axis(dim, base.ndim, base.shape)
    n = base.shape[dim]
    index = int(index)
    if not -n <= index < n:
        raise _Fallback(f"select_scatter index {index} out of range for size {n}")
    index %= n
    grown = src.reshape(base.shape[:dim] + (1,) + base.shape[dim + 1:])
    return _scattered(base, grown, dim, index, index + 1)


@handles(aten.split_with_sizes.default)
def _split_with_sizes(ctx, x, split_sizes, dim=0):
    x = _tensor(x)
    out, start = [], 0
    for n in split_sizes:
        out.append(_index(x, dim, slice(start, start + int(n))))
        start += int(n)
    return out


@handles(aten.split.Tensor)
def _split(ctx, x, split_size, dim=0):
    x = _tensor(x)
    length = x.shape[build.normalize_axis(dim, x.ndim, x.shape)]
    sizes = [builtins.min(split_size, length - s) for s in range(0, length, split_size)]
    return _split_with_sizes(ctx, x, sizes or [0], dim)


@handles(aten.cat.default)
def _cat(ctx, tensors, dim=0):
    # parts with no elements add nothing (nor do legacy 1-d empty parts of any rank)
    parts = [_tensor(t, "cat operand") for t in tensors if not _empty(t)]
    return F.concatenate([p.astype(ctx.dtype) for p in parts], axis=dim)
