"""Prune to a latency target measured on the deploy runtime, landing within a tolerance of the request.

The LUT estimate steers the pruning (it is what each step's reduction is measured in); after each round the
real model is exported and timed against the original, and the next round's target is corrected with an
affine fit (measured = slope * estimate + overhead) through the nearest measurements: the LUT sums only
convolutions and GEMMs, each with the fixed cost of a one-layer run. The rounds approach the request from
above, half-way at a time while far from it; a round that lands below the band is undone and retried smaller.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..errors import ConfigError

LANDING_TOLERANCE = 0.05  # the measured latency lands within 5% of the request
NEAR = 0.25  # within 25% of the request, a line fit through the nearest measurements takes over
AIM_ABOVE = 0.02  # aim a little slow: channels cannot be put back, and timing noise is a few percent


@dataclass
class LatencyRequest:
    reduction: float | None = None  # --latency-reduction: fraction of the original's measured latency to remove
    target_ms: float | None = None  # --target-latency-ms
    batch: int = 1

    def wanted_ms(self, original_ms: float) -> float:
        if self.target_ms is not None:
            if self.target_ms >= original_ms:
                raise ConfigError(f"--target-latency-ms {self.target_ms:g} is not below the original model's "
                                  f"measured {original_ms:.2f} ms: ask for less, or use --latency-reduction")
            return self.target_ms
        return (1.0 - self.reduction) * original_ms


@dataclass
class LatencyLanding:
    requested_ms: float
    original_ms: float
    rounds: list = field(default_factory=list)  # per round: estimate (LUT ms), measured ms, speed-up

    @property
    def measured_ms(self) -> float:
        kept = [r for r in self.rounds if not r["undone"]]
        return kept[-1]["measured_ms"] if kept else self.original_ms

    @property
    def error(self) -> float:
        return self.measured_ms / self.requested_ms - 1.0

    def to_dict(self) -> dict:
        return {"requested_ms": self.requested_ms, "original_ms": self.original_ms,
                "measured_ms": self.measured_ms, "error": self.error,
                "landed": abs(self.error) <= LANDING_TOLERANCE, "tolerance": LANDING_TOLERANCE,
                "rounds": self.rounds}


def prune_to_latency(model, original, request: LatencyRequest, *, cost, prune_round, measure,
                     max_rounds: int = 8) -> LatencyLanding:
    """Remove channels from ``model`` until its measured latency lands near the request.

    ``prune_round(reduction)`` removes that fraction of ``cost`` (the LUT estimate) from the current model;
    ``measure(original, model)`` returns measure_pair's dict; ``original`` is only passed through to it. A round that lands faster than the band is undone
    (channels cannot be put back otherwise) and retried smaller: the request is a budget, not a minimum.
    """
    first = measure(original, model)
    landing = LatencyLanding(request.wanted_ms(first["original_ms"]), first["original_ms"])
    aim = landing.requested_ms * (1 + AIM_ABOVE)
    now = (cost(model), first["original_ms"] / first["speedup"])  # the current model: (LUT estimate, measured)
    seen = [now]  # every (estimate, measured) pair, undone rounds too: they bracket the request
    shrink = 1.0  # halved after each undone round
    for _ in range(max_rounds):
        reduction = shrink * _next_reduction(now, seen, aim)
        if reduction <= 0.002:
            break
        snapshot = copy.deepcopy(model)
        prune_round(min(reduction, 0.98))
        result = measure(original, model)
        measured = landing.original_ms / result["speedup"]
        estimate = cost(model)
        seen.append((estimate, measured))
        overshot = measured < landing.requested_ms * (1 - LANDING_TOLERANCE)
        landing.rounds.append({"target_reduction": reduction, "estimate_ms": estimate, "measured_ms": measured,
                               "speedup": result["speedup"], "speedup_p25": result["speedup_p25"],
                               "speedup_p75": result["speedup_p75"], "undone": overshot})
        if overshot:
            model.__dict__.update(snapshot.__dict__)  # same object, so callers' references stay valid
            shrink *= 0.5
            continue
        now = (estimate, measured)
        if measured <= landing.requested_ms * (1 + LANDING_TOLERANCE):
            break
    return landing


def _next_reduction(now: tuple, seen: list, aim: float) -> float:
    """Fraction of the current estimate to remove next. Far from the request, half-way (geometrically): the
    LUT also counts each layer's fixed per-run cost, so a proportional step overshoots; near it, a line through
    the current model and the measured pair closest to it in estimate."""
    estimate_now, measured_now = now
    others = [p for p in seen if abs(p[0] - estimate_now) > 1e-9 * estimate_now]
    far = measured_now > aim * (1 + NEAR)
    wanted = estimate_now * (aim / measured_now) ** (0.5 if far else 1.0)
    if others and not far:
        e, m = min(others, key=lambda p: abs(p[0] - estimate_now))
        slope = (m - measured_now) / (e - estimate_now)
        if slope > 0:
            wanted = estimate_now + (aim - measured_now) / slope
    return 1.0 - wanted / estimate_now
