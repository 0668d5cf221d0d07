"""MACs and parameter counts, measured on the (physically pruned) model itself."""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn


@torch.no_grad()
def count_macs_params(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    model.train(was_training)
    return int(macs), int(params)
