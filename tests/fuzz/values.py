"""Random inputs: mutually broadcastable shapes, all supported dtypes, values at the
edges (NaN, infinities, signed zeros, subnormals, integer limits) and memory layouts."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from .program import Input

DTYPES = ("float32", "float16", "bfloat16", "float64", "int32", "int64", "bool")
# how often each dtype leads a program (the others still appear among its inputs)
DTYPE_WEIGHTS = (0.34, 0.1, 0.1, 0.1, 0.13, 0.13, 0.1)
SIDES = (1, 1, 2, 3, 4, 5, 7, 8, 16)
MAX_ELEMENTS = 2048
LARGE_SIDES = (3, 17, 33, 64, 65, 96, 257, 300, 512, 513, 1000, 4099)
MAX_LARGE = 1 << 16
LAYOUT_WEIGHTS = {"contiguous": 0.56, "fortran": 0.07, "strided": 0.07, "reversed": 0.07,
                  "offset": 0.07, "broadcast": 0.07, "bigendian": 0.04, "unaligned": 0.05}


def np_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def pick(rng, items, weights=None):
    if weights is not None:
        weights = np.asarray(weights, float) / np.sum(weights)
    return items[rng.choice(len(items), p=weights)]


def draw_shapes(rng, count: int) -> list[tuple[int, ...]]:
    """`count` shapes that broadcast together: a base shape, each input keeping a suffix
    of it with some axes set to 1. Sometimes an axis is empty (size 0)."""
    large = rng.random() < 0.08             # many rows: split columns, threads, tails
    ndim = int(pick(rng, (1, 2, 2, 3) if large else (0, 1, 2, 2, 3, 3, 4)))
    base = [int(pick(rng, LARGE_SIDES if large else SIDES)) for _ in range(ndim)]
    if ndim and rng.random() < 0.07:
        base[rng.integers(ndim)] = 0
    while math.prod(base) > (MAX_LARGE if large else MAX_ELEMENTS // 4):
        base[int(np.argmax(base))] //= 2
    shapes = []
    for k in range(count):
        keep = ndim if k == 0 or rng.random() < 0.6 else int(rng.integers(0, ndim + 1))
        shape = base[ndim - keep:]
        shape = [1 if rng.random() < 0.2 else n for n in shape]
        shapes.append(tuple(shape))
    return shapes


SPECIAL_FLOATS = (np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-40, -3e-39, 1.0, -1.0)


def draw_values(rng, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    dt = np_dtype(dtype)
    size = math.prod(shape)
    if dtype == "bool":
        return rng.random(shape) < rng.choice((0.1, 0.5, 0.9))
    if dtype.startswith("int"):
        info = np.iinfo(dt)
        flavour = rng.choice(("small", "small", "wide", "limits", "medium", "ties"))
        if flavour == "small":
            x = rng.integers(-10, 11, size)
        elif flavour == "medium":            # float16's range: its rounding, its ties
            x = rng.integers(-70000, 70001, size)
        elif flavour == "ties":              # next to float32/float64 rounding ties
            x = int_ties(rng, size, info.bits)
        elif flavour == "wide":
            x = rng.integers(info.min, info.max, size, dtype=np.int64, endpoint=True)
        else:
            x = rng.integers(-3, 4, size)
            limits = np.array([info.min, info.max, info.min + 1, info.max - 1, 0, -1, 1])
            hit = rng.random(size) < 0.4
            x = np.where(hit, limits[rng.integers(0, len(limits), size)], x)
        return x.astype(dt).reshape(shape)
    flavour = rng.choice(("normal", "normal", "small_int", "positive", "scaled", "ties"))
    if flavour == "small_int":                 # exact arithmetic, equal values meet
        x = rng.integers(-4, 5, size).astype(np.float64)
    elif flavour == "ties" and dt.itemsize >= 4:
        x = float_ties(rng, size, dt)
    else:
        x = rng.standard_normal(size)
        if flavour == "positive":
            x = np.abs(x) + 0.1
        elif flavour == "scaled":
            x = x * 10.0 ** rng.integers(-4, 5)
    if rng.random() < 0.2:                     # NaN, infinities, signed zeros, subnormals
        hit = rng.random(size) < 0.25
        x = np.where(hit, np.array(SPECIAL_FLOATS)[rng.integers(0, len(SPECIAL_FLOATS),
                                                                  size)], x)
    with np.errstate(all="ignore"):
        return x.astype(dt).reshape(shape)


def float_ties(rng, size: int, dtype: np.dtype) -> np.ndarray:
    """Values at, or one ULP of `dtype` beside, the halfway points between neighbouring
    values of a narrower float: a cast that rounds twice gets some of them wrong."""
    narrower = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
    if dtype == np.float64:
        narrower.append(np.dtype(np.float32))
    out = np.empty(size)
    for k in range(size):
        narrow = narrower[rng.integers(len(narrower))]
        low = np.asarray([rng.standard_normal() * 4.0 ** rng.integers(-3, 4)]).astype(narrow)
        bits = np.dtype(f"u{narrow.itemsize}")
        high = (low.view(bits) + 1).view(narrow)         # the neighbour away from zero
        mid = np.asarray((float(low[0]) + float(high[0])) / 2, dtype)
        out[k] = float(np.nextafter(mid, dtype.type(rng.choice((-np.inf, np.inf))))
                       if rng.random() < 0.6 else mid)
    return out


def int_ties(rng, size: int, bits: int) -> np.ndarray:
    """Integers at, or one beside, halfway points between neighbouring float32 (or, for
    int64, float64) values."""
    out = np.empty(size, np.int64)
    for k in range(size):
        mantissa = 24 if bits == 32 or rng.random() < 0.5 else 53
        top = int(rng.integers(mantissa + 1, bits - 1))
        mid = (1 << top) + (int(rng.integers(0, 1 << 20)) << (top - mantissa + 1)) + \
            (1 << (top - mantissa))
        out[k] = (mid + int(rng.integers(-1, 2))) * (1 if rng.random() < 0.7 else -1)
    return out


def draw_input(rng, shape: tuple[int, ...], dtype: str) -> Input:
    layout = pick(rng, list(LAYOUT_WEIGHTS), list(LAYOUT_WEIGHTS.values()))
    if not shape:                    # 0-d: an array, a numpy scalar or a Python scalar
        layout = pick(rng, ("contiguous", "scalar", "python", layout), (0.5, 0.2, 0.15, 0.15))
    unfit = {"python": dtype == "bfloat16", "bigendian": dtype in ("bool", "bfloat16"),
             "unaligned": dtype == "bool", "fortran": len(shape) < 2,
             "broadcast": not shape or shape[0] == 0}
    if unfit.get(layout, False):
        layout = "contiguous"
    if layout == "broadcast":        # one row, seen as many
        return Input(draw_values(rng, (1,) + shape[1:], dtype), "broadcast", shape)
    return Input(draw_values(rng, shape, dtype), layout)


def draw_dtypes(rng, count: int) -> list[str]:
    lead = pick(rng, DTYPES, DTYPE_WEIGHTS)
    return [lead if rng.random() < 0.7 else pick(rng, DTYPES) for _ in range(count)]
