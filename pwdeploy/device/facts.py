"""What this device is and runs, read from the device itself, and what a bundle needs of it.

The board (/proc/device-tree/model), L4T (/etc/nv_tegra_release), the GPU and driver of a discrete card
(/proc/driver/nvidia), CUDA (/usr/local/cuda/version.json), cuDNN (cudnn_version.h), TensorRT, ONNX Runtime
(with its execution providers, when ``import_runtimes``), Python and the OS. Recorded in every verification
result and shown by `pwdeploy status`; ``requirement_problem`` refuses a bundle that needs what the device
lacks before anything is built or run.

Standard library only, Python 3.8 compatible: the trust anchor carries this module (for ``status``), so by
default it imports no runtime and reads package versions from their metadata.
"""

from __future__ import annotations

import glob
import os
import platform
import re
from typing import Any, Dict, List, Optional, Tuple

from ..errors import PwdeployError

try:
    from importlib import metadata as _metadata
except ImportError:  # pragma: no cover - Python < 3.8
    _metadata = None  # type: ignore[assignment]

TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")
MIN_TENSORRT = {"int8": (8, 0)}  # explicit Q/DQ INT8 networks need TensorRT 8+
# L4T release -> JetPack (the pairs NVIDIA publishes; unknown ones are reported as L4T only)
JETPACK = {"32.7": "4.6", "35.3": "5.1.1", "35.4": "5.1.2", "35.5": "5.1.3", "35.6": "5.1.4", "36.3": "6.0",
           "36.4": "6.1/6.2", "38.2": "7.0"}


def _read(path: str, limit: int = 1 << 16) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _version_of(*names: str) -> Optional[str]:
    for name in names:
        try:
            return _metadata.version(name) if _metadata else None
        except Exception:  # PackageNotFoundError, or broken metadata
            continue
    return None


def l4t_release(text: Optional[str]) -> Optional[str]:
    """'# R35 (release), REVISION: 4.1, ...' -> '35.4.1'."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)", text or "")
    return "{}.{}".format(match.group(1), match.group(2)) if match else None


def _gpu() -> Optional[Dict[str, Any]]:
    """A discrete NVIDIA GPU's model and driver, from the driver's /proc files (no nvidia-smi needed)."""
    infos = sorted(glob.glob("/proc/driver/nvidia/gpus/*/information"))
    driver = _read("/proc/driver/nvidia/version")
    if not infos and not driver:
        return None
    models = []  # type: List[str]
    for path in infos:
        match = re.search(r"^Model:\s*(.+)$", _read(path) or "", re.M)
        if match:
            models.append(match.group(1).strip())
    version = re.search(r"Kernel Module\s+([0-9.]+)", driver or "")
    return {"models": models, "driver": version.group(1) if version else None}


def _cuda() -> Optional[str]:
    text = _read("/usr/local/cuda/version.json")
    match = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([^"]+)"', text or "")
    if match:
        return match.group(1)
    match = re.search(r"CUDA Version\s+([0-9.]+)", _read("/usr/local/cuda/version.txt") or "")
    return match.group(1) if match else _version_of("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime")


def _cudnn() -> Optional[str]:
    for path in ("/usr/include/cudnn_version.h", "/usr/include/aarch64-linux-gnu/cudnn_version_v9.h",
                 "/usr/include/x86_64-linux-gnu/cudnn_version_v9.h", "/usr/local/cuda/include/cudnn_version.h"):
        text = _read(path)
        parts = [re.search(r"#define CUDNN_{}\s+(\d+)".format(k), text or "") for k in ("MAJOR", "MINOR", "PATCHLEVEL")]
        if all(parts):
            return ".".join(p.group(1) for p in parts)  # type: ignore[union-attr]
    return _version_of("nvidia-cudnn-cu12", "nvidia-cudnn-cu13")


def _runtimes(import_runtimes: bool) -> Dict[str, Any]:
    out = {"tensorrt": _version_of("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs"),
           "onnxruntime": _version_of("onnxruntime", "onnxruntime-gpu"), "onnxruntime_providers": None,
           "trtexec": next((p for p in TRTEXEC_PATHS if os.access(p, os.X_OK)), None)}
    if not import_runtimes:
        return out
    try:
        import onnxruntime

        out["onnxruntime"] = str(onnxruntime.__version__)
        out["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except Exception:  # ImportError, or a broken install
        pass
    try:
        import tensorrt

        out["tensorrt"] = str(getattr(tensorrt, "__version__", out["tensorrt"]))
    except Exception:
        pass
    return out


def collect(import_runtimes: bool = False) -> Dict[str, Any]:
    """Everything this module can read about the device (None where it has no such thing)."""
    l4t = l4t_release(_read("/etc/nv_tegra_release"))
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', _read("/etc/os-release") or "", re.M)
    return dict({"model": _read("/proc/device-tree/model") or None, "l4t": l4t,
                 "jetpack": JETPACK.get(".".join(l4t.split(".")[:2])) if l4t else None,
                 "gpu": _gpu(), "cuda": _cuda(), "cudnn": _cudnn(), "machine": platform.machine(),
                 "os": pretty.group(1) if pretty else platform.system(), "python": platform.python_version(),
                 "hostname": platform.node()}, **_runtimes(import_runtimes))


def describe(facts: Dict[str, Any]) -> str:
    """One short name for tables: the Jetson's model, else the GPU, else the CPU architecture."""
    gpu = facts.get("gpu") or {}
    name = facts.get("model") or (gpu.get("models") or [None])[0] or facts.get("machine") or "?"
    extra = ["L4T " + facts["l4t"]] if facts.get("l4t") else []
    extra += ["TRT " + facts["tensorrt"]] if facts.get("tensorrt") else []
    return "{}{}".format(name, " ({})".format(", ".join(extra)) if extra else "")


def _version_tuple(text: Optional[str]) -> Tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text or "")[:3])


def refuse_if_lacking(manifest: Dict[str, Any], facts: Dict[str, Any], runner: str) -> None:
    """Raise (one line, exit 2) when ``requirement_problem`` finds something the device lacks."""
    problem = requirement_problem(manifest, facts, runner)
    if problem:
        raise PwdeployError("{}: refused before building or running anything".format(problem))


def requirement_problem(manifest: Dict[str, Any], facts: Dict[str, Any], runner: str) -> Optional[str]:
    """Why this device cannot run ``manifest``'s model with ``runner`` (None: it can). One line naming the fix."""
    trt = facts.get("tensorrt")
    wants_trt = runner == "tensorrt" or (runner == "auto" and trt is not None)
    if not wants_trt:
        return None
    if trt is None:
        return ("the bundle is to run on TensorRT but this device has none: install TensorRT (JetPack ships it) "
                "or verify with --runner onnxruntime")
    need = MIN_TENSORRT.get(manifest["precision"])
    if need and _version_tuple(trt)[:2] < need:
        return ("{} needs TensorRT {}.{} or newer; this device has {}: upgrade JetPack, or ship an fp16 bundle"
                .format(manifest["target"], need[0], need[1], trt))
    engine = manifest["engine"]
    if engine.get("file") and engine.get("tensorrt") and engine["tensorrt"] != trt and not facts.get("trtexec") \
            and not os.environ.get("TRTEXEC"):
        return ("the bundle's engine was built with TensorRT {} but this device has {}, and no trtexec to build "
                "one here: install TensorRT's tools (sudo apt install tensorrt) or package without --engine-for"
                .format(engine["tensorrt"], trt))
    return None
