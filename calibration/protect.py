"""Group-aware mixed precision: keep in float the layers whose quantization hurts the worst group.

Greedy, by measured harm: while some group is more than the INT8 tolerance below the fp32 model on the
validation split and the float-layer budget allows, rank the remaining layers by their harm to the group that
is worst now (sensitivity table), try the best few together with the layers already chosen, and keep the one
whose mixed model leaves the worst group best off (ties: the lower logit error of that group). The selection is
made on validation; `pwdeploy verify` then gates the result on test as for any INT8 model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .harm import rank_for_group, sensitivity

if TYPE_CHECKING:  # the probe loads ONNX Runtime's quantizer; the CLI reads this module's default at start-up
    from .probe import Int8Probe, Score

DEFAULT_MAX_FLOAT_LAYERS = 4
CANDIDATES_PER_STEP = 6  # layers tried jointly at each step (the rest are ranked out by the sensitivity table)


@dataclass
class Protection:
    float_layers: list
    passed: bool
    plain: Score  # every layer INT8
    chosen: Score  # the selected mixed model
    steps: list = field(default_factory=list)  # per step: layer added and the worst group's change
    budget: int = DEFAULT_MAX_FLOAT_LAYERS
    layers_total: int = 0
    table: dict | None = None

    def to_dict(self) -> dict:
        return {"float_layers": list(self.float_layers), "passed_on_validation": self.passed,
                "budget": self.budget, "layers_total": self.layers_total,
                "validation": {"plain_int8": self.plain.to_dict(), "mixed": self.chosen.to_dict()},
                "steps": self.steps, "selection": "greedy by measured harm to the worst group (" + __name__ + ")",
                "sensitivity": self.table}  # the leave-one-in-float table the ranking used (None: not needed)


def select_float_layers(probe: Int8Probe, *, budget: int = DEFAULT_MAX_FLOAT_LAYERS,
                        candidates: int = CANDIDATES_PER_STEP, on_step=None) -> Protection:
    """Greedy selection described in the module docstring. ``budget`` >= 0 float layers at most."""
    if budget < 0:
        raise ValueError("the float-layer budget must be >= 0")
    plain = probe.score(())
    result = Protection([], plain.passed, plain, plain, budget=budget, layers_total=len(probe.layers))
    if plain.passed or budget == 0 or not probe.layers:
        return result
    table = sensitivity(probe)
    result.table = table
    chosen, current = [], plain
    while not current.passed and len(chosen) < min(budget, len(probe.layers)):
        worst = current.worst_group
        ranked = [layer for layer in rank_for_group(table, worst) if layer not in chosen][:candidates]
        trials = [probe.score((*chosen, layer)) for layer in ranked]
        best = max(trials, key=lambda s: (s.worst_change, -(s.logit_error.get(s.worst_group) or 0.0)))
        chosen.append(ranked[trials.index(best)])
        current = best
        result.steps.append({"added": chosen[-1], "worst_group_before": worst, "worst_group": best.worst_group,
                             "worst_change": best.worst_change, "passed": best.passed, "tried": len(trials)})
        if on_step is not None:
            on_step(result.steps[-1])
        if _key(best) > _key(result.chosen):
            result.chosen, result.float_layers = best, list(chosen)
    result.passed = result.chosen.passed
    return result


def _key(score: Score) -> tuple:
    """Better: passing first, then the worst group's change, then fewer float layers."""
    return (score.passed, score.worst_change, -len(score.float_layers))
