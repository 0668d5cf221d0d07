"""Per-group metrics, computed once from any runner's outputs (numpy only, like Fairlearn's MetricFrame).

A metrics dict M has the report schema: ``{"overall": {"accuracy": %, "n": int},
"groups": {name: {"accuracy": %, "n": int}}}``; binary tasks add TPR/FPR per group.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def predict(logits: np.ndarray) -> np.ndarray:
    """Class predictions: a single logit is a binary model (positive when > 0), else argmax."""
    logits = np.asarray(logits)
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return (logits.reshape(-1) > 0).astype(np.int64)
    return logits.argmax(axis=-1).astype(np.int64)


def _rates(pred: np.ndarray, label: np.ndarray) -> dict:
    pos, neg = label == 1, label == 0
    return {
        "tpr": float(100.0 * (pred[pos] == 1).mean()) if pos.any() else None,
        "fpr": float(100.0 * (pred[neg] == 1).mean()) if neg.any() else None,
    }


def group_metrics(preds: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                  group_names: Sequence[str], *, binary: bool | None = None) -> dict:
    preds, labels, groups = (np.asarray(a).reshape(-1) for a in (preds, labels, groups))
    if binary is None:
        binary = bool(labels.max(initial=0) <= 1)
    correct = preds == labels

    def entry(mask: np.ndarray) -> dict:
        n = int(mask.sum())
        e = {"accuracy": float(100.0 * correct[mask].mean()) if n else None, "n": n}
        if binary and n:
            e.update(_rates(preds[mask], labels[mask]))
        return e

    result = {"overall": entry(np.ones_like(correct, dtype=bool)),
              "groups": {name: entry(groups == g) for g, name in enumerate(group_names)}}
    if binary:
        result["rate_gaps"] = _rate_gaps(result["groups"])
    return result


def _rate_gaps(groups: dict) -> dict:
    gaps = {}
    for key in ("tpr", "fpr"):
        vals = [g[key] for g in groups.values() if g.get(key) is not None]
        gaps[f"{key}_gap"] = float(max(vals) - min(vals)) if len(vals) > 1 else 0.0
    return gaps


def worst_group(metrics: dict) -> tuple[str, float]:
    """The group with the lowest accuracy (groups with no samples are ignored)."""
    scored = [(g["accuracy"], name) for name, g in metrics["groups"].items() if g["accuracy"] is not None]
    acc, name = min(scored)
    return name, acc


def accuracy_change(metrics: dict, reference: dict) -> dict:
    """Points gained (+) or lost (-) per group and overall against ``reference``."""
    def diff(a, b):
        return None if a is None or b is None else float(a - b)

    return {
        "overall": diff(metrics["overall"]["accuracy"], reference["overall"]["accuracy"]),
        "groups": {name: diff(g["accuracy"], reference["groups"].get(name, {}).get("accuracy"))
                   for name, g in metrics["groups"].items()},
    }


def worst_group_drop(metrics: dict, reference: dict) -> tuple[str, float]:
    """The group that lost the most points against ``reference`` and how many (positive = lost)."""
    change = accuracy_change(metrics, reference)["groups"]
    name = min((v, k) for k, v in change.items() if v is not None)[1]
    return name, -change[name]


def fmt_points(value, signed: bool = False) -> str:
    """Accuracy points for tables: two decimals, signed for changes, "-" when absent."""
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"
