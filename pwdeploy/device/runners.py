"""Which runtime the device verifier uses, and which engine: TensorRT (pwdeploy.runners' TensorRTRunner) or
ONNX Runtime (OnnxRuntimeRunner), the same runner classes `pwdeploy verify` and `pwdeploy package` use.

numpy only at import time; each runtime is imported when chosen. Python 3.8 compatible.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from ..runners.base import EngineIncompatible, RunnerError, run_batches  # noqa: F401 - the device's names
from ..runners.onnxruntime_runner import OnnxRuntimeRunner
from ..runners.tensorrt_runner import TensorRTRunner, tensorrt_version
from ..names import ENGINE
from .build_engine import build_engine
from .state import record_engine, recorded_engine, state_dir as state_dir_of


def select_runner(bundle_dir: str, manifest: Dict[str, Any], runner: str = "auto", *, log=print,
                  build_timeout: float = 3600.0, state_dir: Optional[str] = None, manifest_sha256: str = ""):
    """The runner to verify with and a note on why. 'auto': TensorRT when installed (engine built here when
    missing or not loadable), else ONNX Runtime on the shipped ONNX, said out loud. Only two engines are
    ever loaded: the one the manifest lists (hashed), or one built here into the state folder and recorded
    there (state/engine.json); an engine file anywhere else is never used."""
    if runner not in ("auto", "tensorrt", "onnxruntime"):
        raise RunnerError("--runner must be auto, tensorrt or onnxruntime, got {!r}".format(runner))
    model = manifest["model"]
    model_path = os.path.join(bundle_dir, model["file"])
    trt_version = tensorrt_version()
    if runner == "onnxruntime" or (runner == "auto" and trt_version is None):
        note = "onnxruntime requested" if runner == "onnxruntime" else \
            "TensorRT is not installed here: running the shipped ONNX with ONNX Runtime instead"
        log(note)
        return OnnxRuntimeRunner(model_path, provider="auto", input_name=model["input"]["name"]), note
    if trt_version is None:
        raise RunnerError("--runner tensorrt: the tensorrt Python package is not importable here: install "
                          "TensorRT (JetPack ships it) or use --runner onnxruntime")
    engine = manifest["engine"]
    shipped = engine["file"]
    candidates = []
    if shipped and engine["tensorrt"] == trt_version:
        candidates.append((os.path.join(bundle_dir, shipped), "engine shipped in the bundle"))
    state = state_dir_of(bundle_dir, state_dir)
    built = os.path.join(state, ENGINE)
    stale = recorded_engine(state, built, trt_version, manifest_sha256) if os.path.lexists(built) else "absent"
    if stale is None:
        candidates.append((built, "engine built earlier on this device"))
    elif stale != "absent":
        log("not using {}: {}: rebuilding".format(built, stale))
    for path, origin in candidates:
        try:
            r = TensorRTRunner(path, model["input"]["name"], model["output"]["name"])
            log("TensorRT {}: using the {} ({})".format(trt_version, origin, os.path.basename(path)))
            return r, origin
        except EngineIncompatible:
            log("the {} does not load with TensorRT {} on this GPU: rebuilding".format(origin, trt_version))
    if shipped and engine["tensorrt"] != trt_version:
        log("the shipped engine was built with TensorRT {}, this device has {}: rebuilding".format(
            engine["tensorrt"], trt_version))
    os.makedirs(state, exist_ok=True)
    path = build_engine(bundle_dir, manifest, engine_path=built, timeout=build_timeout, log=log, state_dir=state)
    record_engine(state, path, trt_version, manifest_sha256)
    note = "engine built on this device with TensorRT {}".format(trt_version)
    log(note)
    return TensorRTRunner(path, model["input"]["name"], model["output"]["name"]), note


def describe(runner) -> Dict[str, Any]:
    return dict(getattr(runner, "description", {}))
