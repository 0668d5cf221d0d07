"""Structured pruning to a MACs target with a registered importance criterion (magnitude, Taylor, AutoBot,
FairGRAPE, or a plug-in: ``pwdeploy.registry.register_importance``).

The PW loss plugs into the data-driven methods only through ``loss_fn``: it changes the gradients (Taylor)
or the gate training signal (AutoBot), never the graph code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch_pruning as tp
from torch import nn

from .. import distributed
from ..config import PruneSettings
from ..progress import task
from ..registry import IMPORTANCES, list_importances, register_importance
from .engine import ChannelRemover
from .flops import count_macs_params

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


def _remove_until(remover: ChannelRemover, score_fn, target: float, max_step: float, result: PruneResult, bar,
                  before_step=None, after_step=None) -> None:
    """Repeat pruning steps until the target is reached; hooks run before/after each step (Taylor)."""
    score_fn = distributed.agreed(score_fn)  # under torchrun: every rank plans from rank 0's averaged scores
    while True:
        if before_step is not None:
            before_step()
        step = remover.remove_step(score_fn, target, max_step)
        if step is None:
            break
        done_before = result.steps[-1].reduction if result.steps else 0.0
        result.steps.append(step)
        bar.advance(int(100 * step.reduction / target) - int(100 * done_before / target))
        bar.describe(f"{100 * step.reduction:.1f}% MACs removed")
        if step.reduction >= target:
            break
        if after_step is not None:
            after_step()


def _taylor(remover: ChannelRemover, batches, loss_fn, target, settings, result, bar, scores=None) -> None:
    """First-order Taylor importance (|w·dL/dw| per channel, Molchanov et al.) from the selected loss, with a
    few optimizer steps between pruning steps so the network adapts as channels go (as in the paper).

    ``scores`` replaces the importance: a callable (group, name) -> scores with ``accumulate()`` (FairGRAPE)."""
    model = remover.model
    importance = tp.importance.GroupTaylorImportance()

    def accumulate_gradients() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        for _ in range(settings.taylor_batches):
            x, y, g, original = next(batches)
            loss_fn(model(x), y, original, g).backward()
        distributed.all_reduce_grads(model.parameters())
        distributed.sync_buffers(model)

    def adapt() -> None:
        model.zero_grad(set_to_none=True)
        # Parameters change shape at every pruning step, so the optimizer is rebuilt each time.
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.taylor_lr, momentum=0.9)
        model.train()
        for _ in range(settings.steps_between):
            x, y, g, original = next(batches)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y, original, g).backward()
            distributed.all_reduce_grads(model.parameters())
            optimizer.step()
        distributed.sync_buffers(model)

    # settings.prune_steps (20; fewer on a small dataset: prune.budget) steps whatever the target.
    score_fn = scores if scores is not None else (lambda group, _name: importance(group))
    _remove_until(remover, score_fn, target, max(0.02, target / settings.prune_steps), result, bar,
                  before_step=scores.accumulate if scores is not None else accumulate_gradients, after_step=adapt)
    model.zero_grad(set_to_none=True)


from .criteria import Importance  # noqa: E402  (the plug-in base class; it builds on the loop above)

__all__ = ["METHODS", "Importance", "PruneResult", "count_macs_params", "list_importances", "prune_to_flops",
           "register_importance"]
