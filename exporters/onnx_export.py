"""PyTorch -> ONNX (opset >= 17, dynamic batch, input ``input``, output ``logits``), checked and compared."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from pwdeploy.fsutil import atomic_path

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int], *, opset: int = OPSET) -> Path:
    """Export ``model`` (eval mode, CPU copy) and run ``onnx.checker`` on the result."""
    path = Path(path)
    model = copy.deepcopy(model).cpu().eval()
    example = torch.randn(2, *input_shape)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # The TorchScript exporter is fast and handles pruned torchvision classifiers reliably...
            torch.onnx.export(model, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              opset_version=opset, dynamo=False)
        except Exception:  # noqa: BLE001 - any exporter failure: fall back to the torch.export-based one
            # ...but not every op (e.g. adaptive pooling to a size that does not divide the input).
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=({0: batch},), opset_version=max(opset, 18), dynamo=True)
            program.save(str(tmp), external_data=False)
        onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    return path


@torch.no_grad()
def onnx_parity(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int], *, batch: int = 4,
                seed: int = 0) -> float:
    """Max absolute difference between PyTorch and ONNX Runtime (CPU) logits on random inputs."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_shape, generator=generator)
    expected = copy.deepcopy(model).cpu().eval()(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    return float(np.abs(expected - actual).max())
