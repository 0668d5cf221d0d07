"""The pruning loop every criterion shares: remove channels step by step until the MACs target, and Taylor's
gradient-accumulate / adapt cycle around it. Kept apart from ``pwdeploy.prune`` so the criteria build on it
without importing the package that imports them."""

from __future__ import annotations

import torch
import torch_pruning as tp

from .. import distributed
from .engine import ChannelRemover


def _remove_until(remover: ChannelRemover, score_fn, target: float, max_step: float, result, bar,
                  before_step=None, after_step=None) -> None:
    """Repeat pruning steps until the target is reached, appending each to ``result.steps`` (a PruneResult);
    hooks run before/after each step (Taylor)."""
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

    # About 20 pruning steps whatever the target, so the adaptation budget scales with the work.
    score_fn = scores if scores is not None else (lambda group, _name: importance(group))
    _remove_until(remover, score_fn, target, max(0.02, target / settings.prune_steps), result, bar,
                  before_step=scores.accumulate if scores is not None else accumulate_gradients, after_step=adapt)
    model.zero_grad(set_to_none=True)
