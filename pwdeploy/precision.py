"""Mixed precision for training (``--precision``): autocast on CUDA, a sensible default per GPU.

Only the training loops (baseline training, retraining) run under autocast. Importance scores (Taylor
gradients, AutoBot gates) and the evaluations that become the reported per-group reference stay fp32:
the plan and the gate must not depend on rounding.
"""

from __future__ import annotations

import contextlib

import torch

from .config import CHOICES
from .errors import ConfigError

PRECISIONS = CHOICES["precision"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that support it (Ampere and later), fp16 on older GPUs, fp32 on the CPU."""
    if requested not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if device.type != "cuda":
        if requested in ("fp16", "bf16"):
            raise ConfigError(f"--precision {requested} needs a CUDA GPU (autocast on the CPU is slower than fp32 "
                              "on most CPUs): use --precision fp32 or auto")
        return "fp32"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support: "
                          "use --precision fp16 or auto")
    return requested


class Precision:
    """Autocast context and, for fp16, a gradient scaler; fp32 makes both no-ops."""

    def __init__(self, name: str, device: torch.device):
        self.name, self.device = name, device
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.name])

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """backward + optimizer step (scaled for fp16, skipping steps with inf/nan gradients)."""
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
