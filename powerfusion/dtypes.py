"""The dtypes PowerFusion computes with, and numpy's promotion rules over them.

16-bit floats are stored narrow and computed in float32.
"""

from __future__ import annotations

import enum

import numpy as np

from .errors import DTypeError

try:  # numpy has no bfloat16; ml_dtypes supplies one when installed
    import ml_dtypes as _ml_dtypes
    _NP_BFLOAT16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _NP_BFLOAT16 = None


class DType(enum.Enum):
    """Element types: (name, bytes, kind) where kind is 'f', 'i' or 'b'."""

    bool = ("bool", 1, "b")
    int32 = ("int32", 4, "i")
    int64 = ("int64", 8, "i")
    float16 = ("float16", 2, "f")
    bfloat16 = ("bfloat16", 2, "f")
    float32 = ("float32", 4, "f")
    float64 = ("float64", 8, "f")

    @property
    def itemsize(self) -> int:
        return self.value[1]

    @property
    def is_float(self) -> bool:
        return self.value[2] == "f"

    @property
    def is_int(self) -> bool:
        return self.value[2] == "i"

    @property
    def is_bool(self) -> bool:
        return self.value[2] == "b"

    @property
    def compute(self) -> "DType":
        """The type arithmetic happens in: 16-bit floats widen to float32."""
        return DType.float32 if self in (DType.float16, DType.bfloat16) else self

    def to_numpy(self) -> np.dtype:
        if self is DType.bfloat16:
            if _NP_BFLOAT16 is None:
                raise DTypeError("bfloat16 results as numpy arrays need the ml_dtypes package "
                                 "(pip install ml_dtypes); or pass torch tensors")
            return _NP_BFLOAT16
        return np.dtype(self.value[0])

    def __repr__(self) -> str:
        return f"pf.{self.value[0]}"

    __str__ = lambda self: self.value[0]  # noqa: E731


_BY_NAME = {d.value[0]: d for d in DType}


def as_dtype(x, *, what: str = "dtype") -> DType:
    """DType from a DType, a name, a numpy dtype or a torch dtype."""
    if isinstance(x, DType):
        return x
    name = None
    if isinstance(x, str):
        name = x
    elif hasattr(x, "is_floating_point") and str(x).startswith("torch."):
        name = str(x)[len("torch."):]
    else:
        try:
            npd = np.dtype(x)
        except TypeError:
            raise DTypeError(f"{what}: expected a dtype, got {x!r}") from None
        name = "bfloat16" if _NP_BFLOAT16 is not None and npd == _NP_BFLOAT16 else npd.name
    aliases = {"float": "float32", "half": "float16", "double": "float64", "int": "int64",
               "long": "int64", "bool_": "bool"}
    name = aliases.get(name, name)
    if name not in _BY_NAME:
        raise DTypeError(f"{what}: PowerFusion supports {', '.join(_BY_NAME)}; got {name}")
    return _BY_NAME[name]


_ORDER = [DType.bool, DType.int32, DType.int64, DType.float16, DType.bfloat16,
          DType.float32, DType.float64]


def promote(a: DType, b: DType) -> DType:
    """numpy's result type for two arrays of these dtypes."""
    if a is b:
        return a
    if {a, b} == {DType.float16, DType.bfloat16}:
        return DType.float32
    if a.is_float and b.is_float:
        return max(a, b, key=_ORDER.index)
    if a.is_float or b.is_float:
        f, i = (a, b) if a.is_float else (b, a)
        if i.is_bool:
            return f
        # numpy: int32 with float16 -> float64, int with float32 -> float64
        return DType.float64
    return max(a, b, key=_ORDER.index)


def promote_scalar(a: DType, scalar) -> DType:
    """numpy (NEP 50) result type of an array of dtype `a` with a Python scalar."""
    if isinstance(scalar, bool):
        return a
    if isinstance(scalar, int):
        return a if not a.is_bool else DType.int64
    if isinstance(scalar, float):
        return a if a.is_float else DType.float64
    raise DTypeError(f"scalar operand: expected bool, int or float, got {type(scalar).__name__}")
