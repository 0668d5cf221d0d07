"""How the channels to remove are spread over the layers.

``global``: one ranking of importance scores across all groups (the old behaviour). It tends to empty cheap
high-resolution layers first, which on a CPU or GPU are memory-bound: MACs fall, time does not.
``latency``: each group's scores are divided by the latency one of its channels costs on the deploy runtime
(from the per-layer-shape LUT, relative to the mean over groups), so channels that are unimportant *and* slow
go first (the ratio heuristic of latency-aware pruning, e.g. HALP, Shen et al. 2022).
``uniform``: every group loses the same fraction of its channels (its least important ones), as Torch-Pruning's
uniform pruners do: no layer is emptied while another stays wide, which kept the most of the removed MACs as
time on ONNX Runtime CPU (README "MACs vs latency").
"""

from __future__ import annotations

import torch
from torch import nn

from ..latency.lut import layer_keys, resize_key
from ..targets import Target, get_target


def _affected_layers(graph, group) -> list[tuple[nn.Module, str]]:
    """(module, 'out' | 'in') for every Conv2d / Linear whose channels this DG group changes."""
    out, seen = [], set()
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module not in seen:  # depthwise: in and out, once
            seen.add(module)
            out.append((module, "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"))
    return out


class LatencyAllocation:
    """Reweights a step's scores by each group's LUT latency saving per removed channel."""

    def __init__(self, cost):
        self.cost = cost  # a pwdeploy.latency.LatencyCost

    def __call__(self, remover, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        savings = self.savings(remover)
        positive = [s for s in savings.values() if s > 0]
        if not positive:
            return scores
        mean = sum(positive) / len(positive)
        floor = 0.05 * mean  # a group that saves (almost) nothing is still rankable, just last
        return {name: score / (max(savings.get(name, 0.0), floor) / mean) for name, score in scores.items()}

    def savings(self, remover) -> dict[str, float]:
        """ms saved per channel if ``round_to`` channels of each group went (at least one)."""
        lut = self.cost.lut
        keys = layer_keys(remover.model, self.cost.example_inputs, self.cost.batch)
        step = remover.round_to
        out = {}
        for name, group in remover.groups():
            saved = 0.0
            for module, side in _affected_layers(remover.graph, group):
                key = keys.get(remover.names[module])
                if key is None:
                    continue
                channels = int(key.split(":")[1].split("x")[0 if side == "in" else 1])
                if channels <= step:
                    continue
                fewer = resize_key(key, **{"cin" if side == "in" else "cout": channels - step})
                saved += lut.lookup(key) - lut.lookup(fewer)
            out[name] = saved / step
        lut.save()
        return out


def uniform_allocation(remover, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each channel's score becomes the share of its group's unpruned width that would be gone with it (lowest
    first), so the global ranking keeps every group at the same share removed whatever the step size and
    rounding did before; inside a group the importance order stays."""
    out = {}
    for name, score in scores.items():
        width = remover.initial_channels[name]
        ranks = torch.empty(len(score))
        ranks[torch.argsort(score)] = torch.arange(1, len(score) + 1, dtype=torch.float32)
        out[name] = (width - len(score) + ranks) / width
    return out


def resolve_allocation(name: str, target: Target | str, method: str) -> tuple[str, str]:
    """(allocation, why): ``--allocation`` as given, or for ``auto`` what the target declares for ``method``."""
    if name != "auto":
        return name, "--allocation"
    return (target if isinstance(target, Target) else get_target(target)).auto_allocation(method)


def make_allocation(name: str, cost=None):
    """The score reweighting for ``--allocation NAME`` (None: the plain global ranking)."""
    if name == "latency":
        return LatencyAllocation(cost)
    return uniform_allocation if name == "uniform" else None
