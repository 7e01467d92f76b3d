"""Frontends that turn user programs into the tensor graph: pf.jit tracing (numpy
protocols included) and the pf.* functions it offers."""

from .tensor import Tensor
from .tracing import TensorSpec, trace

__all__ = ["Tensor", "TensorSpec", "trace"]
