"""AutoBot-style importance: a trainable sigmoid bottleneck per output channel (Castells & Yeom 2021).

The model is frozen; one gate vector per DG group scales the channels of every layer in the group. Gates are
trained with the selected loss (PW or CE) plus a penalty pulling the gated MACs to the target; the learned
gate values are the channel importance, and channels are then removed to the exact MACs target.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch_pruning as tp
from torch import nn

from .. import distributed
from .engine import ChannelRemover

_BN_OUT = (tp.prune_batchnorm_out_channels,)
_LAYER_OUT = (tp.prune_conv_out_channels, tp.prune_linear_out_channels, tp.prune_depthwise_conv_out_channels)
_LAYER_IN = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)


class Bottlenecks:
    """Gates attached with forward hooks; ``soft_macs_ratio()`` is the differentiable MACs estimate."""

    def __init__(self, remover: ChannelRemover, init: float = 3.0):
        self.model = remover.model
        device = next(self.model.parameters()).device
        self.logits: dict[str, nn.Parameter] = {}
        self.hooks = []
        out_of: dict[nn.Module, str] = {}
        in_of: dict[nn.Module, str] = {}
        for name, group in remover.groups():
            size = len(group[0].idxs)
            self.logits[name] = nn.Parameter(torch.full((size,), init, device=device))
            bn_members = [d.target.module for d, _ in group if d.handler in _BN_OUT]
            gated = bn_members or [d.target.module for d, _ in group if d.handler in _LAYER_OUT]
            for module in gated:
                self.hooks.append(module.register_forward_hook(self._gate_hook(name)))
            for dep, _ in group:
                if dep.handler in _LAYER_OUT:
                    out_of[dep.target.module] = name
                elif dep.handler in _LAYER_IN:
                    in_of[dep.target.module] = name
        self.layer_macs = self._measure_layer_macs(remover.example_inputs)
        self.out_of, self.in_of = out_of, in_of

    def _gate_hook(self, name: str):
        def hook(_module, _inputs, output):
            gate = torch.sigmoid(self.logits[name])
            shape = (1, -1) + (1,) * (output.ndim - 2)
            return output * gate.view(shape)
        return hook

    @torch.no_grad()
    def _measure_layer_macs(self, example_inputs) -> dict[nn.Module, float]:
        macs: dict[nn.Module, float] = {}
        handles = []
        for module in self.model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                def hook(m, inp, out):
                    per_out = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1] \
                        if isinstance(m, nn.Conv2d) else m.in_features
                    macs[m] = float(out[0].numel() * per_out)
                handles.append(module.register_forward_hook(hook))
        was_training = self.model.training
        self.model.eval()
        self.model(example_inputs[:1])
        self.model.train(was_training)
        for h in handles:
            h.remove()
        return macs

    def soft_macs_ratio(self) -> torch.Tensor:
        total = sum(self.layer_macs.values())
        gated = 0.0
        for module, macs in self.layer_macs.items():
            g_out, g_in = self.out_of.get(module), self.in_of.get(module)
            factor = 1.0
            if g_out is not None:
                factor = factor * torch.sigmoid(self.logits[g_out]).mean()
            if g_in is not None and g_in != g_out:  # depthwise: in and out are the same channels
                factor = factor * torch.sigmoid(self.logits[g_in]).mean()
            gated = gated + macs * factor
        return gated / total

    def scores(self) -> dict[str, torch.Tensor]:
        return {name: torch.sigmoid(p.detach()) for name, p in self.logits.items()}

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def train_bottlenecks(remover: ChannelRemover, batches: Iterator, loss_fn, *, target: float, steps: int,
                      lr: float, flops_weight: float) -> dict[str, torch.Tensor]:
    """Train the gates (model frozen, BN in eval mode) and return their values as channel scores."""
    model = remover.model
    bottlenecks = Bottlenecks(remover)
    params = list(bottlenecks.logits.values())
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(params, lr=lr)
    model.eval()
    try:
        for _ in range(steps):
            x, y, g, original = next(batches)
            logits = model(x)
            penalty = (bottlenecks.soft_macs_ratio() - (1.0 - target)).abs()
            loss = loss_fn(logits, y, original, g) + flops_weight * penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.all_reduce_grads(params)  # under torchrun: the gates stay identical on every rank
            optimizer.step()
        return bottlenecks.scores()
    finally:
        bottlenecks.remove()
        for p in frozen:
            p.requires_grad_(True)
