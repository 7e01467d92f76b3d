"""PowerFusion as an `onnx.backend.base.Backend`, so ONNX's own backend tests
(`onnx.backend.test.BackendTest`) run against it. Ops PowerFusion does not claim run
in onnxruntime, as in any loaded model."""

from __future__ import annotations

import numpy as np
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from .onnx_model import OnnxModel, load


class PowerFusionRep(BackendRep):
    def __init__(self, model: OnnxModel):
        self.model = model

    def run(self, inputs, **kwargs) -> tuple:
        if isinstance(inputs, dict):
            outs = self.model.run(inputs)
            return tuple(outs[n] for n in self.model.output_names)
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        outs = self.model(*inputs)
        return outs if isinstance(outs, tuple) else (outs,)


class PowerFusionBackend(Backend):
    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> PowerFusionRep:
        super().prepare(model, device, **kwargs)       # ONNX's model checker
        return PowerFusionRep(load(model))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = PowerFusionBackend.prepare
run_model = PowerFusionBackend.run_model
supports_device = PowerFusionBackend.supports_device
