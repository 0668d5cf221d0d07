"""The built-in importance criteria as registered classes: magnitude, Taylor (paper) and AutoBot.

A criterion gets the ChannelRemover (the DependencyGraph and the MACs target) and decides which channels go;
the loss (CE, PW, KD...) reaches it only through ``loss_fn``. A plug-in subclasses ``Importance`` and uses
``@register_importance("name")``; ``--method name`` then selects it.
"""

from __future__ import annotations

import torch_pruning as tp

from ..config import PruneSettings
from ..registry import register_importance
from .steps import _remove_until, _taylor
from .autobot import train_bottlenecks
from .engine import ChannelRemover, StaticScores


class Importance:
    """Base of a registered criterion: ``prune`` removes channels until ``target`` of the MACs are gone."""

    name = "importance"
    needs_data = True  # needs training batches and a loss
    needs_groups = False  # needs group labels in the training split
    # what pwdeploy.prune.budget plans for it: "iterative" (taylor_batches / steps_between / prune_steps),
    # "gates" (autobot_steps) or "none" (no data read, or a plug-in's own schedule)
    budget_kind = "none"

    @staticmethod
    def importance_cost(num_groups: int) -> float:
        """Sample passes (forward + backward) one importance sample costs."""
        return 1.0

    def __init__(self, settings: PruneSettings, num_groups: int = 2):
        self.config = settings
        self.num_groups = num_groups  # group ids in the batches are 0 .. num_groups - 1

    def settings(self) -> dict:
        """The settings that change this criterion's result (recorded in report.json)."""
        return {}

    def prune(self, remover: ChannelRemover, batches, loss_fn, target: float, result, bar) -> None:
        raise NotImplementedError

    @staticmethod
    def remove_by_scores(remover: ChannelRemover, score_fn, target: float, result, bar, max_step: float = 0.1,
                         before_step=None, after_step=None) -> None:
        """Remove the lowest-scoring channels, step by step, to ``target``; ``score_fn(group, name)`` gives a
        DG group's per-channel scores (higher = keep) and is asked again before every step."""
        _remove_until(remover, score_fn, target, max_step, result, bar, before_step=before_step,
                      after_step=after_step)


@register_importance("magnitude")
class MagnitudeImportance(Importance):
    """L2 norm of each channel's weights (data-free; the loss does not reach it)."""

    needs_data = False

    def settings(self) -> dict:
        return {"p": 2}

    def prune(self, remover, batches, loss_fn, target, result, bar) -> None:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
        self.remove_by_scores(remover, lambda g, n: importance(g), target, result, bar)


@register_importance("taylor")
class TaylorImportance(Importance):
    """First-order Taylor |w·dL/dw| under the selected loss, with optimizer steps between pruning steps."""

    budget_kind = "iterative"

    def settings(self) -> dict:
        c = self.config
        return {"taylor_batches": c.taylor_batches, "steps_between": c.steps_between, "taylor_lr": c.taylor_lr,
                "prune_steps": c.prune_steps}

    def prune(self, remover, batches, loss_fn, target, result, bar) -> None:
        _taylor(remover, batches, loss_fn, target, self.config, result, bar)


@register_importance("autobot")
class AutoBotImportance(Importance):
    """AutoBot: trained sigmoid bottlenecks per channel under the selected loss plus a MACs penalty."""

    budget_kind = "gates"

    def settings(self) -> dict:
        c = self.config
        return {"autobot_steps": c.autobot_steps, "autobot_lr": c.autobot_lr,
                "autobot_flops_weight": c.autobot_flops_weight}

    def prune(self, remover, batches, loss_fn, target, result, bar) -> None:
        c = self.config
        scores = train_bottlenecks(remover, batches, loss_fn, target=target, steps=c.autobot_steps,
                                   lr=c.autobot_lr, flops_weight=c.autobot_flops_weight)
        self.remove_by_scores(remover, StaticScores(scores), target, result, bar, max_step=1.0)
