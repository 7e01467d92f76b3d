"""ONNX nodes PowerFusion does not claim, run by onnxruntime.

Why onnxruntime: it implements every standard op at every opset, with tuned kernels
for the compute-bound ones (MLAS for MatMul, Gemm, Conv), and takes any sub-model
we cut out of the user's. A run of consecutive unclaimed nodes becomes one such
sub-model (its inputs untyped in shape, typed by the first call's arrays), so
onnxruntime's own graph optimisations still see the whole run. Where onnxruntime
cannot load a sub-model (an opset newer than it knows), ONNX's reference evaluator
runs it instead, with a warning: correct, not fast.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper

from ..errors import UnsupportedError

logger = logging.getLogger("powerfusion")


def used_names(node: onnx.NodeProto) -> list[str]:
    """The values a node reads, including those its subgraphs (If, Loop, Scan) read
    from the enclosing scope."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for g in graphs:
            inner = {v.name for v in g.input} | {t.name for t in g.initializer}
            for sub in g.node:
                inner |= set(sub.output)
                names += [n for n in used_names(sub) if n not in inner]
    return list(dict.fromkeys(names))


def _type_key(value) -> str:
    return value.dtype.str + str(value.ndim) if isinstance(value, np.ndarray) else \
        type(value).__name__


class LibraryStep:
    """Consecutive unclaimed nodes, run as one onnxruntime session per input dtypes."""

    def __init__(self, model: onnx.ModelProto, nodes: list[onnx.NodeProto],
                 inputs: list[str], outputs: list[str], constants: dict[str, onnx.TensorProto],
                 value_infos: dict[str, onnx.ValueInfoProto]):
        self.model, self.nodes, self.value_infos = model, nodes, value_infos
        self.inputs, self.outputs, self.constants = inputs, outputs, constants
        self.runners: dict[tuple, object] = {}

    @property
    def label(self) -> str:
        ops = ", ".join(dict.fromkeys(n.op_type for n in self.nodes))
        return f"library ({ops})"

    def describe(self) -> list[str]:
        return [f"{n.name or '?'} ({n.op_type})" for n in self.nodes]

    def run(self, env: dict[str, np.ndarray]) -> None:
        if not self.outputs:
            return                       # nothing it computes is used
        feeds = {n: env[n] for n in self.inputs}
        key = tuple(_type_key(a) for a in feeds.values())
        runner = self.runners.get(key) or self._runner(feeds)
        self.runners[key] = runner
        outs = runner(feeds)
        env.update(zip(self.outputs, outs))

    def _input_info(self, name: str, value) -> onnx.ValueInfoProto:
        """The declared or inferred type of an input where it fits the value (Scan
        bodies need shapes), else the value's dtype alone."""
        info = self.value_infos.get(name)
        if not isinstance(value, np.ndarray):
            return info if info is not None else onnx.ValueInfoProto(name=name)
        elem = helper.np_dtype_to_tensor_dtype(value.dtype)
        if info is not None and info.type.tensor_type.elem_type == elem and \
                len(info.type.tensor_type.shape.dim) == value.ndim:
            return info
        return helper.make_tensor_value_info(name, elem, None)

    def _submodel(self, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
        inputs = [self._input_info(n, a) for n, a in feeds.items()]
        outputs = [onnx.ValueInfoProto(name=n) for n in self.outputs]
        graph = helper.make_graph(self.nodes, "powerfusion_library", inputs, outputs,
                                  initializer=list(self.constants.values()))
        sub = helper.make_model(graph, opset_imports=list(self.model.opset_import),
                                functions=list(self.model.functions))
        sub.ir_version = self.model.ir_version
        return sub

    def _runner(self, feeds: dict[str, np.ndarray]):
        sub = self._submodel(feeds)
        try:
            if any(isinstance(a, np.ndarray) and a.dtype.kind == "V" for a in feeds.values()):
                raise UnsupportedError("onnxruntime takes no ml_dtypes arrays (bfloat16, "
                                       "float8)")
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            # idle onnxruntime threads spin by default, taking the cores PowerFusion's
            # kernels run on next (softmax ran 5x slower after a library call)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(sub.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
            return lambda f: session.run(self.outputs, f)
        except Exception as e:          # noqa: BLE001 - try the reference evaluator next
            first = f"{type(e).__name__}: {e}"
        try:
            from onnx.reference import ReferenceEvaluator

            evaluator = ReferenceEvaluator(sub)
        except Exception as e:          # noqa: BLE001 - reported below, typed
            raise UnsupportedError(
                f"{', '.join(self.describe())}: neither onnxruntime ({first.splitlines()[0]})"
                f" nor ONNX's reference evaluator ({type(e).__name__}: {e}) can run "
                "this op") from e
        logger.warning("PowerFusion: %s runs in ONNX's reference evaluator (slow): "
                       "onnxruntime said %s", ", ".join(self.describe()),
                       first.splitlines()[0])
        return lambda f: evaluator.run(self.outputs, f)
