"""Fairness as the stopping rule (pwdeploy extension): prune in rounds along one trajectory and never keep a round
that takes any validation group more than ``max_group_drop`` points below the original.

Pure logic over callbacks, so it is tested without training: ``prune_round(r)`` prunes the model in place to a
cumulative reduction ``r`` of the original's MACs (torch-pruning removes channels physically, so a round is
undone by restoring a deep copy taken before it), ``adapt()`` runs after each round (gradual retraining), and
``score()`` returns the validation metrics the bound is checked on: of the model after its adaptation steps
(``--max-group-drop``), or of a retrained copy (``--flops-reduction auto``, where ``candidate()`` makes it).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

from torch import nn


def geometric_targets(target: float, rounds: int) -> list[float]:
    """``rounds`` cumulative reductions ending at ``target``, each removing the same share of what is left."""
    keep = (1.0 - target) ** (1.0 / rounds)
    return [1.0 - keep ** (i + 1) for i in range(rounds - 1)] + [target]


def even_targets(target: float, round_size: float) -> list[float]:
    """Cumulative reductions of at most ``round_size`` of the original MACs each, ending at ``target``."""
    out, r = [], 0.0
    while target - r > 1e-9:
        r = min(target, r + round_size)
        out.append(round(r, 6))
    return out


def group_drops(reference: dict, metrics: dict) -> dict[str, float]:
    """Points each group lost against ``reference`` (positive = worse); groups absent from either are skipped."""
    out = {}
    for name, entry in metrics["groups"].items():
        ref = reference["groups"].get(name, {}).get("accuracy")
        acc = entry.get("accuracy")
        if ref is not None and acc is not None:
            out[name] = float(ref) - float(acc)
    return out


@dataclasses.dataclass
class RoundRecord:
    target_reduction: float
    reduction: float  # measured after the round
    worst_group: str | None
    worst_group_accuracy: float | None
    worst_drop: float
    drops: dict
    within_bound: bool
    kept: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Trajectory:
    """What the rule did, as report.json records it (``stopping``)."""

    rule: str
    max_group_drop: float | None
    target: float
    rounds: list = dataclasses.field(default_factory=list)
    reached: float = 0.0  # reduction of the model that ships
    stopped_early: bool = False
    met: bool = True  # False: not even the first round kept every group within the bound (auto)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["rounds"] = [r.to_dict() for r in self.rounds]
        return out


def _worst(metrics: dict, drops: dict) -> tuple[str | None, float | None]:
    if not drops:
        return None, None
    name = max(drops, key=drops.get)
    return name, metrics["groups"][name].get("accuracy")


def _record(target: float, reduction: float, metrics: dict, reference: dict, bound: float | None) -> RoundRecord:
    drops = group_drops(reference, metrics)
    worst = max(drops.values()) if drops else 0.0
    name, acc = _worst(metrics, drops)
    ok = bound is None or worst <= bound
    return RoundRecord(target, reduction, name, acc, worst, drops, ok, ok)


def restore(model: nn.Module, snapshot: nn.Module) -> None:
    """Put ``snapshot``'s modules and weights back into ``model`` (same object: callers' references stay valid)."""
    model.__dict__.update(snapshot.__dict__)


def guarded_prune(model: nn.Module, targets: list[float], *, prune_round: Callable[[float], float],
                  score: Callable[[], dict], reference: dict, max_group_drop: float | None,
                  adapt: Callable[[], None] | None = None, rule: str = "max-group-drop") -> Trajectory:
    """Prune ``model`` in place round by round; a round whose ``score()`` breaks the bound is undone and the
    pruning stops there. ``prune_round(r)`` returns the reduction it reached."""
    trajectory = Trajectory(rule, max_group_drop, targets[-1] if targets else 0.0)
    for target in targets:
        snapshot = copy.deepcopy(model) if max_group_drop is not None else None
        reached = prune_round(target)
        if adapt is not None:
            adapt()
        record = _record(target, reached, score(), reference, max_group_drop)
        trajectory.rounds.append(record)
        if not record.within_bound:
            record.kept = False
            restore(model, snapshot)
            trajectory.stopped_early = True
            break
        trajectory.reached = reached
    return trajectory


def auto_reduction(model: nn.Module, targets: list[float], *, prune_round: Callable[[float], float],
                   candidate: Callable[[nn.Module], nn.Module], score: Callable[[nn.Module], dict],
                   reference: dict, max_group_drop: float) -> tuple[Trajectory, nn.Module | None]:
    """``--flops-reduction auto``: along one trajectory, retrain a copy at each tried reduction; the largest
    whose retrained copy keeps every validation group within the bound ships. Stops at the first that fails.
    Returns (record, the chosen retrained model; the least-pruned one when none passes, marked ``met: False``)."""
    trajectory = Trajectory("flops-reduction auto", max_group_drop, targets[-1] if targets else 0.0)
    chosen, first = None, None
    for target in targets:
        reached = prune_round(target)
        trained = candidate(model)
        record = _record(target, reached, score(trained), reference, max_group_drop)
        trajectory.rounds.append(record)
        first = first or (trained, reached)
        if not record.within_bound:
            record.kept = False
            trajectory.stopped_early = target != targets[-1]
            break
        chosen, trajectory.reached = trained, reached
    if chosen is None and first is not None:
        trajectory.met, (chosen, trajectory.reached) = False, first
    return trajectory, chosen
