"""TensorRT engines: built here through Polygraphy where TensorRT and a CUDA GPU exist, else a build script.

Engines are tied to the GPU and TensorRT version they are built with, so the honest default for an edge
target is ``build_engine.sh`` (rendered from ``pwdeploy/device/build_engine.py``, the script bundles ship): the
``trtexec`` command to run on the device. TensorRT 10 still needs the precision flags (``--fp16`` / ``--int8``);
TensorRT 11 dropped them (networks are strongly typed and the precision comes from the ONNX: ``model.fp16.onnx``,
or the Q/DQ ``model.int8.onnx``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pwdeploy import __version__
from pwdeploy.device.build_engine import render_script
from pwdeploy.fsutil import atomic_path, write_text
from pwdeploy.runners.gpu import gpu_info
from pwdeploy.targets import ENGINE_BATCHES

BUILD_SCRIPT = "build_engine.sh"
# Batch optimisation profile: min / opt / max batch of the engine's input.
PROFILE_BATCHES = ENGINE_BATCHES  # owned by the targets registry


def tensorrt_status() -> dict:
    """Whether an engine can be built here: ``{"available": bool, "reason": str, "tensorrt_version": ...}``."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        return {"available": False, "reason": f"the tensorrt Python module is not importable here ({exc})",
                "tensorrt_version": None}
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        return {"available": False, "reason": "polygraphy is not installed (pip install polygraphy)",
                "tensorrt_version": trt.__version__}
    gpu = gpu_info()
    if gpu is None:
        return {"available": False, "reason": "no CUDA GPU is visible here", "tensorrt_version": trt.__version__}
    return {"available": True, "reason": "", "tensorrt_version": trt.__version__, "gpu": gpu}


def tensorrt_major(version: str) -> int:
    return int(str(version).split(".")[0])


def build_engine(onnx_path: str | os.PathLike, plan_path: str | os.PathLike, *, precision: str, input_name: str,
                 input_shape: tuple, batches: tuple = PROFILE_BATCHES) -> dict:
    """Build ``plan_path`` from ``onnx_path`` with Polygraphy's TensorRT backend and a batch profile."""
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    major = tensorrt_major(trt.__version__)
    lo, opt, hi = batches
    profile = Profile().add(input_name, min=(lo, *input_shape), opt=(opt, *input_shape), max=(hi, *input_shape))
    # TensorRT <= 10: weakly typed builder, precision enabled by flags; 11: types come from the ONNX.
    flags = {}
    if major < 11:
        flags = {"fp16": precision == "fp16", "int8": precision == "int8"}
    config = CreateConfig(profiles=[profile], **flags)
    engine = EngineBytesFromNetwork(NetworkFromOnnxPath(str(onnx_path)), config=config)()
    with atomic_path(plan_path) as tmp:
        tmp.write_bytes(bytes(engine))
    return {
        "built": True,
        "tool": "polygraphy.backend.trt",
        "from": Path(onnx_path).name,
        "precision": precision,
        "tensorrt_version": trt.__version__,
        "builder_flags": sorted(k for k, v in flags.items() if v),
        "profile": {"input": input_name, "min": [lo, *input_shape], "opt": [opt, *input_shape],
                    "max": [hi, *input_shape]},
        "gpu": gpu_info(),
    }


def write_build_script(run_dir: str | os.PathLike, *, onnx_name: str, precision: str, input_name: str,
                       input_shape: tuple, batches: tuple = PROFILE_BATCHES) -> Path:
    """Write ``build_engine.sh`` beside ``onnx_name``: the same script a bundle ships (TensorRT 10 and 11 command
    lines, timing cache, engine renamed into place only when the build succeeds)."""
    run_dir = Path(run_dir)
    lo, opt, hi = batches
    script = render_script(bundle_id=re.sub(r"[^A-Za-z0-9._-]", "_", run_dir.name), version=__version__,
                           model_file=onnx_name, precision=precision, input_name=input_name,
                           input_shape=[-1, *input_shape], min_batch=lo, opt_batch=opt, max_batch=hi)
    path = run_dir / BUILD_SCRIPT
    write_text(path, script)
    path.chmod(0o755)
    return path
