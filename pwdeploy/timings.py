"""Wall-clock time per phase of a compress run (report.json ``timings_s``) and its one-line summary.

Phases: ``prune`` (importance + channel removal), ``retrain``, ``evaluate`` (the original's and the pruned
model's metrics on the test and validation splits), ``export`` (checkpoints, ONNX, the target's artifacts and
the verification set), ``latency`` (timing the exported models on the deploy runtime), ``verify`` (ONNX parity
with PyTorch), ``total`` (the whole command).
"""

from __future__ import annotations

import contextlib
import time

PHASES = ("prune", "retrain", "evaluate", "export", "latency", "verify")


@contextlib.contextmanager
def timed(timings: dict, phase: str):
    """Add the seconds spent inside the block to ``timings[phase]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - t0


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"


def summary_line(timings: dict, budget: dict | None = None) -> str:
    """e.g. ``time: prune 12s (budget 12 epochs: 20 steps x (4 + 10) batches), retrain 30s, ... total 58s``."""
    parts = []
    for phase in PHASES:
        if phase in timings:
            text = f"{phase} {_fmt(timings[phase])}"
            if phase == "prune" and budget:
                text += f" ({describe_budget(budget)})"
            parts.append(text)
    if "total" in timings:
        parts.append(f"total {_fmt(timings['total'])}")
    return "time: " + ", ".join(parts)


def describe_budget(budget: dict) -> str:
    """A report.json prune_budget record in a few words."""
    what = "fixed schedule" if not budget["budget_epochs"] else f"budget {budget['budget_epochs']:g} epochs"
    if budget["kind"] == "iterative":
        what += (f": {budget['steps']} steps x ({budget['importance_batches']} + {budget['adaptation_batches']}) "
                 f"batches of {budget['batch_size']}")
    elif budget["kind"] == "gates":
        what += f": {budget['gate_steps']} gate steps of {budget['batch_size']}"
    else:
        return what + ": reads no training data"
    what += f", {budget['planned_epochs']:g} epochs' worth"
    return what + (", at the floors" if budget["floored"] else "")
