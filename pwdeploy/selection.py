"""Selection on validation, never on test: ``--select worst-group`` and the ``--recipes`` choice.

Both need group labels in the validation split; without them the flags are a one-line error (exit 2).
"""

from __future__ import annotations

import numpy as np

from .data import DataSpec, GroupedDataset, create_dataset
from .errors import DataError
from .metrics import worst_group
# re-exported: report.py imports them from here (they belong to recipes_report, below the training code)
from .recipes_report import plot_recipes, recipes_markdown  # noqa: F401

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
