"""`pf.onnx`: ONNX models compiled by PowerFusion.

    model = pf.onnx.load("model.onnx")     # a path, bytes or an onnx.ModelProto
    y = model(x)                           # numpy arrays in and out
    print(pf.explain(model, x))            # each PowerFusion region's report

Element-wise ops, reductions, softmaxes, normalisations and layout ops become
PowerFusion kernels (consecutive ones fused into one region); MatMul, Conv, Gather
and every op PowerFusion does not claim run in onnxruntime. Needs the onnx package
(and onnxruntime for unclaimed ops); `import powerfusion` does not.
"""

from __future__ import annotations

from .errors import UnsupportedError


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UnsupportedError("pf.onnx needs the onnx package: pip install onnx "
                               "onnxruntime") from None


def load(model, *, target: str | None = None):
    """An ONNX model (path, bytes or onnx.ModelProto) as a callable on numpy arrays."""
    _require_onnx()
    from .frontend.onnx_model import load as load_model

    return load_model(model, target=target)


def claimed_ops() -> list[str]:
    """The ONNX op types PowerFusion compiles (at opset 13 and later)."""
    _require_onnx()
    from .frontend.onnx_model import RULES

    return sorted(RULES)


__all__ = ["load", "claimed_ops"]
