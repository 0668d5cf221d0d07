"""FairGRAPE at channel level: a group-aware Taylor criterion (an adaptation, not the original method).

FairGRAPE (Lin, Kim & Joo, "FairGRAPE: Fairness-aware GRAdient Pruning mEthod for Face Attribute
Classification", ECCV 2022; code github.com/Bernardo1998/FairGRAPE) scores every weight per protected group
and, layer by layer, keeps weights greedily: the next weight kept is the most important remaining one of the
group whose share of the layer's kept importance lags its share in the unpruned layer the most. Pruning
single weights gives no speed-up, so here the unit is a channel of a DependencyGraph group (a "layer"):

- per-group importance: first-order Taylor |w·dL_k/dw| per channel, with L_k the selected loss on the batch's
  samples of group k (one forward pass, one backward pass per group present);
- target shares: each group's share of the DG group's total importance, measured on the unpruned model;
- keep order: FairGRAPE's greedy selection inside each DG group;
- how many channels each DG group keeps is left to the global ranking the other methods use: the DG group's
  own summed importances (normalised like Taylor's) are handed out in keep order, so the first channel kept
  gets the largest. The MACs target is then reached by the same engine (±1 point), with the same
  optimizer steps between pruning steps as Taylor.
"""

from __future__ import annotations

import torch
import torch_pruning as tp

from .. import distributed
from ..registry import register_importance
from .steps import _taylor
from .criteria import TaylorImportance


def greedy_keep_order(importance: torch.Tensor, target_share: torch.Tensor) -> list[int]:
    """FairGRAPE's greedy selection on one layer: channel indices in the order they are kept.

    ``importance`` is (channels, groups), ``target_share`` (groups,) sums to 1. Before anything is kept every
    group's share counts as 1/groups, as in the reference code.
    """
    channels, groups = importance.shape
    ranked = [torch.argsort(importance[:, k], descending=True, stable=True).tolist() for k in range(groups)]
    pointer = [0] * groups
    taken = torch.zeros(channels, dtype=torch.bool)
    kept_sum = torch.zeros(groups, dtype=torch.float64)
    target = target_share.double()
    order: list[int] = []
    while len(order) < channels:
        total = float(kept_sum.sum())
        share = kept_sum / total if total > 0 else torch.full((groups,), 1.0 / groups, dtype=torch.float64)
        k = int(torch.argmin(share - target))  # the group furthest below its share
        while taken[ranked[k][pointer[k]]]:
            pointer[k] += 1
        channel = ranked[k][pointer[k]]
        taken[channel] = True
        order.append(channel)
        kept_sum += importance[channel].double()
    return order


def scores_in_keep_order(importance: torch.Tensor, order: list[int]) -> torch.Tensor:
    """The layer's summed importances (mean-normalised, as Taylor's), largest to the first channel kept."""
    total = importance.sum(dim=1).float()
    total = total / total.mean().clamp_min(1e-12)
    scores = torch.empty_like(total)
    scores[torch.tensor(order, dtype=torch.long)] = torch.sort(total, descending=True).values
    return scores


class GroupTaylorScores:
    """Per-group Taylor importance for every DG group, turned into FairGRAPE keep-order scores."""

    def __init__(self, remover, batches, loss_fn, num_batches: int, num_groups: int):
        self.remover, self.batches, self.loss_fn = remover, batches, loss_fn
        self.num_batches, self.num_groups = num_batches, num_groups
        self.importance = tp.importance.GroupTaylorImportance(normalizer=None)  # raw: shares must compare
        self.target_share: dict[str, torch.Tensor] = {}
        self.scores: dict[str, torch.Tensor] = {}

    def per_group_importance(self) -> dict[str, torch.Tensor]:
        model = self.remover.model
        model.train()
        groups = self.remover.groups()
        totals = {name: torch.zeros(len(g[0].idxs), self.num_groups) for name, g in groups}
        for _ in range(self.num_batches):
            x, y, g, original = next(self.batches)
            logits = model(x)  # one forward pass: BatchNorm sees the whole batch
            present = torch.unique(g).tolist()
            for i, k in enumerate(present):
                mask = g == k
                model.zero_grad(set_to_none=True)
                loss = self.loss_fn(logits[mask], y[mask], None if original is None else original[mask], g[mask])
                loss.backward(retain_graph=i < len(present) - 1)
                for name, group in groups:
                    totals[name][:, int(k)] += self.importance(group).detach().float().cpu()
        model.zero_grad(set_to_none=True)
        for imp in totals.values():  # under torchrun: every rank ranks channels from the same per-group totals
            distributed.all_reduce_mean_(imp)
        distributed.sync_buffers(model)
        return totals

    def accumulate(self) -> None:
        self.scores = {}
        for name, imp in self.per_group_importance().items():
            if name not in self.target_share:  # first call: the unpruned model
                total = imp.sum()
                self.target_share[name] = imp.sum(dim=0) / total if total > 0 else \
                    torch.full((self.num_groups,), 1.0 / self.num_groups)
            self.scores[name] = scores_in_keep_order(imp, greedy_keep_order(imp, self.target_share[name]))

    def __call__(self, _group, name: str) -> torch.Tensor:
        return self.scores[name]


@register_importance("fairgrape")
class FairGrapeImportance(TaylorImportance):
    """FairGRAPE (Lin et al. ECCV 2022), channel-level adaptation: per-group Taylor, greedy keep per group share."""

    needs_groups = True

    @staticmethod
    def importance_cost(num_groups: int) -> float:
        """One forward pass and one backward pass per group present (a backward ~ two forwards)."""
        return (1 + 2 * max(1, num_groups)) / 3

    def prune(self, remover, batches, loss_fn, target, result, bar) -> None:
        scores = GroupTaylorScores(remover, batches, loss_fn, self.config.taylor_batches, self.num_groups)
        _taylor(remover, batches, loss_fn, target, self.config, result, bar, scores=scores)
