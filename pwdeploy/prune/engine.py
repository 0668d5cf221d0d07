"""Channel removal to a MACs target, on torch-pruning's DependencyGraph.

Importance criteria (magnitude, Taylor, AutoBot gates) only produce per-channel scores for each DG group;
this module ranks them globally, removes the lowest channels group by group through the DG (so residual
adds, BatchNorm and the classifier stay consistent) and stops when the measured MACs reduction reaches the
target. A step that overshoots the ±1 point band is rolled back and retried with fewer channels.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from ..models import classifier_layers
from .alignment import aligned_floor, group_multiple, round_removals
from .flops import count_macs_params

# Score function: (group, root module name) -> 1-D tensor of per-channel importance (higher = keep).
ScoreFn = Callable[[tp.Group, str], torch.Tensor]

TOLERANCE = 0.008  # stay inside the ±1 point band around the requested reduction


@dataclass
class PruneStep:
    removed_channels: int
    macs: int
    reduction: float


class ChannelRemover:
    """Holds the model and its DependencyGraph; removes channels chosen by a score function."""

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, *, max_layer_reduction: float = 0.95,
                 round_to: int = 1, strict_rounding: bool = True, cost: Callable[[nn.Module], float] | None = None,
                 allocation=None, widths: dict[str, int] | None = None):
        self.model = model
        self.example_inputs = example_inputs
        self.max_layer_reduction = max_layer_reduction
        self.round_to = max(1, int(round_to))
        self.strict_rounding = strict_rounding
        # (remover, scores) -> scores used for the global ranking (prune.allocation); None: raw scores
        self.allocation = allocation
        self.base_macs, self.base_params = count_macs_params(model, example_inputs)
        # What the target is a reduction of: MACs by default, or e.g. a latency estimate (latency.lut)
        self.cost = cost
        self.base_cost = float(self.base_macs) if cost is None else cost(model)
        self._build_graph()
        # Floors and multiples are relative to the unpruned widths, also when pruning comes in several rounds
        # (a latency target): each round's own widths would let every layer shrink to 5% of 5% of ...
        current = self._channel_counts()
        self.initial_channels = {name: (widths or {}).get(name, n) for name, n in current.items()}
        # per group: the multiple its kept channels stay at, and the fewest it may keep
        self.multiples = {name: group_multiple(n, self.round_to, strict_rounding)
                          for name, n in self.initial_channels.items()}
        self.floors = {name: aligned_floor(n, max_layer_reduction, self.multiples[name])
                       for name, n in self.initial_channels.items()}

    def _build_graph(self) -> None:
        self.ignored = classifier_layers(self.model)
        # The classifier is excluded only as a group root: its inputs must still follow pruned channels.
        self.graph = tp.DependencyGraph().build_dependency(self.model, example_inputs=self.example_inputs,
                                                           verbose=False)
        self.names = {m: n for n, m in self.model.named_modules()}

    def groups(self) -> list[tuple[str, tp.Group]]:
        """Prunable groups, each named by its root module (stable across pruning steps)."""
        out = []
        for group in self.graph.get_all_groups(ignored_layers=self.ignored):
            root = group[0].dep.target.module
            out.append((self.names[root], group))
        return out

    def _channel_counts(self) -> dict[str, int]:
        return {name: len(group[0].idxs) for name, group in self.groups()}

    @property
    def macs(self) -> int:
        return count_macs_params(self.model, self.example_inputs)[0]

    def reduction(self, macs: int | None = None) -> float:
        """Fraction of the cost (MACs unless a cost function was given) removed so far."""
        if self.cost is not None:
            return 1.0 - self.cost(self.model) / self.base_cost
        return 1.0 - (self.macs if macs is None else macs) / self.base_cost

    def plan(self, scores: dict[str, torch.Tensor], num_channels: int) -> dict[str, list[int]]:
        """Pick about ``num_channels`` lowest-scoring channels globally, leaving every group its floor and a
        multiple of ``round_to`` channels; within a group the lowest-scoring channels go."""
        candidates = []
        for name, score in scores.items():
            removable = len(score) - self.floors[name]
            if removable <= 0:
                continue
            candidates += [(float(s), name) for s in torch.sort(score).values[:removable]]
        candidates.sort(key=lambda c: c[0])
        wanted: dict[str, int] = {}
        for _, name in candidates[:num_channels]:
            wanted[name] = wanted.get(name, 0) + 1
        current = {name: len(scores[name]) for name in wanted}
        counts = round_removals(wanted, current, self.floors, self.multiples)
        return {name: sorted(int(i) for i in torch.argsort(scores[name])[:k]) for name, k in counts.items()}

    def apply(self, plan: dict[str, list[int]]) -> int:
        removed = 0
        for name, group in self.groups():
            idxs = plan.get(name)
            if not idxs:
                continue
            root = group[0].dep.target.module
            pruning_group = self.graph.get_pruning_group(root, group[0].dep.handler, sorted(idxs))
            if self.graph.check_pruning_group(pruning_group):
                pruning_group.prune()
                removed += len(idxs)
        return removed

    def total_channels(self) -> int:
        return sum(self._channel_counts().values())

    def remove_step(self, score_fn: ScoreFn, target: float, max_step: float) -> PruneStep | None:
        """One pruning step towards ``target`` reduction, removing at most ~``max_step`` of the MACs.

        Returns None when nothing more can be removed.
        """
        current = self.reduction()
        gap = min(target - current, max_step)
        if gap <= 0:
            return None
        scores = {name: score_fn(group, name).detach().float().cpu() for name, group in self.groups()}
        if self.allocation is not None:
            scores = self.allocation(self, scores)
        # Removing a fraction f of all channels removes about 2f of the MACs (in and out sides).
        remaining = self.total_channels()
        num = max(1, int(remaining * gap / (2 * (1 - current))))
        # Snapshots (for rollback) only near the target: far from it an overshoot of the step is harmless.
        near_target = target - current <= 2.5 * gap
        too_coarse: set[str] = set()  # groups where even one channel overshoots the band (e.g. residual streams)
        fallback = None  # (reduction, plan) of the smallest overshoot, if no single channel fits the band
        first_num = num
        while True:
            plan = self.plan({n: s for n, s in scores.items() if n not in too_coarse}, num)
            if not plan and self._relax_rounding():  # no aligned step lands in the band: try single channels
                too_coarse, num, fallback = set(), first_num, None
                continue
            if not plan:
                break
            snapshot = copy.deepcopy(self.model) if near_target else None
            removed = self.apply(plan)
            if removed == 0:
                break
            macs = self.macs
            reduction = self.reduction(macs)
            if reduction <= target + TOLERANCE or snapshot is None:
                _notify_removed(score_fn, plan)
                return PruneStep(removed, macs, reduction)
            self._restore(snapshot)  # overshot the band: undo, then take fewer or cheaper channels
            if num > 1:
                num //= 2
            else:
                too_coarse |= set(plan)
                if fallback is None or reduction < fallback[0]:
                    fallback = (reduction, plan)
        # No single channel fits the band: take the smallest overshoot only if it lands closer to the target.
        if fallback is not None and fallback[0] - target < target - current:
            removed = self.apply(fallback[1])
            _notify_removed(score_fn, fallback[1])
            macs = self.macs
            return PruneStep(removed, macs, self.reduction(macs))
        return None

    def _relax_rounding(self) -> bool:
        """A target's default rounding (not an explicit --round-to) gives way to the ±1 point band: when no
        aligned step lands in it, the last steps remove single channels. True if there was rounding to relax."""
        if self.strict_rounding or all(m == 1 for m in self.multiples.values()):
            return False
        self.multiples = {name: 1 for name in self.multiples}
        self.floors = {name: aligned_floor(n, self.max_layer_reduction, 1) for name, n in self.initial_channels.items()}
        return True

    def _restore(self, snapshot: nn.Module) -> None:
        # Swap the snapshot's state into the same object, so callers' references stay valid.
        self.model.__dict__.update(snapshot.__dict__)
        self._build_graph()


class StaticScores:
    """Scores computed once (AutoBot's gates), kept aligned with the channels that remain after each step."""

    def __init__(self, scores: dict[str, torch.Tensor]):
        self.scores = {name: score.detach().float().cpu() for name, score in scores.items()}

    def __call__(self, _group: tp.Group, name: str) -> torch.Tensor:
        return self.scores[name]

    def removed(self, plan: dict[str, list[int]]) -> None:
        for name, idxs in plan.items():
            keep = torch.ones(len(self.scores[name]), dtype=torch.bool)
            keep[idxs] = False
            self.scores[name] = self.scores[name][keep]


def _notify_removed(score_fn, plan: dict[str, list[int]]) -> None:
    if hasattr(score_fn, "removed"):
        score_fn.removed(plan)
