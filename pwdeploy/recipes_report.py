"""The ``--recipes`` comparison as the run's report shows it: the report.md section and recipes.png.

Rendering only (numpy, matplotlib): it sits with report.py below the training code, while the choice itself is
``pwdeploy.selection.choose_recipe``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a Figure of its own, no pyplot: no global backend or figure registry

from .fsutil import atomic_path
from .metrics import fmt_points


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
