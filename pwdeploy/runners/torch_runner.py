"""PyTorch runner: a pwdeploy checkpoint (or an nn.Module) in eval mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Runner


class TorchRunner(Runner):
    kind = "torch"

    def __init__(self, model, *, device: str = "auto"):
        import torch

        if isinstance(model, (str, Path)):
            from ..models.checkpoint import load_model

            self.path = Path(model)
            model, _ = load_model(self.path)
        else:
            self.path = None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._torch = torch

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        return out.float().cpu().numpy()

    def describe(self) -> dict:
        return {"runner": self.kind, "torch_version": self._torch.__version__, "device": str(self.device)}
