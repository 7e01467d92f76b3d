"""Graph construction with numpy's semantics, on Nodes and Python scalars.

Every function here takes operands (Nodes, or Python bool/int/float scalars, which
numpy treats as weakly typed) and returns a Node that satisfies the graph invariants
of `graph.graph`: broadcasting and type conversion are made explicit here, once, so
nothing downstream has to know numpy's rules.
"""

from __future__ import annotations

import math
import warnings
from functools import reduce as _fold

import numpy as np

from ..dtypes import DType, promote, promote_scalar
from ..errors import DTypeError, ShapeError, UnsupportedError
from ..graph.graph import Node
from ..graph.ops import Op
from ..graph.reference import round_to_bfloat16

Scalar = bool | int | float
Operand = Node | Scalar

_INT_RANGE = {DType.int32: (-2**31, 2**31 - 1), DType.int64: (-2**63, 2**63 - 1)}


# -- constants and casts ---------------------------------------------------------------
def scalar_value(value, dtype: DType, *, what: str = "scalar"):
    """A Python scalar exactly representable in dtype, as numpy would convert it."""
    if dtype.is_bool:
        return bool(value)
    if dtype.is_int:
        v = int(value)
        lo, hi = _INT_RANGE[dtype]
        if not lo <= v <= hi:
            raise DTypeError(f"{what}: Python integer {v} is out of bounds for {dtype}")
        return v
    v = float(value)
    with np.errstate(over="ignore"):
        if dtype is DType.float16:
            return float(np.float16(v))
        if dtype is DType.float32:
            return float(np.float32(v))
    if dtype is DType.bfloat16:
        return float(round_to_bfloat16(np.float32(v)))
    return v


def const(value: Scalar, dtype: DType) -> Node:
    return Node(Op.CONST, (), (), dtype, scalar_value(value, dtype))


def full(value: Scalar, dtype: DType, shape: tuple[int, ...]) -> Node:
    """A tensor of shape whose elements all hold value, for the ops that need a tensor
    rather than a scalar (outputs, concatenation, reductions, a broadcast's shape):
    where(index >= 0, value, value) over an index, which the compiler folds."""
    index = Node(Op.IOTA, (), shape or (1,), DType.int64, 0)
    c = const(value, dtype)
    out = where(compare(Op.GE, index, 0), c, c)
    return out if shape else reshape(out, ())


def cast(x: Node, dtype: DType) -> Node:
    """x as dtype; constants are converted here rather than through a CAST node."""
    if x.dtype is dtype:
        return x
    if x.op is Op.CONST:
        return const(x.arg, dtype)
    return Node(Op.CAST, (x,), x.shape, dtype)


def _scalar_dtype(v: Scalar) -> DType:
    return DType.bool if isinstance(v, bool) else DType.int64 if isinstance(v, int) \
        else DType.float64


def result_dtype(operands: list[Operand]) -> DType:
    """numpy's result type (NEP 50): nodes are strongly typed, Python scalars weakly."""
    strong = [o.dtype for o in operands if isinstance(o, Node)]
    weak = [o for o in operands if not isinstance(o, Node)]
    if strong:
        dtype = _fold(promote, strong)
    else:
        dtype = max((_scalar_dtype(w) for w in weak), key=list(DType).index)
    for w in weak:
        dtype = promote_scalar(dtype, w)
    return dtype


def as_node(x: Operand, dtype: DType) -> Node:
    return cast(x, dtype) if isinstance(x, Node) else const(x, dtype)


# -- broadcasting ----------------------------------------------------------------------
def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(ndim):
        sizes = {s[k - ndim + len(s)] for s in shapes if k - ndim + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            listed = " and ".join(str(tuple(s)) for s in shapes)
            raise ShapeError(f"operands could not be broadcast together: shapes {listed}")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def expand(x: Node, shape: tuple[int, ...]) -> Node:
    """x broadcast to shape: RESHAPE to add leading 1s, then EXPAND; constants stay ()."""
    if x.shape == shape or x.op is Op.CONST:
        return x
    if len(x.shape) != len(shape):
        padded = (1,) * (len(shape) - len(x.shape)) + x.shape
        x = Node(Op.RESHAPE, (x,), padded, x.dtype)
    if x.shape != shape:
        x = Node(Op.EXPAND, (x,), shape, x.dtype)
    return x


def elementwise(op: Op, operands: list[Operand], dtype: DType,
                out_dtype: DType | None = None) -> Node:
    """op over operands converted to dtype and broadcast to one shape."""
    nodes = [as_node(o, dtype) for o in operands]
    shape = broadcast_shapes(*(n.shape for n in nodes))
    srcs = tuple(expand(n, shape) for n in nodes)
    return Node(op, srcs, shape, out_dtype or dtype)


# -- element-wise ops --------------------------------------------------------------------
_BOOL_ARITH = {Op.ADD: Op.OR, Op.MUL: Op.AND, Op.MAXIMUM: Op.OR, Op.MINIMUM: Op.AND}


def binary(op: Op, a: Operand, b: Operand) -> Node:
    """Arithmetic (ADD SUB MUL DIV FMOD MOD POW MAXIMUM MINIMUM) with numpy's dtype rules."""
    dtype = result_dtype([a, b])
    if op in (Op.FMOD, Op.MOD) and dtype.is_bool:
        name = "fmod" if op is Op.FMOD else "remainder (%)"
        raise DTypeError(f"{name} of two bool operands: numpy gives int8, which PowerFusion "
                         "does not have; cast an operand (x.astype(np.int32)) first")
    if op is Op.DIV and not dtype.is_float:
        dtype = DType.float64                       # true division of ints and bools
    if op is Op.POW and dtype.is_bool:
        raise DTypeError("bool ** bool: numpy gives int8, which PowerFusion does not have; "
                         "cast an operand (x.astype(np.int32)) first")
    if op is Op.POW and not dtype.is_float:
        if isinstance(b, Node) and b.dtype.is_bool:
            return where(b, a, binary(Op.ADD, binary(Op.MUL, a, 0), 1))   # a ** 0 or 1
        raise DTypeError(f"{dtype} ** {dtype} tensor: PowerFusion takes integer powers with "
                         "a Python int or a bool tensor exponent only (numpy raises for "
                         "negative ones, element by element); cast to a float first")
    if dtype.is_bool:
        if op in _BOOL_ARITH:                       # numpy: bool + bool is logical or
            return elementwise(_BOOL_ARITH[op], [a, b], dtype)
        raise DTypeError(f"{op.name.lower()} of two bool operands is not supported "
                         "(numpy rejects it too); use logical ops or astype first")
    return elementwise(op, [a, b], dtype)


def _comparison_dtype(a: Operand, b: Operand) -> DType:
    """Comparing an int tensor with an out-of-range Python int widens, as numpy does."""
    try:
        dtype = result_dtype([a, b])
        for o in (a, b):
            if not isinstance(o, Node):
                scalar_value(o, dtype)
        return dtype
    except DTypeError:
        return DType.int64 if all(isinstance(o, Node) or -2**63 <= o < 2**63
                                  for o in (a, b)) else DType.float64


def compare(op: Op, a: Operand, b: Operand) -> Node:
    return elementwise(op, [a, b], _comparison_dtype(a, b), DType.bool)


def to_bool(x: Operand) -> Operand:
    """Truth value of each element (x != 0), as numpy's logical functions take it."""
    if not isinstance(x, Node):
        return bool(x)
    return x if x.dtype.is_bool else compare(Op.NE, x, 0)


def logical(op: Op, a: Operand, b: Operand) -> Node:
    """AND / OR of truth values."""
    return elementwise(op, [to_bool(a), to_bool(b)], DType.bool)


def bitwise(op: Op, a: Operand, b: Operand) -> Node:
    """`&` and `|`: PowerFusion has them on bools only."""
    for o in (a, b):
        is_bool = o.dtype.is_bool if isinstance(o, Node) else isinstance(o, bool)
        if not is_bool:
            got = o.dtype if isinstance(o, Node) else type(o).__name__
            raise DTypeError(f"bitwise {'&' if op is Op.AND else '|'}: PowerFusion supports "
                             f"it on bool tensors only (logical and/or), got {got}")
    return elementwise(op, [a, b], DType.bool)


def logical_not(x: Node) -> Node:
    return Node(Op.NOT, (to_bool(x),), x.shape, DType.bool)


def float_dtype(dtype: DType) -> DType:
    """The type numpy computes a float function of this dtype in."""
    if dtype.is_float:
        return dtype
    return DType.float16 if dtype.is_bool else DType.float64


def unary_float(op: Op, x: Node) -> Node:
    """A transcendental or root (EXP LOG SQRT RSQRT TANH ERF SIGMOID SILU GELU ...)."""
    dtype = float_dtype(x.dtype)
    return Node(op, (cast(x, dtype),), x.shape, dtype)


def rounding(op: Op, x: Node) -> Node:
    """FLOOR CEIL TRUNC RINT. numpy's floor, ceil and trunc of an int or bool give it
    back unchanged; its rint is a float function (float64 of ints, float16 of bools)."""
    if op is not Op.RINT and not x.dtype.is_float:
        return x
    return unary_float(op, x)


def round_decimals(x: Node, decimals: int = 0) -> Node:
    """numpy.round: to nearest, ties to even, at 10**-decimals: x * 10**d, rint, / 10**d
    (decimals < 0: / then *), each rounded in x's dtype, as numpy computes it."""
    decimals = int(decimals)
    if decimals == 0:
        return x if x.dtype.is_int else rounding(Op.RINT, x)
    if x.dtype.is_int and decimals > 0:
        return x
    if x.dtype not in (DType.float32, DType.float64):
        # numpy rounds 16-bit products to 16 bits before rint, intermediates here do not;
        # its integer path for decimals < 0 is another algorithm
        raise UnsupportedError(f"numpy.round of a {x.dtype} tensor with decimals={decimals} "
                               "is not supported; cast to float32 first")
    scale = 10.0 ** abs(decimals)
    down, up = (Op.MUL, Op.DIV) if decimals > 0 else (Op.DIV, Op.MUL)
    return binary(up, rounding(Op.RINT, binary(down, x, scale)), scale)


def sign(x: Node) -> Node:
    """-1, 0 or 1 in x's dtype (+0 for -0); NaN stays NaN."""
    if x.dtype.is_bool:
        raise DTypeError("numpy.sign of a bool tensor is not supported (numpy rejects it "
                         "too); cast it first")
    return Node(Op.SIGN, (x,), x.shape, x.dtype)


def negative(x: Node) -> Node:
    if x.dtype.is_bool:
        raise DTypeError("negation of a bool tensor is not supported (numpy rejects it too); "
                         "use ~x for logical not")
    return Node(Op.NEG, (x,), x.shape, x.dtype)


def absolute(x: Node) -> Node:
    return x if x.dtype.is_bool else Node(Op.ABS, (x,), x.shape, x.dtype)


def relu(x: Node) -> Node:
    if x.dtype.is_bool:
        raise DTypeError("relu expects a numeric tensor, got bool")
    return Node(Op.RELU, (x,), x.shape, x.dtype)


def where(cond: Operand, a: Operand, b: Operand) -> Node:
    dtype = result_dtype([a, b])
    c = as_node(to_bool(cond), DType.bool)
    x, y = as_node(a, dtype), as_node(b, dtype)
    shape = broadcast_shapes(c.shape, x.shape, y.shape)
    return Node(Op.WHERE, (expand(c, shape), expand(x, shape), expand(y, shape)), shape, dtype)


def square(x: Node) -> Node:
    """numpy.square, which x ** 2 means: of a bool, numpy gives int8."""
    if x.dtype.is_bool:
        raise DTypeError("square of a bool tensor (or bool ** 2): numpy gives int8, which "
                         "PowerFusion does not have; cast the tensor (x.astype(np.int32)) "
                         "first")
    return binary(Op.MUL, x, x)


# an integer power up to 2**this - 1 is unrolled into at most this many squarings (and
# as many multiplies); a larger one runs as a square-and-multiply loop (pf_ipow_*)
INT_POWER_CHAIN_BITS = 8


def power_scalar(x: Node, exponent: Scalar, ufunc: bool = False,
                 torch_pow: bool = False) -> Node:
    """x ** e for a Python scalar e, as the cheapest op that gives numpy's result.
    ufunc: spelt np.power(x, e), whose float16 loop has no square-root shortcut (nor
    has ml_dtypes' bfloat16 power, which numpy's `**` calls too): there x ** 0.5 is pow
    at -0 and -inf (+0, +inf), not sqrt (-0, NaN).
    torch_pow: PyTorch's meaning instead: x ** 0.5 is sqrt and x ** -0.5 is 1 / sqrt, but
    in float16 (its CPU pow takes no shortcut there) both are pow."""
    dtype = result_dtype([x, exponent])
    if dtype.is_int and exponent < 0:
        raise DTypeError(f"integer tensor ({dtype}) to a negative integer power {exponent}: "
                         "not allowed (numpy rejects it too); cast to a float first")
    if dtype.is_int:
        scalar_value(exponent, dtype, what="exponent")    # numpy converts it: in range
    if x.dtype.is_bool and isinstance(exponent, bool):
        raise DTypeError(f"bool tensor ** {exponent!r}: numpy gives int8, which PowerFusion "
                         "does not have; cast the tensor (x.astype(np.int32)) first")
    base = cast(x, dtype)
    if exponent == 1:
        return base
    if dtype.is_int and exponent == 0:
        return binary(Op.ADD, binary(Op.MUL, base, 0), 1)       # ones, as numpy's x ** 0
    if dtype.is_int and exponent >= 1 << INT_POWER_CHAIN_BITS:
        return elementwise(Op.POW, [base, exponent], dtype)  # a loop at run time
    if float(exponent).is_integer() and (dtype.is_int or 2 <= exponent <= 8):
        # integer powers by squaring: vectorisable multiplies instead of pow(), wrapping
        # on ints as numpy's do (C has no integer pow)
        n, result, square = int(exponent), None, base
        while n:
            if n & 1:
                result = square if result is None else binary(Op.MUL, result, square)
            n >>= 1
            if n:
                square = binary(Op.MUL, square, square)
        return result
    if torch_pow:
        pow_edges = dtype is DType.float16
    else:
        pow_edges = dtype is DType.bfloat16 or (ufunc and dtype is DType.float16)
    if dtype.is_float and exponent == 0.5:
        if pow_edges:                           # pow's meaning: -0 -> +0, -inf -> +inf
            root = Node(Op.SQRT, (binary(Op.ADD, base, 0.0),), base.shape, dtype)
            return where(compare(Op.EQ, base, -math.inf), math.inf, root)
        return Node(Op.SQRT, (base,), base.shape, dtype)
    if dtype.is_float and exponent == -0.5 and not pow_edges and torch_pow:
        return Node(Op.RSQRT, (base,), base.shape, dtype)
    if dtype.is_float and exponent == -0.5:
        # pow's, not 1/sqrt's, meaning at the edges: (-0) ** -0.5 is +inf (x + 0.0 turns
        # -0 into +0), (-inf) ** -0.5 is 0
        root = Node(Op.RSQRT, (binary(Op.ADD, base, 0.0),), base.shape, dtype)
        return where(compare(Op.EQ, base, -math.inf), 0.0, root)
    if dtype.is_float and exponent == -1:
        return binary(Op.DIV, 1, base)
    return elementwise(Op.POW, [base, exponent], dtype)


# -- axes, reductions -------------------------------------------------------------------
def normalize_axis(axis: int, ndim: int, shape: tuple[int, ...]) -> int:
    try:
        axis = int(axis.__index__())
    except (AttributeError, TypeError):
        raise ShapeError(f"axis must be an integer, got {axis!r}") from None
    if not -ndim <= axis < ndim:
        raise ShapeError(f"axis {axis} is out of bounds for a tensor of shape {shape}")
    return axis % ndim if ndim else axis


def normalize_axes(axis, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Sorted non-negative axes from None, an int or a tuple; duplicates are an error."""
    ndim = len(shape)
    if axis is None:
        return tuple(range(ndim))
    items = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    axes = [normalize_axis(a, ndim, shape) for a in items]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"duplicate value in axis={axis!r} for a tensor of shape {shape}")
    return tuple(sorted(axes))


def ufunc_axes(axis, shape: tuple[int, ...]) -> tuple[int, ...]:
    """normalize_axes for numpy's ufunc reductions (sum, max, min, any, all, argmax),
    which also take an int axis 0 or -1 on a 0-d tensor (as reducing nothing)."""
    if not shape and not isinstance(axis, (tuple, list)) and axis is not None:
        try:
            if int(axis.__index__()) in (0, -1):
                return ()
        except (AttributeError, TypeError):
            pass
    return normalize_axes(axis, shape)


def reduce(op: Op, x: Node, axis=None, keepdims: bool = False) -> Node:
    """SUM / MAX / MIN over axes; sum of bool and int32 gives int64 like numpy on Linux."""
    axes = ufunc_axes(axis, x.shape)
    if op is Op.SUM and x.dtype in (DType.bool, DType.int32):
        x = cast(x, DType.int64)
    if op is not Op.SUM and any(x.shape[a] == 0 for a in axes):
        raise ShapeError(f"{op.name.lower()} over a zero-size axis of shape {x.shape}: "
                         "the reduction has no identity")
    if not axes:
        return x
    kept = tuple(1 if k in axes else n for k, n in enumerate(x.shape))
    out = Node(op, (x,), kept, x.dtype, axes)
    if not keepdims:
        out = reshape(out, tuple(n for k, n in enumerate(x.shape) if k not in axes))
    return out


def any_all(op: Op, x: Node, axis=None, keepdims: bool = False) -> Node:
    """numpy's any (op MAX) and all (op MIN) of truth values: over no elements, False
    and True (the identities), never an error."""
    axes = ufunc_axes(axis, x.shape)
    x = as_node(to_bool(x), DType.bool)
    if not axes:
        return x
    kept = tuple(1 if k in axes else n for k, n in enumerate(x.shape))
    out = Node(op, (x,), kept, DType.bool, axes)
    return out if keepdims else reshape(out, tuple(n for k, n in enumerate(x.shape)
                                                  if k not in axes))


def arg_extreme(op: Op, x: Node, axis=None, keepdims: bool = False) -> Node:
    """numpy's argmax (op MAX) / argmin (op MIN): the first index of the extreme along
    one axis (of the flattened tensor for axis=None), int64; a NaN is the extreme, as
    numpy's. Two reductions over one space: the extreme, then the least index holding
    it (or holding a NaN)."""
    name = "argmax" if op is Op.MAX else "argmin"
    if isinstance(axis, (tuple, list)):
        raise ShapeError(f"{name} takes one axis (an integer) or None, got {axis!r}")
    if axis is None or ufunc_axes(axis, x.shape) == ():
        flat = reshape(x, (x.size,))
        found = arg_extreme(op, flat, 0, False)
        return reshape(found, (1,) * len(x.shape)) if keepdims else found
    k = normalize_axis(axis, len(x.shape), x.shape)
    if x.shape[k] == 0:
        raise ShapeError(f"{name} over the zero-size axis {k} of shape {x.shape}: "
                         "an empty sequence has no extreme")
    best = expand(reduce(op, x, k, keepdims=True), x.shape)
    hit = compare(Op.EQ, x, best)
    if x.dtype.is_float:
        hit = logical(Op.OR, hit, compare(Op.NE, x, x))
    iota = Node(Op.IOTA, (), x.shape, DType.int64, k)
    return reduce(Op.MIN, where(hit, iota, x.shape[k]), k, keepdims)


# the longest axis `cumsum` takes: it is a masked sum over a square (each element adds
# all before it), work growing with the axis squared
CUMSUM_AXIS = 1024


def cumsum(x: Node, axis: int) -> Node:
    """The inclusive prefix sum along one axis, in x's dtype: out[.., i, ..] is the sum of
    x[.., j, ..] over j <= i, one masked reduction over an (i, j) square; for short axes
    (an attention mask's, a count of positions), at most CUMSUM_AXIS long."""
    k = normalize_axis(axis, len(x.shape), x.shape)
    n = x.shape[k]
    if n > CUMSUM_AXIS:
        raise ShapeError(f"cumsum along an axis of {n} elements: at most {CUMSUM_AXIS} "
                         "(the sum is built as a square of masked adds)")
    rest = len(x.shape) - k - 1
    grid = (1,) * k + (n, n) + (1,) * rest
    # i: the output's position (axis k), j: the summed one (axis k + 1, x's own axis)
    before = compare(Op.LE, Node(Op.IOTA, (), grid, DType.int64, k + 1),
                     Node(Op.IOTA, (), grid, DType.int64, k))
    xj = reshape(x, x.shape[:k] + (1,) + x.shape[k:])
    return reduce(Op.SUM, where(before, xj, 0), k + 1)


def mean(x: Node, axis=None, keepdims: bool = False) -> Node:
    """sum / count, accumulated in float32 for 16-bit floats and float64 for ints."""
    axes = normalize_axes(axis, x.shape)
    count = math.prod(x.shape[a] for a in axes)
    if count == 0 and x.size == 0 < math.prod(n for k, n in enumerate(x.shape) if k not in axes):
        warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=3)    # as numpy
    acc = x.dtype.compute if x.dtype.is_float else DType.float64
    total = reduce(Op.SUM, cast(x, acc), axes, keepdims)
    return cast(binary(Op.DIV, total, float(count)),
                x.dtype if x.dtype.is_float else DType.float64)


# -- movement -----------------------------------------------------------------------------
def reshape(x: Node, shape) -> Node:
    shape = tuple(int(n) for n in shape)
    unknown = [k for k, n in enumerate(shape) if n == -1]
    known = math.prod(n for n in shape if n != -1)
    bad = len(unknown) > 1 or any(n < -1 for n in shape)
    if unknown and not bad:
        if known == 0 or x.size % known:
            bad = True
        else:
            shape = shape[:unknown[0]] + (x.size // known,) + shape[unknown[0] + 1:]
    if bad or math.prod(shape) != x.size:
        raise ShapeError(f"cannot reshape a tensor of shape {x.shape} (size {x.size}) "
                         f"into shape {shape}")
    return x if shape == x.shape else Node(Op.RESHAPE, (x,), shape, x.dtype)


def permute(x: Node, perm=None) -> Node:
    """numpy.transpose: any permutation of the axes; None reverses them."""
    ndim = len(x.shape)
    if perm is None:
        perm = tuple(reversed(range(ndim)))
    perm = tuple(perm)
    if len(perm) != ndim:
        raise ShapeError(f"axes {perm} don't match a tensor of shape {x.shape}")
    perm = tuple(normalize_axis(a, ndim, x.shape) for a in perm)
    if sorted(perm) != list(range(ndim)):
        raise ShapeError(f"axes {perm} are not a permutation of the axes of shape {x.shape}")
    if perm == tuple(range(ndim)):
        return x
    return Node(Op.PERMUTE, (x,), tuple(x.shape[a] for a in perm), x.dtype, perm)


def concatenate(nodes: list[Node], axis: int = 0) -> Node:
    if not nodes:
        raise ShapeError("concatenate needs at least one tensor")
    first = nodes[0].shape
    if not first:
        raise ShapeError("zero-dimensional tensors cannot be concatenated")
    axis = normalize_axis(axis, len(first), first)
    for n in nodes:
        if len(n.shape) != len(first) or any(a != b for k, (a, b) in
                                            enumerate(zip(n.shape, first)) if k != axis):
            shapes = ", ".join(str(m.shape) for m in nodes)
            raise ShapeError(f"concatenate along axis {axis}: shapes {shapes} must agree "
                             "on every other axis")
    dtype = result_dtype(list(nodes))
    pieces = [cast(n, dtype) for n in nodes if n.shape[axis] > 0] or [cast(nodes[0], dtype)]
    if len(pieces) == 1:
        return pieces[0]
    length = sum(p.shape[axis] for p in pieces)
    shape = first[:axis] + (length,) + first[axis + 1:]
    return Node(Op.CONCAT, tuple(pieces), shape, dtype, axis)


def getitem(x: Node, index) -> Node:
    """Basic indexing: ints, slices with positive steps, None and Ellipsis."""
    items = list(index) if isinstance(index, tuple) else [index]
    for it in items:
        if isinstance(it, (bool, np.bool_)) or not (
                it is None or it is Ellipsis or isinstance(it, (slice, int, np.integer))):
            raise UnsupportedError(f"indexing with {type(it).__name__} (advanced or boolean "
                                   "indexing) is not supported by PowerFusion tracing; "
                                   "use ints, slices, None and ...")
    if sum(it is Ellipsis for it in items) > 1:
        raise ShapeError("an index can only have a single ellipsis ('...')")
    consumed = sum(it is not None and it is not Ellipsis for it in items)
    if consumed > len(x.shape):
        raise ShapeError(f"too many indices for a tensor of shape {x.shape}: {index!r}")
    fill = [slice(None)] * (len(x.shape) - consumed)
    ellipsis = [k for k, it in enumerate(items) if it is Ellipsis]
    if ellipsis:
        items[ellipsis[0]:ellipsis[0] + 1] = fill
    else:
        items += fill
    bounds, out_shape, axis = [], [], 0
    for it in items:
        if it is None:
            out_shape.append(1)
            continue
        n = x.shape[axis]
        if isinstance(it, slice):
            start, stop, step = it.indices(n)
            if step <= 0:
                raise UnsupportedError(f"slice step {step} on axis {axis}: PowerFusion "
                                       "tracing supports positive steps only")
            count = len(range(start, stop, step))
            stop = start + (count - 1) * step + 1 if count else start
            out_shape.append(count)
        else:
            i = int(it)
            if not -n <= i < n:
                raise ShapeError(f"index {i} is out of bounds for axis {axis} with size {n} "
                                 f"(tensor of shape {x.shape})")
            start, stop, step, count = i % n, i % n + 1, 1, 1
        bounds.append((start, stop, step))
        axis += 1
    sliced = tuple(len(range(*b)) for b in bounds)
    if sliced != x.shape:
        x = Node(Op.SLICE, (x,), sliced, x.dtype, tuple(bounds))
    return reshape(x, tuple(out_shape))
