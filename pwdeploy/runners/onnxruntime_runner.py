"""ONNX Runtime runner: CPU everywhere; CUDA or TensorRT execution providers where this build has them.

The one ONNX Runtime runner of `pwdeploy verify`, `pwdeploy package` and the device verifier (bundles ship this
file): numpy only at import, Python 3.8 compatible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PwdeployError
from ..latency_core import ORT_NO_SPIN
from .base import Runner, RunnerError

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def resolve_providers(provider: str) -> list[str]:
    """``auto``: CUDA when this onnxruntime build has it, else CPU (the TensorRT EP builds an engine at
    session start, so it is used only when asked for)."""
    available = _ort().get_available_providers()
    if provider == "auto":
        provider = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if provider not in PROVIDERS:
        raise PwdeployError(f"unknown ONNX Runtime provider {provider!r}: use auto, {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[provider][0]
    if wanted not in available:
        raise PwdeployError(f"this onnxruntime has no {wanted} (it has {', '.join(available)}): install "
                            "onnxruntime-gpu, or use --ort-provider cpu")
    return PROVIDERS[provider]


class OnnxRuntimeRunner(Runner):
    kind = "onnxruntime"

    def __init__(self, path: str | Path, *, provider: str = "auto", threads: int | None = None,
                 input_name: str | None = None, spinning: bool = True):
        """``input_name``: the input the caller will feed (a bundle's manifest names it); checked here.
        ``spinning=False`` for timed sessions: an idle session's spinning pool would steal the timed one's cores."""
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise PwdeployError(f"ONNX file not found: {self.path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: fp16 Cast-insertion notes are not for the user
        if not spinning:
            options.add_session_config_entry(*ORT_NO_SPIN)
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.requested = resolve_providers(provider)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=self.requested)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunnerError(f"ONNX Runtime cannot load {self.path.name}: {first}: re-export it with "
                              "'pwdeploy export'") from exc
        inp = self.session.get_inputs()[0]
        if input_name is not None and input_name != inp.name:
            raise RunnerError(f"{self.path.name} has input {inp.name!r} but the manifest says {input_name!r}: "
                              "re-create the bundle")
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        self.input_type = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.output_name = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()  # what ORT actually uses (it may fall back)
        # the short form bundles record (manifest reference.runner, verify_result.json runner)
        self.description = {"runtime": "onnxruntime", "version": ort.__version__, "provider": self.providers[0],
                            "model": self.path.name}

    def metadata(self) -> dict:
        """The model's metadata_props (pwdeploy stores INT8 calibration provenance there)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: batch.astype(self.input_type, copy=False)})
        return np.asarray(out[0], dtype=np.float32)

    def close(self) -> None:
        self.session = None

    def describe(self) -> dict:
        return {"runner": self.kind, "onnxruntime_version": _ort().__version__, "providers": list(self.providers),
                "device": "cuda" if any(p != "CPUExecutionProvider" for p in self.providers) else "cpu"}


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise RunnerError("onnxruntime is not installed: `pip3 install onnxruntime` (or onnxruntime-gpu; on a "
                          "Jetson from the Jetson AI Lab index), or install TensorRT") from None
    return onnxruntime
