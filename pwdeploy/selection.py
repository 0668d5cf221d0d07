"""Selection on validation, never on test: ``--select worst-group`` and the ``--recipes`` choice.

Both need group labels in the validation split; without them the flags are a one-line error (exit 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a Figure of its own, no pyplot: no global backend or figure registry

from .data import DataSpec, GroupedDataset, create_dataset
from .errors import DataError
from .fsutil import atomic_path
from .metrics import fmt_points, worst_group

OVERALL_MARGIN = 1.0  # points: a recipe qualifies if its validation accuracy is this close to the best


def validation_set(spec: DataSpec, flag: str, pseudo: str = "none") -> GroupedDataset:
    """The validation split, checked to carry at least two groups with samples (with ``pseudo`` pseudo-groups,
    any non-empty split: the pseudo-groups stand in for missing group labels)."""
    try:
        val = create_dataset(spec, "val")
    except DataError as exc:
        raise DataError(f"{flag} needs a validation split with group labels: {exc}") from exc
    present = int((np.bincount(val.groups, minlength=len(val.group_names)) > 0).sum()) if len(val) else 0
    if pseudo != "none" and len(val):
        return val
    if present < 2:
        raise DataError(f"{flag} needs group labels in the validation split, but {val.name} has {len(val)} "
                        f"validation images in {present} group(s): add validation rows of at least two groups, "
                        f"add --pseudo-groups clusters (label-free) or drop {flag}")
    return val


def rank_key(metrics: dict) -> tuple[float, float]:
    """Best validation worst-group accuracy first, overall accuracy breaks ties."""
    return worst_group(metrics)[1], metrics["overall"]["accuracy"]


def summary(metrics: dict) -> dict:
    group, acc = worst_group(metrics)
    return {"worst_group": group, "worst_group_accuracy": acc, "overall_accuracy": metrics["overall"]["accuracy"]}


class WorstGroupCheckpoint:
    """``fit``'s epoch callback: keeps the weights with the best validation worst-group accuracy."""

    def __init__(self, val_set: GroupedDataset, evaluate):
        self.val_set, self.evaluate = val_set, evaluate  # evaluate(model, dataset, name) -> metrics
        self.epochs: list[dict] = []
        self.best_key = None
        self.best_state = None
        self.best_epoch = None

    def __call__(self, epoch: int, model) -> None:
        metrics = self.evaluate(model, self.val_set, f"validation, epoch {epoch + 1}")
        self.epochs.append({"epoch": epoch + 1, **summary(metrics)})
        key = rank_key(metrics)
        if self.best_key is None or key > self.best_key:
            self.best_key, self.best_epoch = key, epoch + 1
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def restore(self, model) -> dict:
        """Load the chosen weights into ``model``; returns the record for report.json."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        return {"rule": "best validation worst-group accuracy, ties by overall accuracy",
                "chosen_epoch": self.best_epoch, "epochs": self.epochs}


def choose_recipe(candidates: list[dict]) -> tuple[int, str]:
    """Index of the recipe to ship and why: best validation worst-group accuracy among the candidates whose
    overall validation accuracy is within ``OVERALL_MARGIN`` points of the best one's."""
    overall = [c["metrics_validation"]["overall"]["accuracy"] for c in candidates]
    best_overall = max(overall)
    eligible = [i for i, acc in enumerate(overall) if acc >= best_overall - OVERALL_MARGIN]
    chosen = max(eligible, key=lambda i: rank_key(candidates[i]["metrics_validation"]))
    group, acc = worst_group(candidates[chosen]["metrics_validation"])
    leader = candidates[overall.index(best_overall)]["recipe"]
    why = (f"{candidates[chosen]['recipe']}: best validation worst-group accuracy ({group} {acc:.2f}%) among the "
           f"{len(eligible)} of {len(candidates)} recipes within {OVERALL_MARGIN:g} point of the best validation "
           f"accuracy ({leader} {best_overall:.2f}%)")
    return chosen, why


def _acc(metrics: dict, group: str):
    entry = metrics["overall"] if group == "overall" else metrics["groups"].get(group, {})
    return entry.get("accuracy")


def recipes_markdown(selection: dict) -> list[str]:
    """report.md section: every candidate, validation and test per group, which was chosen and why."""
    groups = list(selection["candidates"][0]["metrics_validation"]["groups"]) + ["overall"]
    head = " | ".join(f"val {g}" for g in groups) + " | " + " | ".join(f"test {g}" for g in groups)
    lines = ["## Recipes compared on validation", "", f"Chosen: **{selection['why']}**.", "",
             f"| recipe | MACs removed % | {head} |", "|---|---:|" + "---:|" * (2 * len(groups))]
    for c in selection["candidates"]:
        cells = [fmt_points(_acc(c["metrics_validation"], g)) for g in groups]
        cells += [fmt_points(_acc(c["metrics_test"], g)) for g in groups]
        name = f"**{c['recipe']}** (shipped)" if c["recipe"] == selection["chosen"] else c["recipe"]
        lines.append(f"| {name} | {100 * c['flops_reduction']:.1f} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_recipes(selection: dict, path: Path) -> None:
    """Side by side: per-group validation (left) and test (right) accuracy of every candidate recipe."""
    candidates = selection["candidates"]
    groups = list(candidates[0]["metrics_validation"]["groups"]) + ["overall"]
    width = 0.8 / len(candidates)
    fig = Figure(figsize=(2.5 + 2.4 * len(groups), 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, split in zip(axes, ("validation", "test")):
        for i, c in enumerate(candidates):
            values = [_acc(c[f"metrics_{split}"], g) or 0.0 for g in groups]
            label = c["recipe"] + (" (shipped)" if c["recipe"] == selection["chosen"] else "")
            ax.bar(np.arange(len(groups)) + i * width, values, width, label=label,
                   edgecolor="black" if c["recipe"] == selection["chosen"] else None)
        ax.set_xticks(np.arange(len(groups)) + width * (len(candidates) - 1) / 2, groups)
        ax.set_title(f"{split} split")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(loc="lower right", fontsize=7)
    fig.suptitle("recipes at the same MACs target; chosen on validation", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
