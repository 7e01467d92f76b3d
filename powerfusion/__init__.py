"""PowerFusion: a tensor compiler for memory-bound deep-learning operators.

    import powerfusion as pf

    @pf.jit
    def softmax(x):
        e = pf.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
"""

from .advise import Advice, advise
from .api import JitFunction, explain, jit
from .frontend.torch_stats import compile_stats, reset_compile_stats
from .dtypes import DType
from .errors import CompileError, DTypeError, PowerFusionError, ShapeError, UnsupportedError
from . import onnx  # noqa: F401 - pf.onnx.load; imports the onnx package only when used
from .frontend.functions import (abs, ceil, concatenate, cos, erf, exp, exp2, expm1, floor,
                                 fmod, gelu, log, log1p, log2, log10, max, maximum, mean, min,
                                 minimum, mod, relu, remainder, reshape, rint, round, rsqrt,
                                 sigmoid, sign, silu, sin, sqrt, sum, tan, tanh, transpose,
                                 trunc, where)

__version__ = "0.1.0"

bool = DType.bool            # noqa: A001 - pf.bool mirrors np.bool
int32 = DType.int32
int64 = DType.int64
float16 = DType.float16
bfloat16 = DType.bfloat16
float32 = DType.float32
float64 = DType.float64

__all__ = [
    "compile_stats", "reset_compile_stats",
    "jit", "explain", "advise", "Advice", "JitFunction", "DType",
    "PowerFusionError", "ShapeError", "DTypeError", "UnsupportedError", "CompileError",
    "where", "maximum", "minimum", "remainder", "mod", "fmod", "exp", "log", "sqrt", "rsqrt",
    "abs", "tanh", "erf", "sigmoid", "relu", "silu", "gelu", "sin", "cos", "tan", "log1p",
    "expm1", "log2", "log10", "exp2", "floor", "ceil", "trunc", "rint", "round", "sign", "sum", "mean", "max", "min",
    "reshape", "transpose", "concatenate",
    "bool", "int32", "int64", "float16", "bfloat16", "float32", "float64",
]
