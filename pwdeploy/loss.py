"""The performance weighted (PW) loss of Meyer & Wong (2022), and plain cross-entropy.

For each sample, with s = the frozen original model's probability of the true label:
    weight  w = w_min + (1 - w_min) * (1 - s) ** gamma
    target  = original model's soft output where it classified the sample correctly, else the true label
    loss    = mean(w * cross_entropy(pruned_logits, target))
A single-logit model is binary (sigmoid); otherwise softmax.

Losses are registered classes (``@register_loss``) that give per-sample loss terms and weights; ``LossFn``
adds the group balance (true groups or pseudo-groups) and takes the weighted mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import GDROSettings, KDSettings, PWSettings
from .registry import LOSSES, register_loss


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


def kd_divergence(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample KL(teacher || student) at ``temperature``, times T² (Hinton et al. 2015); binary: Bernoulli KL."""
    t = float(temperature)
    teacher_logits = teacher_logits.detach().to(logits.dtype)
    if is_binary_logit(logits):
        s, p_logit = logits.reshape(-1) / t, teacher_logits.reshape(-1) / t
        p = torch.sigmoid(p_logit)
        # BCE(student, p) - H(p) = KL(p || q)
        entropy = F.binary_cross_entropy_with_logits(p_logit, p, reduction="none")
        kl = F.binary_cross_entropy_with_logits(s, p, reduction="none") - entropy
    else:
        log_p = F.log_softmax(teacher_logits / t, dim=-1)
        kl = (log_p.exp() * (log_p - F.log_softmax(logits / t, dim=-1))).sum(dim=-1)
    return kl * t * t


def pseudo_groups(original_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """JTT-style groups without protected labels: 2·label + (1 if the original model was right else 0)."""
    original_logits = original_logits.detach()
    if is_binary_logit(original_logits):
        predicted = (original_logits.reshape(-1) > 0).long()
    else:
        predicted = original_logits.argmax(dim=-1)
    labels = labels.long().to(predicted.device)
    return 2 * labels + (predicted == labels).long()


PSEUDO_DESCRIPTIONS = {"error-set": "pseudo: label x original right/wrong",
                       "clusters": "pseudo: clusters of the original's features per class"}


def pseudo_group_names(num_classes: int) -> list[str]:
    """Names of the pseudo-groups, in their index order (a one-logit model has two classes)."""
    return [f"label {c} {'right' if r else 'wrong'}" for c in range(max(2, num_classes)) for r in (0, 1)]


class Loss:
    """Base of a registered loss: per-sample terms and weights (None = 1) for one batch."""

    name = "loss"
    needs_original = False  # needs the frozen original model's logits
    needs_groups = False  # takes the batch's groups itself (``configure`` + ``reduce``: group DRO)

    def __init__(self, pw: PWSettings | None = None, kd: KDSettings | None = None):
        self.pw = pw or PWSettings()
        self.kd = kd or KDSettings()

    def settings(self) -> dict:
        return {}

    def terms(self, logits, labels, original_logits) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def sample_weights(self, original_logits, labels) -> torch.Tensor | None:
        """Per-sample weights from the original model alone (for dataset-level group totals)."""
        return None


@register_loss("ce")
class CrossEntropyLoss(Loss):
    """Plain cross-entropy on the true labels (the baseline every result is compared with)."""

    def terms(self, logits, labels, original_logits=None):
        return hard_cross_entropy(logits, labels), None


@register_loss("pw")
class PerformanceWeightedLoss(Loss):
    """Performance weighted loss (Meyer & Wong 2022): weighted CE against the original's corrected outputs."""

    needs_original = True

    def settings(self) -> dict:
        return {"gamma": self.pw.gamma, "min_weight": self.pw.min_weight, "label_correction": self.pw.label_correction}

    def terms(self, logits, labels, original_logits):
        targets, weights = self._targets_weights(original_logits, labels)
        return soft_cross_entropy(logits, targets.to(logits.dtype)), weights

    def sample_weights(self, original_logits, labels):
        return self._targets_weights(original_logits, labels)[1]

    def _targets_weights(self, original_logits, labels):
        return pw_targets_and_weights(original_logits, labels, gamma=self.pw.gamma, min_weight=self.pw.min_weight,
                                      label_correction=self.pw.label_correction)


@register_loss("kd")
class DistillationLoss(Loss):
    """Distillation from the frozen original (label-free): alpha·T²·KL + (1-alpha)·CE, optionally PW-weighted."""

    needs_original = True

    def settings(self) -> dict:
        out = {"temperature": self.kd.temperature, "alpha": self.kd.alpha, "pw_weights": self.kd.pw_weights}
        if self.kd.pw_weights:
            out["pw"] = {"gamma": self.pw.gamma, "min_weight": self.pw.min_weight}
        return out

    def terms(self, logits, labels, original_logits):
        a = self.kd.alpha
        terms = a * kd_divergence(logits, original_logits, self.kd.temperature) \
            + (1.0 - a) * hard_cross_entropy(logits, labels)
        return terms, self.sample_weights(original_logits, labels)

    def sample_weights(self, original_logits, labels):
        if not self.kd.pw_weights:
            return None
        return pw_targets_and_weights(original_logits, labels, gamma=self.pw.gamma, min_weight=self.pw.min_weight)[1]


@register_loss("gdro")
class GroupDROLoss(Loss):
    """Group DRO (Sagawa et al. 2020, online): exponentiated weights q over groups (real, or --pseudo-groups),
    loss = sum_g q_g * mean per-sample loss of group g in the batch; needs groups, not the original (base ce).
    Form ``constraint`` (Balancing Act, Hashemizadeh et al. 2024): multipliers on each group's accuracy gap to the
    original instead (``ConstraintMultipliers``); needs the original's logits."""

    needs_groups = True

    def __init__(self, pw: PWSettings | None = None, kd: KDSettings | None = None):
        super().__init__(pw=pw, kd=kd)
        self.gdro = GDROSettings()
        self.counts = None  # training samples per group (the adjustment's n_g)
        self.q = None
        self.multipliers = None  # form constraint

    def configure(self, settings: GDROSettings, counts: torch.Tensor) -> None:
        """Settings and the training split's samples per group; q starts uniform over the groups present."""
        self.gdro, self.counts = settings, counts.double()
        present = self.counts > 0
        self.q = present.double() / present.sum().clamp_min(1)
        if settings.form == "constraint":
            self.multipliers = ConstraintMultipliers(len(counts), settings.step_size, settings.tolerance)

    def settings(self) -> dict:
        out = {"step_size": self.gdro.step_size, "adjustment": self.gdro.adjustment, "base": self.gdro.base,
               "group_weights": None if self.q is None else [round(float(v), 6) for v in self.q]}
        if self.multipliers is not None:
            out = {"form": "constraint", "step_size": self.gdro.step_size, "tolerance": self.gdro.tolerance,
                   "base": self.gdro.base, "multipliers": [round(float(v), 6) for v in self.multipliers.values]}
        return out

    def terms(self, logits, labels, original_logits):
        if self.gdro.base == "kd":
            return DistillationLoss(kd=self.kd).terms(logits, labels, original_logits)[0], None
        return hard_cross_entropy(logits, labels), None

    def reduce(self, terms: torch.Tensor, weights, groups: torch.Tensor, correct=None) -> torch.Tensor:
        """One online step: per-group mean losses, q <- q * exp(step * (loss_g + C / sqrt(n_g))), normalised,
        and the q-weighted loss (the adjustment is a constant of the loss, so only the weights see it).
        ``correct``: (pruned right, original right) per sample, for the constraint form."""
        if weights is not None:
            terms = terms * weights
        k = len(self.q)
        groups = groups.long().to(terms.device)
        group_loss = _group_means(terms, groups, k)
        if self.multipliers is not None:
            self.multipliers.step(groups, *correct)
            lam = self.multipliers.values.to(terms.device, terms.dtype)
            return terms.mean() + (group_loss * lam).sum()
        present = self.counts > 0
        adjust = torch.where(present, self.gdro.adjustment / self.counts.clamp_min(1).sqrt(), torch.zeros_like(self.q))
        q = self.q * torch.exp(self.gdro.step_size * (group_loss.detach().double().cpu() + adjust))
        q = torch.where(present, q, torch.zeros_like(q))
        self.q = q / q.sum()
        return (group_loss * self.q.to(terms.device, terms.dtype)).sum()


def _group_means(values: torch.Tensor, groups: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of ``values`` per group (0 for a group absent from the batch)."""
    sums = torch.zeros(k, dtype=values.dtype, device=values.device).index_add(0, groups, values)
    seen = torch.bincount(groups, minlength=k).to(values.dtype)
    return sums / seen.clamp_min(1)


class ConstraintMultipliers:
    """Balancing Act's constraints (Hashemizadeh et al. 2024): for each group g, psi_g - psi <= tolerance, where
    psi_g is g's accuracy gap to the original (original's accuracy minus the pruned model's) and psi the overall
    gap; one multiplier per group, raised by projected dual ascent on the batch's gaps (accuracies in [0, 1],
    tolerance in points) and never below 0. Groups absent from a batch keep their multiplier."""

    def __init__(self, groups: int, step_size: float, tolerance: float):
        self.values = torch.zeros(groups, dtype=torch.float64)
        self.step_size, self.tolerance = step_size, tolerance / 100.0

    def step(self, groups: torch.Tensor, pruned_right: torch.Tensor, original_right: torch.Tensor) -> None:
        gaps = (original_right.double() - pruned_right.double()).cpu()
        groups = groups.cpu()
        k = len(self.values)
        seen = torch.bincount(groups, minlength=k) > 0
        violation = _group_means(gaps, groups, k) - gaps.mean() - self.tolerance
        raised = (self.values + self.step_size * violation).clamp_min(0.0)
        self.values = torch.where(seen, raised, self.values)


def predicted_class(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.detach()
    return (logits.reshape(-1) > 0).long() if is_binary_logit(logits) else logits.argmax(dim=-1)


def disagreement_weights(logits: torch.Tensor, original_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """1 + weight where the model being trained predicts another class than the original, else 1 (label-free:
    the samples compression is hurting, after Hooker et al.'s compression-identified exemplars)."""
    differs = predicted_class(logits) != predicted_class(original_logits).to(logits.device)
    return 1.0 + weight * differs.to(logits.dtype)


class LossFn:
    """Callable ``loss(logits, labels, original_logits, groups) -> scalar``: a registered loss, its weights
    optionally re-balanced per group (``group_totals``) over the dataset's groups or, with
    ``pseudo_groups="error-set"``, over (label × original right/wrong) groups."""

    def __init__(self, kind: str, pw: PWSettings | None = None, group_totals: torch.Tensor | None = None,
                 group_balance_strength: float = 1.0, *, kd: KDSettings | None = None, pseudo_groups: str = "none",
                 gdro: GDROSettings | None = None, group_counts: torch.Tensor | None = None,
                 disagreement_weight: float = 0.0):
        self.kind = kind
        self.disagreement_weight = disagreement_weight
        self.impl = LOSSES.get(kind)(pw=pw, kd=kd)
        if self.impl.needs_groups:
            self.impl.configure(gdro or GDROSettings(), group_counts)
        self.pw = self.impl.pw
        self.group_totals = group_totals
        self.group_balance_strength = group_balance_strength
        self.pseudo_groups = pseudo_groups

    def record(self) -> dict:
        """Name and settings, as report.json records them."""
        balance = None
        if self.group_totals is not None:
            balance = {"groups": PSEUDO_DESCRIPTIONS.get(self.pseudo_groups, "dataset groups"),
                       "strength": self.group_balance_strength}
        out = {"name": self.kind, "settings": self.impl.settings(), "group_balance": balance}
        if self.disagreement_weight:
            out["disagreement_weight"] = self.disagreement_weight
        return out

    def groups_of(self, labels, original_logits, groups):
        """error-set pseudo-groups come from the original's logits per batch; clusters are already the batch's
        groups (the training split is relabelled with them, pwdeploy.pseudo_groups)."""
        return pseudo_groups(original_logits, labels) if self.pseudo_groups == "error-set" else groups

    def __call__(self, logits, labels, original_logits=None, groups=None) -> torch.Tensor:
        terms, weights = self.impl.terms(logits, labels, original_logits)
        if self.disagreement_weight and original_logits is not None:
            extra = disagreement_weights(logits, original_logits, self.disagreement_weight)
            weights = extra if weights is None else weights * extra
        if self.impl.needs_groups:
            correct = None
            if getattr(self.impl, "multipliers", None) is not None:  # the constraint form: who is right
                truth = labels.long().to(logits.device)
                correct = (predicted_class(logits) == truth, predicted_class(original_logits).to(logits.device) == truth)
            return self.impl.reduce(terms, weights, self.groups_of(labels, original_logits, groups), correct)
        if self.group_totals is not None and groups is not None:
            if weights is None:
                weights = torch.ones_like(terms)
            weights = group_balance(weights, self.groups_of(labels, original_logits, groups), self.group_totals,
                                    self.group_balance_strength)
        return terms.mean() if weights is None else (weights * terms).mean()
