"""The one registry of deployment targets: what `--target NAME` means everywhere (config, export, verify,
package, CLI help).

A target is a runtime and a precision. Its ONNX file is the run directory's file for that precision (the
TensorRT targets build their engine from it); its default gate tolerance is the precision's (pwdeploy.gate owns
those numbers, since the device's verifier needs them without this module); engines get one batch profile.
Add a target with ``register_target(Target(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from . import rundir
from .errors import PwdeployError
from .gate import tolerance_for

# min / opt / max batch of every TensorRT engine's input profile (built here or on the device)
ENGINE_BATCHES: Tuple[int, int, int] = (1, 8, 32)
# INT8 calibration images drawn, stratified by group, from the training split
DEFAULT_CALIB_SIZE = 512
DEFAULT_TARGET = "onnx-fp32"
ONNX_FOR_PRECISION: Dict[str, str] = {"fp32": rundir.MODEL_ONNX, "fp16": rundir.FP16_ONNX,
                                      "int8": rundir.INT8_ONNX}
RUNTIMES = {"onnx": "onnxruntime", "trt": "tensorrt"}


@dataclass(frozen=True)
class Target:
    name: str  # "onnx-fp16", "trt-int8", ...
    runtime: str  # "onnxruntime" or "tensorrt"
    precision: str  # "fp32", "fp16" or "int8"
    engine_batches: Tuple[int, int, int] = ENGINE_BATCHES
    calib_size: int = DEFAULT_CALIB_SIZE

    @property
    def onnx_file(self) -> str:
        """The run directory's ONNX file of this precision (what ONNX Runtime runs and TensorRT builds from)."""
        return ONNX_FOR_PRECISION[self.precision]

    @property
    def tolerance(self) -> float:
        """Default gate tolerance, in accuracy points per group."""
        return tolerance_for(self.precision)

    @property
    def builds_engine(self) -> bool:
        return self.runtime == "tensorrt"


_TARGETS: Dict[str, Target] = {}


def register_target(target: Target) -> Target:
    if target.precision not in ONNX_FOR_PRECISION:
        raise ValueError(f"target {target.name}: unknown precision {target.precision!r}")
    _TARGETS[target.name] = target
    return target


def list_targets() -> List[str]:
    return list(_TARGETS)


def get_target(name: str, option: str = "--target") -> Target:
    """The registered target ``name``; unknown names are bad input (exit 2)."""
    try:
        return _TARGETS[name]
    except KeyError:
        raise PwdeployError(f"unknown {option} {name!r} (unknown target {name!r}): use one of "
                           f"{', '.join(_TARGETS)}") from None


def target_for_file(name: str) -> str | None:
    """The ONNX Runtime target whose artifact is called ``name`` in a run directory (None if none is)."""
    return next((t.name for t in _TARGETS.values() if t.runtime == "onnxruntime" and t.onnx_file == name), None)


def help_text() -> str:
    names = list_targets()
    return f"{', '.join(names[:-1])} or {names[-1]}."


for _prefix, _runtime in RUNTIMES.items():
    for _precision in ONNX_FOR_PRECISION:
        register_target(Target(f"{_prefix}-{_precision}", _runtime, _precision))
