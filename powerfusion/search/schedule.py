"""A schedule: one point of a kernel's search space.

It maps the kernel's iteration space onto loops (what runs in parallel across cores,
what runs along SIMD lanes) and sets the placement knob that promote leaves open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..gir.expr import Expr, Var, unflatten


@dataclass(frozen=True)
class Schedule:
    """Loop mapping for a kernel over shape S with reduction axes A.

    With reductions: the parallel loop runs over the kept axes, the inner loops over
    the reduced axes. Without: the flattened space is cut into `tile`-sized pieces,
    pieces in parallel, each piece one inner loop.
    """

    shape: tuple[int, ...]
    reduce_axes: tuple[int, ...]
    tile: int = 0                   # element-wise kernels: inner extent
    placement: str = "local"        # rows that must stay live: "local" if they fit, or "global"
    columns: int = 0                # reductions over leading axes: kept elements per unit,
                                    # vectorised while the reduced axes stream (0: by rows)
    transpose: tuple[int, ...] = () # element-wise layout changes on a GPU: (rows, cols) of
                                    # the tile over the last two axes each unit owns
    stream: bool = False            # CPU: output rows written with streaming stores

    def tiles(self) -> tuple[int, int]:
        """Tiles along the last two axes; edge tiles may stick out of the shape."""
        (tr, tc), (rows, cols) = self.transpose, self.shape[-2:]
        return -(-rows // tr), -(-cols // tc)

    @property
    def kept_extent(self) -> int:
        return math.prod(n for k, n in enumerate(self.shape) if k not in self.reduce_axes)

    @property
    def outer_extent(self) -> int:
        if self.transpose:
            return math.prod(self.shape[:-2]) * math.prod(self.tiles())
        if self.columns:
            return self.kept_extent // self.columns
        if self.reduce_axes:
            return math.prod(n for k, n in enumerate(self.shape) if k not in self.reduce_axes)
        return math.prod(self.shape) // self.tile if self.tile else 1

    @property
    def inner_extent(self) -> int:
        if self.transpose:
            return math.prod(self.transpose)
        if self.reduce_axes:
            return math.prod(self.shape[k] for k in self.reduce_axes)
        return self.tile if self.tile else math.prod(self.shape)

    def column_index(self, p: Var, t: Var, r: Var | None) -> tuple[Expr, ...]:
        """Index into S of kept element p*columns + t at reduced position r (0 if None)."""
        kept = [k for k in range(len(self.shape)) if k not in self.reduce_axes]
        index: list[Expr] = [Expr(0)] * len(self.shape)
        flat = Expr.of(p) * self.columns + t
        for k, e in zip(kept, unflatten(flat, tuple(self.shape[k] for k in kept))):
            index[k] = e
        if r is not None:
            red = tuple(self.shape[k] for k in self.reduce_axes)
            for k, e in zip(self.reduce_axes, unflatten(Expr.of(r), red)):
                index[k] = e
        return tuple(index)

    def domain_index(self, p: Var, i: Var | None) -> tuple[Expr, ...]:
        """The index into S of iteration (p, i); reduced axes are 0 when i is None."""
        if self.transpose:
            return self._tile_index(p, i)
        if not self.reduce_axes:
            flat = Expr.of(p) * self.inner_extent + (Expr.of(i) if i is not None else 0)
            return unflatten(flat, self.shape)
        kept = [k for k in range(len(self.shape)) if k not in self.reduce_axes]
        index: list[Expr] = [Expr(0)] * len(self.shape)
        for k, e in zip(kept, unflatten(Expr.of(p), tuple(self.shape[k] for k in kept))):
            index[k] = e
        if i is not None:
            red = tuple(self.shape[k] for k in self.reduce_axes)
            for k, e in zip(self.reduce_axes, unflatten(Expr.of(i), red)):
                index[k] = e
        return tuple(index)

    def _tile_index(self, p: Var, i: Var | None) -> tuple[Expr, ...]:
        """Unit p owns one (rows x cols) tile of the last two axes, row-major in i. An
        edge tile that sticks out of the shape clamps its lanes onto the last row or
        column: they recompute and rewrite that element with the same value, and no
        element belongs to two units."""
        (tr, tc), (rows, cols) = self.transpose, self.shape[-2:]
        n_rows, n_cols = self.tiles()
        local = Expr.of(i) if i is not None else Expr(0)
        batch = unflatten(Expr.of(p) // (n_rows * n_cols), self.shape[:-2])
        row = ((Expr.of(p) // n_cols) % n_rows * tr + local // tc).clamp(0, rows - 1)
        col = (Expr.of(p) % n_cols * tc + local % tc).clamp(0, cols - 1)
        return (*batch, row, col)


def default_schedule(shape: tuple[int, ...], reduce_axes: tuple[int, ...], cores: int,
                     placement: str = "local", column_tiles: int = 0,
                     min_columns: int = 8, units_per_core: int = 2,
                     transpose: tuple[int, ...] = (), stream: bool = False,
                     tile_scale: float = 1.0) -> Schedule:
    """The cost model's pick without tuning: enough parallel pieces, long inner loops.

    column_tiles: how many reductions that leave the innermost axis alone this kernel
    streams by columns (0: by rows): walking a row of the reduced axes would stride
    through memory, so stream the reduced axes instead, at least `min_columns` kept
    elements per unit (a GPU wants whole coalesced rows), `units_per_core` units per
    core where the kept elements allow, and the units' tiles, one per reduction, in at
    most COLUMN_TILE_ELEMENTS elements together where the minimum allows.
    transpose: (rows, cols) of a tile over the last two axes (see Schedule.transpose).
    stream: write output rows with streaming stores (see Schedule.stream).
    tile_scale: an element-wise kernel's tile is the divisor of its size nearest the
    default tile times this (a knob of the search space).
    """
    if reduce_axes:
        kept = math.prod(n for k, n in enumerate(shape) if k not in reduce_axes)
        tile = _column_tile(kept, cores * units_per_core, min_columns,
                            max(min_columns, COLUMN_TILE_ELEMENTS // column_tiles)) \
            if column_tiles else 0
        return Schedule(shape, reduce_axes, 0, placement, tile, stream=stream)
    if transpose:
        return Schedule(shape, (), 0, placement, transpose=tuple(transpose))
    n = math.prod(shape)
    tile = _tile(n, shape[-1] if shape else 1, cores)
    if tile_scale != 1.0:
        tile = _nearest_divisor(n, tile * tile_scale)
    return Schedule(shape, (), tile, placement, stream=stream)


def _nearest_divisor(n: int, want: float) -> int:
    """The divisor of n nearest `want` by ratio; at least 16 where n allows (a piece of
    fewer elements is all overhead)."""
    divisors = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    divisors += [n // d for d in divisors]
    usable = [d for d in divisors if d >= min(16, n)]
    return min(usable, key=lambda d: (abs(math.log(d / want)), d))


COLUMN_TILE_ELEMENTS = 1024   # a unit's accumulator tiles: 4 KB of float32, well inside L1


def _column_tile(kept: int, units: int, smallest: int = 8, largest: int = 1024) -> int:
    """Kept elements per unit: the largest divisor of `kept` from `smallest` up to
    `largest` that leaves at least `units` units, else the smallest divisor."""
    best = 0
    for t in range(min(smallest, kept), min(kept, largest) + 1):
        if kept % t == 0 and (kept // t >= units or best == 0):
            best = t
    return best


def _tile(n: int, last: int, cores: int) -> int:
    """Largest tile <= 4096 dividing n that leaves >= 4 pieces per core, preferring
    tiles aligned with the last axis (cheap index arithmetic)."""
    if n <= 4096:
        return max(n, 1)
    best, best_key = n, None
    for t in range(16, 4097):
        if n % t:
            continue
        aligned = t % last == 0 or last % t == 0
        key = (n // t >= 4 * cores, aligned, t)
        if best_key is None or key > best_key:
            best, best_key = t, key
    if best_key is None:        # n has no divisor in range: one row per piece (a row of
        # at least 16: pieces of one element would be all overhead), else one piece
        return last if 16 <= last <= 65536 and n % last == 0 else n
    return best
