"""TensorRT engines: built here through Polygraphy where TensorRT and a CUDA GPU exist, else a build script.

Engines are tied to the GPU and TensorRT version they are built with, so the honest default for an edge
target is ``build_engine.sh``: the exact ``trtexec`` command to run on the device. TensorRT 10 still needs the
precision flags (``--fp16`` / ``--int8``); TensorRT 11 dropped them (networks are strongly typed and the
precision comes from the ONNX: ``model.fp16.onnx``, or the Q/DQ ``model.int8.onnx``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pwdeploy.fsutil import atomic_path, write_text
from pwdeploy.runners.gpu import gpu_info

BUILD_SCRIPT = "build_engine.sh"
# Batch optimisation profile: min / opt / max batch of the engine's input.
PROFILE_BATCHES = (1, 8, 32)


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


def builder_flags(precision: str, major: int) -> list[str]:
    """trtexec precision flags: needed up to TensorRT 10, gone in 11 (strongly typed networks)."""
    if major >= 11 or precision == "fp32":
        return []
    return [f"--{precision}"]


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
    """Write ``build_engine.sh``: the trtexec command that builds ``model.plan`` on the target device."""
    lo, opt, hi = batches
    dims = "x".join(str(d) for d in input_shape)
    legacy_flag = " ".join(builder_flags(precision, 10))
    script = f"""#!/usr/bin/env bash
# Build the TensorRT engine of this run ON THE TARGET DEVICE (an engine only runs on the GPU model and
# TensorRT version it was built with). Written by pwdeploy: target trt-{precision}, built from {onnx_name},
# the artifact pwdeploy verified per group on the build machine.
#   bash build_engine.sh            # extra trtexec options may follow, e.g. --memPoolSize=workspace:1024M
set -euo pipefail
cd "$(dirname "$0")"

TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "trtexec not found: install TensorRT (JetPack ships /usr/src/tensorrt/bin/trtexec) or set TRTEXEC" >&2
  exit 2
fi

# TensorRT major version: TRT_MAJOR overrides, else the Python module, else trtexec's banner
# ("[TensorRT v100300]" is 10.3.0, "v8601" is 8.6.1).
if [ -z "${{TRT_MAJOR:-}}" ]; then
  TRT_MAJOR="$(python3 -c 'import tensorrt; print(tensorrt.__version__.split(".")[0])' 2>/dev/null || true)"
fi
if [ -z "${{TRT_MAJOR:-}}" ]; then
  v="$("$TRTEXEC" --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n1 | tr -dc '0-9' || true)"
  if [ -n "$v" ]; then
    if [ "$v" -ge 100000 ]; then TRT_MAJOR=$((v / 10000)); else TRT_MAJOR=$((v / 1000)); fi
  fi
fi
if [ -z "${{TRT_MAJOR:-}}" ]; then
  echo "could not tell the TensorRT version: assuming 10; set TRT_MAJOR=11 (or 8, 10) to override" >&2
  TRT_MAJOR=10
fi

if [ "$TRT_MAJOR" -ge 11 ]; then
  PRECISION_FLAGS=""   # TensorRT 11+: strongly typed; the precision is the ONNX's own ({onnx_name})
else
  PRECISION_FLAGS="{legacy_flag}"   # TensorRT 8-10: the builder needs the precision flag
fi

# shellcheck disable=SC2086
"$TRTEXEC" --onnx={onnx_name} --saveEngine=model.plan \\
  --minShapes={input_name}:{lo}x{dims} --optShapes={input_name}:{opt}x{dims} --maxShapes={input_name}:{hi}x{dims} \\
  $PRECISION_FLAGS "$@"
echo "built model.plan (TensorRT $TRT_MAJOR); check it per group: pwdeploy verify model.plan --reference ."
"""
    path = Path(run_dir) / BUILD_SCRIPT
    write_text(path, script)
    path.chmod(0o755)
    return path
