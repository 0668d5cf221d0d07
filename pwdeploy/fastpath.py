"""The GPU training fast path: the settings users expect from a PyTorch training loop on CUDA.

- ``cudnn.benchmark``: cuDNN times its convolution algorithms once per input shape and keeps the fastest (the
  shapes of a training loop repeat; after pruning they are new, so each retraining benchmarks again);
- TF32 matmuls/convolutions on Ampere and later (``torch.set_float32_matmul_precision("high")``) for the fp32
  parts that autocast leaves in fp32;
- channels_last (NHWC) memory format for the model and its input batches: Tensor Core convolutions run in
  NHWC, so NCHW tensors would be transposed around every convolution;
- bf16/fp16 autocast (pwdeploy.precision: bf16 where the GPU has it, else fp16 with a gradient scaler), pinned
  host memory and non-blocking copies (pwdeploy.data.loading, pwdeploy.train.model_input) are set where the
  loaders and the loop are built.

On the CPU nothing changes: channels_last and autocast are slower than fp32 NCHW on most CPUs, and the
results this project measured there were taken without them.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def uses_fast_path(device: torch.device) -> bool:
    return torch.device(device).type == "cuda"


def configure_backends(device: torch.device) -> dict:
    """Switch the CUDA backends to their fast settings (process-wide, as every PyTorch script does); returns
    what was set (recorded by the caller where it matters)."""
    if not uses_fast_path(device):
        return {}
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    return {"cudnn_benchmark": True, "float32_matmul_precision": "high", "memory_format": "channels_last"}


def is_image_model(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


@contextlib.contextmanager
def channels_last(model: nn.Module, device: torch.device):
    """The model in channels_last while the block runs (on CUDA, for a model with 2-D convolutions), back in
    the default layout afterwards, so checkpoints, pruning and export see ordinary tensors."""
    active = uses_fast_path(device) and is_image_model(model)
    if active:
        model.to(memory_format=torch.channels_last)
    try:
        yield active
    finally:
        if active:
            model.to(memory_format=torch.contiguous_format)

