"""The performance weighted (PW) loss of Meyer & Wong (2022), and plain cross-entropy.

For each sample, with s = the frozen original model's probability of the true label:
    weight  w = w_min + (1 - w_min) * (1 - s) ** gamma
    target  = original model's soft output where it classified the sample correctly, else the true label
    loss    = mean(w * cross_entropy(pruned_logits, target))
A single-logit model is binary (sigmoid); otherwise softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import PWSettings


def is_binary_logit(logits: torch.Tensor) -> bool:
    return logits.ndim == 1 or logits.shape[-1] == 1


def pw_targets_and_weights(original_logits: torch.Tensor, labels: torch.Tensor, *, gamma: float,
                           min_weight: float, label_correction: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets and per-sample weights from the frozen original model's logits.

    Binary (one logit): target is the probability of class 1, shape (N,). Multi-class: a distribution (N, C).
    """
    original_logits = original_logits.detach().float()
    labels = labels.long()
    if is_binary_logit(original_logits):
        p1 = torch.sigmoid(original_logits.reshape(-1))
        s = torch.where(labels == 1, p1, 1.0 - p1)
        correct = (p1 > 0.5).long() == labels
        hard = labels.float()
        soft = p1
    else:
        probs = torch.softmax(original_logits, dim=-1)
        s = probs.gather(1, labels[:, None]).squeeze(1)
        correct = probs.argmax(dim=-1) == labels
        hard = F.one_hot(labels, probs.shape[-1]).float()
        soft = probs
        correct = correct[:, None]
    targets = torch.where(correct, soft, hard) if label_correction else soft
    weights = min_weight + (1.0 - min_weight) * (1.0 - s).clamp_min(0.0) ** gamma
    return targets, weights


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against soft targets (binary: BCE with logits)."""
    if is_binary_logit(logits):
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), targets.reshape(-1).float(),
                                                  reduction="none")
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def hard_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample plain cross-entropy on the true labels (binary: BCE with logits)."""
    if is_binary_logit(logits):
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), labels.float(), reduction="none")
    return F.cross_entropy(logits, labels.long(), reduction="none")


def group_balance(weights: torch.Tensor, groups: torch.Tensor, group_totals: torch.Tensor,
                  strength: float = 1.0) -> torch.Tensor:
    """Extension (not the paper's method): rescale weights so every group carries equal total weight.

    ``group_totals`` are each group's summed weight over the whole training set, so the batch keeps the
    dataset-level balance instead of a noisy per-batch one. ``strength`` in (0, 1] moves part of the way:
    each group's factor is the full one raised to ``strength`` (1: equal totals, 0.5: the square root), and
    the factors are rescaled so the dataset's total weight stays what it was.
    """
    present = group_totals > 0
    target_total = group_totals[present].sum() / present.sum()
    full = target_total / group_totals.clamp_min(1e-12)
    scale = torch.where(present, full ** strength, torch.zeros_like(group_totals))
    scale = scale * group_totals[present].sum() / (group_totals * scale).sum()
    return weights * scale.to(weights.device)[groups]


class LossFn:
    """Callable ``loss(logits, labels, original_logits, groups) -> scalar``; CE ignores the original logits."""

    def __init__(self, kind: str, pw: PWSettings | None = None, group_totals: torch.Tensor | None = None,
                 group_balance_strength: float = 1.0):
        self.kind = kind
        self.pw = pw or PWSettings()
        self.group_totals = group_totals
        self.group_balance_strength = group_balance_strength

    @property
    def needs_original(self) -> bool:
        return self.kind == "pw"

    def __call__(self, logits, labels, original_logits=None, groups=None) -> torch.Tensor:
        if self.kind == "ce":
            return hard_cross_entropy(logits, labels).mean()
        targets, weights = pw_targets_and_weights(original_logits, labels, gamma=self.pw.gamma,
                                                  min_weight=self.pw.min_weight,
                                                  label_correction=self.pw.label_correction)
        if self.group_totals is not None and groups is not None:
            weights = group_balance(weights, groups, self.group_totals, self.group_balance_strength)
        return (weights * soft_cross_entropy(logits, targets.to(logits.dtype))).mean()
