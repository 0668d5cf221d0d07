"""The one registry of deployment targets: what `--target NAME` means everywhere (config, export, verify,
package, CLI help), and each target's own policy.

A target is a runtime and a precision. Its ONNX file is the run directory's file for that precision (the
TensorRT targets build their engine from it); its default gate tolerance is the precision's (pwdeploy.gate owns
those numbers, since the device's verifier needs them without this module). Each target declares what the
pipeline does by default for it: the channel multiple pruned groups keep (``--round-to``), which pruning
methods spread removals uniformly under ``--allocation auto``, the batch profile of its engine and the INT8
calibration size. Code reads these from the Target and branches on its runtime or precision, never on its
name. Add a target with ``register_target(Target(...))``.
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
KNOWN_RUNTIMES = ("onnxruntime", "tensorrt")


@dataclass(frozen=True)
class Rounding:
    """The channel multiple pruned groups keep on a target by default, and why (recorded in report.json)."""
    multiple: int = 8
    why: str = "multiples of 8: the common Tensor Core / SIMD alignment"


@dataclass(frozen=True)
class Target:
    name: str  # "onnx-fp16", "trt-int8", ...
    runtime: str  # "onnxruntime" or "tensorrt"
    precision: str  # "fp32", "fp16" or "int8"
    rounding: Rounding = Rounding()
    # pruning methods whose --allocation auto is uniform here (measured to help speed and fairness); others: global
    uniform_methods: Tuple[str, ...] = ()
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

    def auto_allocation(self, method: str) -> Tuple[str, str]:
        """(allocation, why) that ``--allocation auto`` means for pruning ``method`` on this target."""
        if method in self.uniform_methods:
            return "uniform", (f"auto: uniform for {method} on {self.name} (measured: more of the removed MACs "
                               "become time, and less harm to the worst group; docs 'MACs vs latency')")
        return "global", f"auto: the global ranking for {method} on {self.name} (uniform not measured to help there)"


_TARGETS: Dict[str, Target] = {}


def register_target(target: Target) -> Target:
    if target.precision not in ONNX_FOR_PRECISION:
        raise ValueError(f"target {target.name}: unknown precision {target.precision!r}")
    if target.runtime not in KNOWN_RUNTIMES:
        raise ValueError(f"target {target.name}: unknown runtime {target.runtime!r}")
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


# Why these multiples: runtimes run fast kernels only on aligned channel counts (pwdeploy.prune.alignment). ONNX
# Runtime's CPU provider blocks a Conv into NCHWc only when its channels are multiples of the MLAS block (16 with
# AVX-512, 8 with AVX2); NVIDIA's guidance for Tensor Cores is multiples of 8 for fp16 and 16 for INT8. INT8 on
# ONNX Runtime CPU (QLinearConv, NHWC): rounding to 32 was no faster than 16 (docs/guides/speed.md).
_NCHWC = Rounding(16, "ONNX Runtime CPU NCHWc block (16 with AVX-512, a multiple of AVX2's 8)")
# --allocation auto, measured (benchmarks/speedup.py, ONNX Runtime CPU, 75% fewer MACs, rounded to 16): uniform
# turned 0.87-0.97 of the removed MACs into time for resnet18/resnet50 in fp32 (global 0.77-0.92), but no more
# for INT8 (0.56-0.75 either way, benchmarks/int8_study.py) nor for mobilenet_v2. Fairness (synthetic benchmark,
# 75%, 5 seeds): with Taylor it cut the worst-group drop; with magnitude and AutoBot it made it worse, so only
# Taylor gets it.
for _target in (
        Target("onnx-fp32", "onnxruntime", "fp32", _NCHWC, uniform_methods=("taylor",)),
        Target("onnx-fp16", "onnxruntime", "fp16",
               Rounding(16, "ONNX Runtime NCHWc block on CPU; a multiple of 8 for fp16 Tensor Cores")),
        Target("onnx-int8", "onnxruntime", "int8",
               Rounding(16, "INT8 Tensor Cores want multiples of 16; also ONNX Runtime's CPU NCHWc block")),
        Target("trt-fp32", "tensorrt", "fp32",
               Rounding(8, "TensorRT: multiples of 8 keep fp16/TF32 Tensor Core kernels eligible")),
        Target("trt-fp16", "tensorrt", "fp16", Rounding(8, "TensorRT fp16 Tensor Cores: channels multiples of 8")),
        Target("trt-int8", "tensorrt", "int8", Rounding(16, "TensorRT INT8 Tensor Cores: channels multiples of 16")),
):
    register_target(_target)
