"""Structured pruning to a MACs target with a registered importance criterion (magnitude, Taylor, AutoBot,
FairGRAPE, or a plug-in: ``pwdeploy.registry.register_importance``).

The PW loss plugs into the data-driven methods only through ``loss_fn``: it changes the gradients (Taylor)
or the gate training signal (AutoBot), never the graph code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from ..config import PruneSettings
from ..progress import task
from ..registry import IMPORTANCES, list_importances, register_importance
from .criteria import Importance  # the plug-in base class
from .engine import ChannelRemover
from .flops import count_macs_params
from .steps import _remove_until, _taylor  # noqa: F401  (the shared loop; its old home, for callers)

METHODS = tuple(list_importances())  # the built-ins; list_importances() also has plug-ins registered later


@dataclass
class PruneResult:
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    steps: list = field(default_factory=list)
    importance: dict = field(default_factory=dict)  # {"name", "settings"} of the criterion used
    widths: dict = field(default_factory=dict)  # channels per group the floors were relative to (unpruned)

    @property
    def reduction(self) -> float:
        return 1.0 - self.macs_after / self.macs_before


def prune_to_flops(model: nn.Module, example_inputs: torch.Tensor, *, method: str, flops_reduction: float,
                   batches: Iterator | None = None, loss_fn=None, settings: PruneSettings | None = None,
                   num_groups: int = 2, cost=None, allocation=None, strict_rounding: bool = True,
                   widths: dict | None = None) -> PruneResult:
    """Physically remove channels from ``model`` (in place) until ``flops_reduction`` of its MACs are gone.

    ``batches`` yields (x, y, group, original_logits) on the model's device; needed by every data-driven
    criterion. ``num_groups``: how many group ids the batches carry (group-aware criteria).
    ``cost``: what ``flops_reduction`` is a fraction of (model -> float); MACs by default, a latency estimate
    for a latency target (pwdeploy.latency). ``allocation``: reweights scores before the global ranking
    (pwdeploy.prune.allocation). ``strict_rounding``: every pruned group keeps a multiple of
    ``settings.round_to``; else narrow groups use smaller multiples (pwdeploy.prune.alignment.group_multiple).
    ``widths``: the unpruned model's channels per group, when ``model`` was pruned before (an earlier
    round's ``PruneResult.widths``): the per-layer floor (``settings.max_layer_reduction``) stays relative to it.
    """
    settings = settings or PruneSettings(method=method, flops_reduction=flops_reduction)
    if method not in IMPORTANCES.names():
        raise ValueError(f"unknown pruning method {method!r}")
    criterion = IMPORTANCES.get(method)(settings, num_groups=num_groups)
    if criterion.needs_data and (batches is None or loss_fn is None):
        raise ValueError(f"{method} pruning needs training batches and a loss")
    remover = ChannelRemover(model, example_inputs, max_layer_reduction=settings.max_layer_reduction,
                             round_to=settings.round_to or 1, strict_rounding=strict_rounding, cost=cost,
                             allocation=allocation, widths=widths)
    result = PruneResult(remover.base_macs, remover.base_macs, remover.base_params, remover.base_params,
                         importance={"name": method, "settings": criterion.settings()},
                         widths=dict(remover.initial_channels))
    if flops_reduction <= 0:
        return result
    with task(f"pruning ({method})", total=100) as bar:
        criterion.prune(remover, batches, loss_fn, flops_reduction, result, bar)
    result.macs_after, result.params_after = count_macs_params(model, example_inputs)
    return result


__all__ = ["METHODS", "Importance", "PruneResult", "count_macs_params", "list_importances", "prune_to_flops",
           "register_importance"]
