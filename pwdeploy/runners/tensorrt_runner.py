"""TensorRT engine runner through Polygraphy's TrtRunner (no hand-written CUDA buffer code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PwdeployError
from .base import Runner


class TensorRTRunner(Runner):
    kind = "tensorrt"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise PwdeployError(f"engine file not found: {self.path}")
        try:
            import tensorrt as trt
            from polygraphy.backend.common import BytesFromPath
            from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        except ImportError as exc:
            raise PwdeployError(f"running {self.path.name} needs TensorRT and polygraphy ({exc}): run verify on "
                                "the device the engine was built for, or verify the ONNX it was built from") from exc
        self._trt_version = trt.__version__
        try:
            engine = EngineFromBytes(BytesFromPath(str(self.path)))()
        except Exception as exc:  # noqa: BLE001 - deserialisation fails with several TensorRT error types
            raise PwdeployError(f"TensorRT {trt.__version__} cannot load {self.path.name} ({exc}): engines only "
                                "run with the TensorRT version and GPU they were built on; rebuild it here with "
                                "build_engine.sh") from exc
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.input_name, self.output_name = inputs[0], outputs[0]
        if engine.num_optimization_profiles > 0 and -1 in tuple(engine.get_tensor_shape(self.input_name)):
            self.max_batch = int(engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        self._runner = TrtRunner(engine)
        self._runner.activate()

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self._runner.infer({self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(out[self.output_name], dtype=np.float32, copy=True)  # TrtRunner reuses its buffers

    def describe(self) -> dict:
        from .gpu import gpu_info

        return {"runner": self.kind, "tensorrt_version": self._trt_version, "device": "cuda", "gpu": gpu_info()}

    def close(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None and runner.is_active:
            runner.deactivate()
