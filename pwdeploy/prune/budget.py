"""How much data the pruning loop reads, derived from the dataset size: the loop's cost follows the data.

Unit: a *sample pass*, one training sample through a forward and a backward pass; a retraining epoch is N of
them for N training samples. ``--prune-budget E`` (``prune.budget_epochs``) lets pruning spend at most about
E retraining epochs' worth of sample passes (E x N); 0 keeps the configured fixed schedule whatever the data.

The configured values (``taylor_batches``, ``steps_between``, ``prune_steps``, ``autobot_steps``) are caps: a
large dataset gets them unchanged (CelebA's 162k images: the paper's schedule is under half an epoch). A small
one gets, in this order, (1) no more importance batches per estimate than one pass over the data (more re-read
the same samples), (2) importance and adaptation batches scaled down together, (3) fewer pruning steps, down
to the floors below. Floors win over the budget (recorded as ``floored``): a 80-image dataset still gets
``MIN_STEPS`` pruning steps of one batch each.

Taylor and FairGRAPE: ``steps`` pruning steps, each estimating importance on ``importance_batches`` batches and
followed (except the last) by ``adaptation_batches`` optimizer steps. FairGRAPE's importance batch costs one
forward and one backward pass per group present, ``importance_cost`` sample passes per sample. AutoBot:
``gate_steps`` gate-training steps of one batch each.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator

from ..config import PruneSettings, RunConfig
from ..registry import IMPORTANCES

# PruneSettings.prune_budget's default, chosen by measurement (docs/guides/speed.md,
# benchmarks/results/fairness_budget.md).
DEFAULT_BUDGET_EPOCHS = PruneSettings.prune_budget
MAX_BUDGET_EPOCHS = 1000.0
MIN_STEPS = 5  # pruning steps: fewer would remove a fifth of the MACs or more per step
MIN_GATE_STEPS = 25  # AutoBot gate steps: fewer barely move the gates from their start


@dataclass(frozen=True)
class PruneBudget:
    """The pruning loop's schedule for one run and what it costs, in sample passes (report.json prune_budget)."""

    budget_epochs: float  # as asked; 0: the fixed configured schedule
    source: str  # where the budget came from (--prune-budget, the default, the config)
    dataset_size: int  # training samples (all processes together)
    batch_size: int  # samples per batch of the pruning stream
    kind: str  # "iterative" (Taylor, FairGRAPE), "gates" (AutoBot) or "none" (data-free, plug-ins)
    steps: int  # pruning steps planned (iterative)
    importance_batches: int  # per step (iterative)
    adaptation_batches: int  # optimizer steps after each step but the last (iterative)
    gate_steps: int  # AutoBot
    importance_cost: float  # sample passes per importance sample (FairGRAPE: per-group backward passes)
    planned_passes: int  # what the schedule costs
    budget_passes: int | None  # budget_epochs x dataset_size (None: no budget)
    floored: bool  # the floors made the schedule cost more than the budget
    configured: dict  # the fixed schedule the caps came from
    drawn_samples: int | None = None  # samples the pruning actually read (steps near the target may add some)

    @property
    def planned_epochs(self) -> float:
        return self.planned_passes / max(1, self.dataset_size)

    def apply(self, settings):
        """``settings`` (PruneSettings) with this schedule in place of the configured one."""
        if self.kind == "iterative":
            return dataclasses.replace(settings, taylor_batches=self.importance_batches,
                                       steps_between=self.adaptation_batches, prune_steps=self.steps)
        if self.kind == "gates":
            return dataclasses.replace(settings, autobot_steps=self.gate_steps)
        return settings

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["planned_epochs"] = round(self.planned_epochs, 3)
        return out


def stream_batch(dataset_size: int, batch_size: int) -> tuple[int, int]:
    """(samples per batch, batches per epoch) of the training stream (drop_last when the data holds a batch)."""
    n, b = max(1, int(dataset_size)), max(1, int(batch_size))
    if n <= b:
        return n, 1
    return b, n // b


def iterative_cost(steps: int, importance: int, adaptation: int, importance_cost: float = 1.0) -> float:
    """Batches an iterative schedule reads, importance batches weighted by their cost."""
    return steps * importance * importance_cost + max(0, steps - 1) * adaptation


def plan_iterative(budget_batches: float, steps: int, importance: int, adaptation: int, epoch_batches: int,
                   importance_cost: float = 1.0) -> tuple[int, int, int]:
    """(steps, importance, adaptation) within ``budget_batches``; the configured values are caps."""
    importance = max(1, min(importance, epoch_batches))
    if iterative_cost(steps, importance, adaptation, importance_cost) <= budget_batches:
        return steps, importance, adaptation
    scale = budget_batches / iterative_cost(steps, importance, adaptation, importance_cost)
    importance = max(1, math.floor(importance * scale))
    room = budget_batches - steps * importance * importance_cost
    if room >= 0:
        adaptation = min(adaptation, math.floor(room / max(1, steps - 1)))
        return steps, importance, adaptation
    steps = max(min(MIN_STEPS, steps), min(steps, math.floor(budget_batches / importance_cost)))
    return steps, 1, 0


def plan_budget(settings, *, kind: str, dataset_size: int, batch_size: int, importance_cost: float = 1.0,
                source: str = "prune.budget_epochs") -> PruneBudget:
    """The schedule for ``settings`` (PruneSettings) on ``dataset_size`` samples read ``batch_size`` at a time."""
    epochs = float(settings.prune_budget or 0.0)
    b, epoch_batches = stream_batch(dataset_size, batch_size)
    configured = {"steps": settings.prune_steps, "importance_batches": settings.taylor_batches,
                  "adaptation_batches": settings.steps_between, "gate_steps": settings.autobot_steps}
    steps, imp, adapt = settings.prune_steps, settings.taylor_batches, settings.steps_between
    gates = settings.autobot_steps
    budget_passes = None
    if epochs > 0:
        budget_passes = int(epochs * dataset_size)
        batches = budget_passes / b
        steps, imp, adapt = plan_iterative(batches, steps, imp, adapt, epoch_batches, importance_cost)
        gates = min(gates, max(MIN_GATE_STEPS, math.floor(batches)))
    if kind == "iterative":
        planned = iterative_cost(steps, imp, adapt, importance_cost) * b
    elif kind == "gates":
        planned = gates * b
    else:
        planned = 0
    planned = int(math.ceil(planned))
    return PruneBudget(epochs, source, int(dataset_size), b, kind, steps, imp, adapt, gates, importance_cost,
                       planned, budget_passes, budget_passes is not None and planned > budget_passes, configured)


def plan_for(config: RunConfig, dataset_size: int, num_groups: int) -> PruneBudget:
    """The schedule of ``config``'s criterion on ``dataset_size`` training samples (batches of the retraining
    batch size, as the pruning stream reads them)."""
    criterion = IMPORTANCES.get(config.prune.method)
    given = config.prune.prune_budget != DEFAULT_BUDGET_EPOCHS
    source = "--prune-budget (or prune.prune_budget in the config)" if given else "default"
    return plan_budget(config.prune, kind=criterion.budget_kind, dataset_size=dataset_size,
                       batch_size=config.retrain.batch_size, importance_cost=criterion.importance_cost(num_groups),
                       source=source)


class CountingStream:
    """Wraps the (x, y, group, original) batch stream and counts the samples read from it."""

    def __init__(self, stream: Iterator):
        self.stream = stream
        self.samples = 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.stream)
        self.samples += int(len(batch[0]))
        return batch

    def close(self) -> None:
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()
