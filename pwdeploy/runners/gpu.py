"""Which CUDA GPU is here (name, compute capability), without importing torch just to ask."""

from __future__ import annotations

import shutil
import subprocess
import sys


def gpu_info() -> dict | None:
    """GPU 0 as ``{"name", "compute_capability"}``, or None when no CUDA GPU is visible.

    Uses torch when it is already imported, else nvidia-smi (absent on Jetson, where torch is the usual source).
    """
    torch = sys.modules.get("torch")
    if torch is None and shutil.which("nvidia-smi") is None:
        try:
            import torch  # noqa: F811 - last resort, e.g. on Jetson
        except ImportError:
            return None
    if torch is not None:
        if not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability(0)
        return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    try:
        out = subprocess.run([shutil.which("nvidia-smi"), "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip().splitlines()
    except (subprocess.SubprocessError, OSError):
        return None
    if not out:
        return None
    name, _, cap = out[0].partition(",")
    return {"name": name.strip(), "compute_capability": cap.strip()}
